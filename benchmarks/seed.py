"""Seed the storage the ATHENS_* environment names with benchmark modules (used by cache_hits.py)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import AsyncIterator

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from athens.config import load
from athens.storage.factory import open_storage

CHUNK = 1 << 20


async def pattern(size: int) -> AsyncIterator[bytes]:
    block = os.urandom(CHUNK)
    sent = 0
    while sent < size:
        piece = block[: min(CHUNK, size - sent)]
        sent += len(piece)
        yield piece


async def seed(reactor: object, versions: list[tuple[str, str, int]], report: bool = False) -> None:
    storage = open_storage(load(None), reactor)
    try:
        for module, version, size in versions:
            info = json.dumps({"Version": version, "Time": "2024-01-02T03:04:05Z"}).encode()
            start = time.monotonic()
            await storage.save(module, version, info, f"module {module}\n\ngo 1.21\n".encode(), pattern(size))
            if report:  # (read by storage.py: the save's own time, not the process's start-up)
                print(f"saved {module} {version} {size} {time.monotonic() - start:.6f}", flush=True)
    finally:
        await storage.close()


def main() -> None:
    """``module,version,size`` ...; ``--report``: print each save's size and seconds."""
    args = sys.argv[1:]
    report = "--report" in args
    versions = [(m, v, int(s)) for m, v, s in (arg.split(",") for arg in args if arg != "--report")]
    react(lambda reactor: ensureDeferred(seed(reactor, versions, report)))


if __name__ == "__main__":
    main()
