"""
``.info`` reads per second straight from the storage the ATHENS_* environment names (used by storage.py):
the store itself, without the daemon's hit path in front of it.

    python -m benchmarks.storage_reads MODULE VERSION SECONDS CONCURRENCY
"""

from __future__ import annotations

import sys
import time

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import react

from athens.config import load
from athens.storage.factory import open_storage


async def reads(reactor: object, module: str, version: str, seconds: float, concurrency: int) -> None:
    storage = open_storage(load(None), reactor)
    try:
        expected = await storage.info(module, version)
        deadline = time.monotonic() + seconds
        start = time.monotonic()

        async def worker() -> int:
            done = 0
            while time.monotonic() < deadline:
                if await storage.info(module, version) != expected:
                    raise RuntimeError("the store answered something else")
                done += 1
            return done

        total = sum(await gatherResults([ensureDeferred(worker()) for _ in range(concurrency)]))
        print(f"reads {total / (time.monotonic() - start):.1f}", flush=True)
    finally:
        await storage.close()


def main() -> None:
    module, version, seconds, concurrency = sys.argv[1:5]
    react(lambda reactor: ensureDeferred(reads(reactor, module, version, float(seconds), int(concurrency))))


if __name__ == "__main__":
    main()
