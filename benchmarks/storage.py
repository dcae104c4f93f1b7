#!/usr/bin/env python3
"""
The storage backends side by side: disk, Redis, PostgreSQL and S3 (SeaweedFS).

    python benchmarks/storage.py [--storages disk,redis,postgres,s3] [--rounds 3] [--seconds 5] [--zip-mib 64]

Starts every backend's server on free loopback ports and one `twistd -n athens`
daemon per backend on a seeded store, then runs rounds that alternate between
the backends (so that a slow moment of the machine is shared out): `.info`
cache hits through the daemon (req/s; mostly its hit path), `.info` reads
from the store itself (16 at a time, in a separate process), one large `.zip` read through the
daemon (MB/s), and one save of a new version of that size through the storage
API in a separate process (MB/s, the save's own time).  Prints the median of the
rounds and each daemon's peak RSS.  Not part of the test run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.cache_hits import (  # noqa: E402
    BIG, MODULE, machine, python_load, seed, storage_env, wrk, zip_throughput,
)
from tests.daemon import peak_rss_mib, source_env, start_daemon  # noqa: E402


def timed_save(env: dict[str, str], version: str, size: int) -> float:
    """MB/s of one save of a ``size``-byte zip (timed inside the saving process)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.seed", "--report", f"{BIG},{version},{size}"],
                         cwd=REPO, env=source_env(env), check=True, capture_output=True, text=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("saved "))
    seconds = float(line.split()[-1])
    return size / seconds / 1e6


def storage_reads(env: dict[str, str], seconds: int, concurrency: int) -> float:
    """``.info`` reads/s from the store itself, in a process of its own (no hit path in front)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.storage_reads", MODULE, "v1.0.0", str(seconds),
                          str(concurrency)], cwd=REPO, env=source_env(env), check=True, capture_output=True,
                         text=True).stdout
    return float(next(line for line in out.splitlines() if line.startswith("reads ")).split()[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storages", default="disk,redis,postgres,s3")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5, help="of .info load per backend and round")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--zip-mib", type=int, default=64)
    p.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk exists")
    args = p.parse_args()

    use_wrk = shutil.which("wrk") and not args.python_load
    load = wrk if use_wrk else python_load
    kinds = [k.strip() for k in args.storages.split(",") if k.strip()]
    size = args.zip_mib << 20
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {machine()}")
    print("daemon:  twistd -n athens, one process per backend; servers, daemons and load on the same machine")
    print(f"load:    {'wrk -t2' if use_wrk else 'python asyncio'} -c{args.connections} {args.seconds}s of .info, "
          f"as long of store reads (16 at a time); "
          f".zip read and save: {args.zip_mib} MiB, one client; {args.rounds} alternating rounds, medians")

    servers: list = []
    daemons: dict = {}
    results: dict[str, dict[str, list[float]]] = {k: {"info": [], "read": [], "zip": [], "save": []} for k in kinds}
    with tempfile.TemporaryDirectory(prefix="athens-bench-") as tmp:
        try:
            envs = {kind: storage_env(kind, Path(tmp) / kind, servers) for kind in kinds}
            for kind in kinds:
                seed(envs[kind], args.zip_mib)
                daemons[kind] = start_daemon(Path(tmp) / kind / "daemon", "--log-level", "warn",
                                             env={**envs[kind], "ATHENS_DOWNLOAD_MODE": "none",
                                                  "ATHENS_NETWORK_MODE": "offline"})
            for round_ in range(args.rounds):
                for kind in kinds:
                    url = daemons[kind].url
                    results[kind]["info"].append(load(f"{url}/{MODULE}/@v/v1.0.0.info", args.seconds,
                                                      args.connections))
                    results[kind]["read"].append(storage_reads(envs[kind], args.seconds, 16))
                    results[kind]["zip"].append(zip_throughput(f"{url}/{BIG}/@v/v1.0.0.zip", 1)[0])
                    results[kind]["save"].append(timed_save(envs[kind], f"v2.0.{round_}", size))
            rss = {kind: peak_rss_mib(daemons[kind].process.pid) for kind in kinds}
        finally:
            for daemon in daemons.values():
                daemon.stop()
            for server in servers:
                server.stop()

    print(f"{'':14}" + "".join(f"{kind:>15}" for kind in kinds))
    rows = (("info", ".info hit", "req/s"), ("read", ".info read", "/s"), ("zip", ".zip read", "MB/s"),
            ("save", "save", "MB/s"))
    for key, label, unit in rows:
        print(f"{label:14}" + "".join(f"{statistics.median(results[k][key]):>9,.0f} {unit:<5}" for k in kinds))
    print(f"{'peak RSS':14}" + "".join(f"{rss[k]:>9.0f} MiB  " for k in kinds))


if __name__ == "__main__":
    main()
