"""Byte streams for tests: deterministic, arbitrarily large, never held whole in memory."""

from __future__ import annotations

import hashlib
from typing import AsyncIterator


class Boom(Exception):
    """The failure a broken stream raises half way."""


def block(seed: bytes, i: int, size: int) -> bytes:
    unit = hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
    return (unit * (size // len(unit) + 1))[:size]


async def pattern(seed: bytes, total: int, chunk: int = 1 << 20, fail_at: int | None = None, yield_every: int = 0) -> AsyncIterator[bytes]:
    """``total`` bytes derived from ``seed``; raise :class:`Boom` after ``fail_at`` bytes."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    sent = 0
    i = 0
    while sent < total:
        if fail_at is not None and sent >= fail_at:
            raise Boom("stream broke half way")
        size = min(chunk, total - sent)
        yield block(seed, i, size)
        sent += size
        i += 1
        if yield_every and i % yield_every == 0:
            await deferLater(reactor, 0, lambda: None)
    if fail_at is not None and fail_at >= total:
        raise Boom("stream broke at the end")


def pattern_digest(seed: bytes, total: int, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    sent, i = 0, 0
    while sent < total:
        size = min(chunk, total - sent)
        h.update(block(seed, i, size))
        sent += size
        i += 1
    return h.hexdigest()


async def once(data: bytes) -> AsyncIterator[bytes]:
    yield data
