#!/usr/bin/env python3
"""
A cold `.zip` through the proxy against the same zip straight from its upstream.

    python benchmarks/stream_through.py [--zip-mib 200]

Serves a GOPROXY directory with one large module zip from a local HTTP
server (the upstream), starts the daemon with that upstream and an empty
disk store, and prints time to first byte and total time for: the upstream
directly, the proxy cold (stream-through while it fills its cache), and the
proxy warm (from its store), with the daemon's peak RSS.  Not part of the test run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.cache_hits import machine  # noqa: E402
from tests.daemon import free_port, peak_rss_mib, start_daemon  # noqa: E402
from tests.e2e.test_large_stream import MODULE, build_goproxy_dir  # noqa: E402


def fetch(url: str) -> tuple[float, float, int]:
    start = time.monotonic()
    total = 0
    with urllib.request.urlopen(url) as r:
        first = r.read(1 << 16)
        ttfb = time.monotonic() - start
        total += len(first)
        while chunk := r.read(1 << 20):
            total += len(chunk)
    return ttfb, time.monotonic() - start, total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zip-mib", type=int, default=200)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="athens-bench-") as tmp:
        root = Path(tmp)
        build_goproxy_dir(root / "goproxy", args.zip_mib)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                   "--directory", str(root / "goproxy")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        upstream = f"http://127.0.0.1:{port}"
        time.sleep(1)
        daemon = start_daemon(root / "proxy", "--storage", "disk", "--storage-root", str(root / "storage"), env={
            "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY={upstream}", "ATHENS_GONOSUM_PATTERNS": MODULE,
            "ATHENS_LOG_LEVEL": "warn"})
        try:
            path = f"/{MODULE}/@v/v1.0.0.zip"
            rows = [("upstream directly", fetch(upstream + path)), ("proxy, cold", fetch(daemon.url + path))]
            urllib.request.urlopen(f"{daemon.url}/{MODULE}/@v/v1.0.0.info").read()  # waits for the fill
            rows.append(("proxy, warm", fetch(daemon.url + path)))
            rss = peak_rss_mib(daemon.process.pid)
        finally:
            daemon.stop()
            server.terminate()
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {machine()}")
    print(f"zip: {args.zip_mib} MiB, upstream: python -m http.server on loopback, proxy on disk storage")
    for label, (ttfb, total, size) in rows:
        print(f"{label:18} first byte {ttfb * 1000:8.1f} ms   total {total:6.2f} s   {size / total / 1e6:7.0f} MB/s")
    print(f"daemon peak RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
