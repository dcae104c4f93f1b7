#!/usr/bin/env python3
"""
Filling the cache from the origin, against going direct.

    python benchmarks/cold_fill.py

Builds the test git origins (offline), then times `go mod download` of the
whole module set: directly from the origins, cold through the proxy (which
fetches with the go command), and warm through the proxy; and the latency
of `@v/list` uncached (runs `go list`) against cached.  Not part of the test run.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.cache_hits import machine  # noqa: E402
from tests.daemon import start_daemon  # noqa: E402
from tests.e2e.conftest import EXTRA, build_origins, fetcher_env, wanted  # noqa: E402
from tests.gotool import go_env, run  # noqa: E402


def timed_download(work: Path, proxy: str, origins, targets: list[str]) -> float:
    work.mkdir(parents=True)
    env = go_env(work, work / "modcache", proxy, origins)
    start = time.monotonic()
    run(["go", "mod", "download", "-json", *targets], work, env, timeout=600)
    return time.monotonic() - start


def list_latency(url: str) -> float:
    start = time.monotonic()
    with urllib.request.urlopen(url) as r:
        r.read()
    return time.monotonic() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="athens-bench-") as tmp:
        root = Path(tmp)
        origins, head = build_origins(root / "origins")
        targets = wanted(head) + EXTRA
        print(f"command: {' '.join(sys.argv)}")
        print(f"machine: {machine()}")
        print(f"module set: {len(targets)} versions of {len({t.split('@')[0] for t in targets})} modules "
              "from local git origins")
        direct = timed_download(root / "direct", "direct", origins, targets)
        daemon = start_daemon(root / "daemon", "--storage", "disk", "--storage-root", str(root / "storage"),
                              "--log-level", "warn", env=fetcher_env(origins))
        try:
            cold = timed_download(root / "cold", daemon.url, origins, targets)
            warm = timed_download(root / "warm", daemon.url, origins, targets)
            module = "github.com/athens-test/mono/sub"
            uncached = list_latency(f"{daemon.url}/{module}/@v/list")
            cached = statistics.median(list_latency(f"{daemon.url}/{module}/@v/list") for _ in range(50))
        finally:
            daemon.stop()
        print(f"go mod download, direct from the origins:   {direct:7.2f} s")
        print(f"go mod download, cold through the proxy:    {cold:7.2f} s")
        print(f"go mod download, warm through the proxy:    {warm:7.2f} s")
        print(f"@v/list uncached (go list at the origin):   {uncached * 1000:7.1f} ms")
        print(f"@v/list cached (median of 50):              {cached * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
