"""
The storage backends the compliance suite runs against.

Each factory yields a fresh, empty store.  Add a backend here and the whole
suite runs against it unchanged.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from athens.storage.cached import CachedStorage
from athens.storage.disk import DiskStorage
from athens.storage.interface import IStorage
from athens.storage.memory import MemoryStorage


def memory(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    yield MemoryStorage()


def disk(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    yield DiskStorage(tmp_path / "storage")


def cached_disk(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    """The LRU the daemon puts in front of every backend must not change what storage answers."""
    yield CachedStorage(DiskStorage(tmp_path / "storage"), time.monotonic)


BACKENDS: dict[str, Callable[[Any, Any], Iterator[IStorage]]] = {
    "memory": memory,
    "disk": disk,
    "cached-disk": cached_disk,
}
