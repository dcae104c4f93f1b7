#!/usr/bin/env python3
"""
Cache-hit requests per second with 1, 2 and N worker processes on one port.

    python benchmarks/workers.py [--workers 1,2,4] [--seconds 10]

Seeds a disk store, starts `twistd -n athens --workers N` for each N and
loads `.info` and `.mod` cache hits (wrk when installed, else Python).
Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.cache_hits import MODULE, machine, python_load, seed, wrk  # noqa: E402
from tests.daemon import start_daemon  # noqa: E402


def main() -> None:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default=",".join(str(n) for n in sorted({1, 2, cores})))
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=64)
    args = p.parse_args()
    load = wrk if shutil.which("wrk") else python_load
    counts = [int(n) for n in args.workers.split(",")]
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {machine()}")
    print(f"load:    {'wrk -t2' if load is wrk else 'python asyncio'} -c{args.connections} {args.seconds}s; "
          "load generator on the same machine")
    with tempfile.TemporaryDirectory(prefix="athens-bench-") as tmp:
        env = {"ATHENS_STORAGE_TYPE": "disk", "ATHENS_DISK_STORAGE_ROOT": str(Path(tmp) / "storage")}
        seed(env, 1)
        env.update(ATHENS_DOWNLOAD_MODE="none", ATHENS_NETWORK_MODE="offline", ATHENS_LOG_LEVEL="warn")
        for n in counts:
            daemon = start_daemon(Path(tmp) / f"w{n}", "--workers", str(n), env=env)
            try:
                base = f"{daemon.url}/{MODULE}/@v/v1.0.0"
                rps = [load(f"{base}.{ext}", args.seconds, args.connections) for ext in ("info", "mod")]
            finally:
                daemon.stop()
            print(f"{n} worker{'s' if n > 1 else ' '}: .info {rps[0]:9,.0f} req/s   .mod {rps[1]:9,.0f} req/s")


if __name__ == "__main__":
    main()
