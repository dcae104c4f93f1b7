"""
The storage backends the compliance suite runs against.

Each factory yields a fresh, empty store.  Add a backend here and the whole
suite runs against it unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from athens.storage.disk import DiskStorage
from athens.storage.interface import IStorage
from athens.storage.memory import MemoryStorage


def memory(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    yield MemoryStorage()


def disk(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    yield DiskStorage(tmp_path / "storage")


BACKENDS: dict[str, Callable[[Any, Any], Iterator[IStorage]]] = {
    "memory": memory,
    "disk": disk,
}
