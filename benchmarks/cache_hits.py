#!/usr/bin/env python3
"""
Cache-hit throughput of a running daemon on disk storage.

    python benchmarks/cache_hits.py [--seconds 10] [--connections 32] [--zip-mib 100]

Starts `twistd -n athens` on a seeded disk store and prints requests per
second for `.info` and `.mod`, MB/s for a large `.zip`, and the daemon's
peak RSS.  Load comes from `wrk` when it is installed, else from a Python
generator in a separate process.  Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemon import start_daemon  # noqa: E402

MODULE = "example.com/bench/lib"
BIG = "example.com/bench/big"


def seed(root: Path, zip_mib: int) -> None:
    """Write versions straight into Athens' disk layout (what the daemon serves)."""
    for module, version, size in ((MODULE, "v1.0.0", 64 << 10), (BIG, "v1.0.0", zip_mib << 20)):
        vdir = root.joinpath(*module.split("/"), version)
        vdir.mkdir(parents=True)
        (vdir / "go.mod").write_text(f"module {module}\n\ngo 1.21\n")
        (vdir / f"{version}.info").write_text(json.dumps({"Version": version, "Time": "2024-01-02T03:04:05Z"}))
        block = os.urandom(1 << 20)
        with open(vdir / "source.zip", "wb") as f:
            for _ in range(size >> 20):
                f.write(block)
            f.write(block[: size & ((1 << 20) - 1)])


def machine() -> str:
    model = ""
    try:
        model = next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), ""
        )
    except OSError:
        pass
    return f"{platform.platform()}; {os.cpu_count()} CPUs {model}; Python {platform.python_version()}"


def wrk(url: str, seconds: int, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests:\n{out}")
    return float(m.group(1)) if m else 0.0


async def _py_worker(host: str, port: int, path: str, deadline: float) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    done = 0
    while time.monotonic() < deadline:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        await reader.readexactly(length)
        done += 1
    writer.close()
    return done


def _py_load(args: tuple[str, int, str, int, int]) -> int:
    host, port, path, seconds, connections = args
    deadline = time.monotonic() + seconds

    async def main() -> int:
        return sum(await asyncio.gather(*(_py_worker(host, port, path, deadline) for _ in range(connections))))

    return asyncio.run(main())


def python_load(url: str, seconds: int, connections: int) -> float:
    m = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    with multiprocessing.Pool(1) as pool:
        total = pool.apply(_py_load, ((host, port, path, seconds, connections),))
    return total / seconds


def zip_throughput(url: str, rounds: int) -> tuple[float, int]:
    m = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    total = 0
    start = time.monotonic()
    for _ in range(rounds):
        with socket.create_connection((host, port)) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            while chunk := s.recv(1 << 20):
                total += len(chunk)
    return total / (time.monotonic() - start) / 1e6, total


def peak_rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--zip-mib", type=int, default=100)
    p.add_argument("--zip-rounds", type=int, default=5)
    p.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk exists")
    args = p.parse_args()

    use_wrk = shutil.which("wrk") and not args.python_load
    load = wrk if use_wrk else python_load
    with tempfile.TemporaryDirectory(prefix="athens-bench-") as tmp:
        root = Path(tmp) / "storage"
        seed(root, args.zip_mib)
        daemon = start_daemon(Path(tmp) / "daemon", "--storage", "disk", "--storage-root", str(root),
                              "--log-level", "warn")
        try:
            base = f"{daemon.url}/{MODULE}/@v/v1.0.0"
            print(f"command: {' '.join(sys.argv)}")
            print(f"machine: {machine()}")
            print(f"daemon:  twistd -n athens --storage disk (pid {daemon.process.pid}), one process")
            print(f"load:    {'wrk -t2' if use_wrk else 'python asyncio'} -c{args.connections} {args.seconds}s per endpoint")
            for ext in ("info", "mod"):
                rps = load(f"{base}.{ext}", args.seconds, args.connections)
                print(f".{ext:<4} cache hit: {rps:10.0f} requests/s")
            rss_before = peak_rss_mib(daemon.process.pid)
            mbps, total = zip_throughput(f"{daemon.url}/{BIG}/@v/v1.0.0.zip", args.zip_rounds)
            print(f".zip {args.zip_mib} MiB x{args.zip_rounds}: {mbps:10.1f} MB/s ({total / 1e6:.0f} MB read)")
            print(f"daemon peak RSS: {peak_rss_mib(daemon.process.pid):.1f} MiB "
                  f"(before the zips: {rss_before:.1f} MiB)")
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
