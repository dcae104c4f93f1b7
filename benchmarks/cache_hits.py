#!/usr/bin/env python3
"""
Cache-hit throughput of a running daemon, per storage backend.

    python benchmarks/cache_hits.py [--storages disk,redis,postgres,s3] [--seconds 10] [--zip-mib 100]

For each storage, starts `twistd -n athens` on a seeded store (Redis and
PostgreSQL servers and SeaweedFS' S3 gateway are started on free loopback ports) and prints requests
per second for `.info` and `.mod`, MB/s for a large `.zip`, and the daemon's
peak RSS, side by side.  Load comes from `wrk` when it is installed, else
from a Python generator in a separate process.  Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
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

from tests.daemon import peak_rss_mib, source_env, start_daemon  # noqa: E402
from tests.servers import s3_request, start_postgres, start_redis, start_seaweedfs  # noqa: E402

MODULE = "example.com/bench/lib"
BIG = "example.com/bench/big"


def seed(env: dict[str, str], zip_mib: int) -> None:
    """Save the benchmark versions through the storage API into the store ``env`` names."""
    subprocess.run(
        [sys.executable, "-m", "benchmarks.seed", f"{MODULE},v1.0.0,{64 << 10}", f"{BIG},v1.0.0,{zip_mib << 20}"],
        cwd=REPO, env=source_env(env), check=True,
    )


def storage_env(kind: str, tmp: Path, servers: list) -> dict[str, str]:
    """The ATHENS_* settings of one backend, starting its server if it needs one."""
    if kind == "disk":
        return {"ATHENS_STORAGE_TYPE": "disk", "ATHENS_DISK_STORAGE_ROOT": str(tmp / "storage")}
    if kind == "memory":
        raise SystemExit("memory storage cannot be seeded from outside the daemon")
    if kind == "redis":
        server = start_redis(tmp / "redis")
        servers.append(server)
        return {"ATHENS_STORAGE_TYPE": "redis", "ATHENS_STORAGE_REDIS_ENDPOINT": server.endpoint}
    if kind == "postgres":
        server = start_postgres()
        servers.append(server)
        return {"ATHENS_STORAGE_TYPE": "postgres", "ATHENS_STORAGE_POSTGRES_URL": server.url}
    if kind == "s3":
        server = start_seaweedfs()
        servers.append(server)
        assert s3_request(server, "PUT", "/bench")[0] == 200
        return {"ATHENS_STORAGE_TYPE": "s3", "AWS_REGION": "us-east-1", "ATHENS_S3_BUCKET_NAME": "bench",
                "AWS_ACCESS_KEY_ID": server.key, "AWS_SECRET_ACCESS_KEY": server.secret,
                "AWS_ENDPOINT": server.endpoint, "AWS_FORCE_PATH_STYLE": "true"}
    raise SystemExit(f"unknown storage {kind!r}")


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


def measure(kind: str, args: argparse.Namespace, load, tmp: Path) -> dict[str, str]:
    servers: list = []
    try:
        env = storage_env(kind, tmp / kind, servers)
        seed(env, args.zip_mib)
        env.update(ATHENS_DOWNLOAD_MODE="none", ATHENS_NETWORK_MODE="offline")
        daemon = start_daemon(tmp / kind / "daemon", "--log-level", "warn", env=env)
        try:
            base = f"{daemon.url}/{MODULE}/@v/v1.0.0"
            row = {ext: f"{load(f'{base}.{ext}', args.seconds, args.connections):,.0f} req/s" for ext in ("info", "mod")}
            mbps, _ = zip_throughput(f"{daemon.url}/{BIG}/@v/v1.0.0.zip", args.zip_rounds)
            row["zip"] = f"{mbps:,.0f} MB/s"
            row["rss"] = f"{peak_rss_mib(daemon.process.pid):.0f} MiB"
            return row
        finally:
            daemon.stop()
    finally:
        for server in servers:
            server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storages", default="disk,redis,postgres")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--zip-mib", type=int, default=100)
    p.add_argument("--zip-rounds", type=int, default=5)
    p.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk exists")
    args = p.parse_args()

    use_wrk = shutil.which("wrk") and not args.python_load
    load = wrk if use_wrk else python_load
    kinds = [k.strip() for k in args.storages.split(",") if k.strip()]
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {machine()}")
    print("daemon:  twistd -n athens, one process, storage and load generator on the same machine")
    print(f"load:    {'wrk -t2' if use_wrk else 'python asyncio'} -c{args.connections} {args.seconds}s per endpoint; "
          f".zip: {args.zip_mib} MiB x{args.zip_rounds}, one client")
    with tempfile.TemporaryDirectory(prefix="athens-bench-") as tmp:
        rows = {kind: measure(kind, args, load, Path(tmp)) for kind in kinds}
    print(f"{'':14}" + "".join(f"{kind:>16}" for kind in kinds))
    for key, label in (("info", ".info hit"), ("mod", ".mod hit"), ("zip", ".zip"), ("rss", "peak RSS")):
        print(f"{label:14}" + "".join(f"{rows[kind][key]:>16}" for kind in kinds))


if __name__ == "__main__":
    main()
