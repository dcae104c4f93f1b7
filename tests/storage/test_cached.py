"""The .info/.mod LRU: hits skip the backend, entries expire, size stays bounded, delete forgets."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from athens.storage.cached import CachedStorage
from athens.storage.interface import NotFound
from athens.storage.memory import MemoryStorage
from tests.streams import once


class Counting(MemoryStorage):
    def __init__(self):
        super().__init__()
        self.reads = 0

    def info(self, module, version):
        self.reads += 1
        return super().info(module, version)


@pytest_twisted.ensureDeferred
async def test_hits_skip_the_backend_until_they_expire():
    inner, clock = Counting(), Clock()
    cached = CachedStorage(inner, clock.seconds, ttl=60)
    await inner.save("example.com/m", "v1.0.0", b"info", b"mod", once(b"z"))
    for _ in range(3):
        assert await cached.info("example.com/m", "v1.0.0") == b"info"
    assert inner.reads == 1
    clock.advance(61)
    assert await cached.info("example.com/m", "v1.0.0") == b"info"
    assert inner.reads == 2


@pytest_twisted.ensureDeferred
async def test_size_is_bounded():
    inner, clock = Counting(), Clock()
    cached = CachedStorage(inner, clock.seconds, max_bytes=16 * 100)
    for i in range(50):
        await inner.save("example.com/m", f"v1.{i}.0", b"i" * 100, b"m", once(b"z"))
        await cached.info("example.com/m", f"v1.{i}.0")
    assert cached._size <= 16 * 100
    assert len(cached._entries) == 16


@pytest_twisted.ensureDeferred
async def test_delete_forgets_and_misses_are_not_cached():
    inner = Counting()
    cached = CachedStorage(inner, Clock().seconds)
    with pytest.raises(NotFound):
        await cached.info("example.com/m", "v1.0.0")
    await inner.save("example.com/m", "v1.0.0", b"info", b"mod", once(b"z"))
    assert await cached.info("example.com/m", "v1.0.0") == b"info"
    await cached.delete("example.com/m", "v1.0.0")
    with pytest.raises(NotFound):
        await cached.info("example.com/m", "v1.0.0")
