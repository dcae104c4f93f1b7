"""
The object stores the bucket conformance suite runs against.

Each factory yields an empty bucket (or an empty key space of a shared
bucket).  Add a client here and ``test_bucket.py`` runs against it unchanged;
``ObjectStorage`` on top of it then runs the storage compliance suite.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from athens.storage.bucket import IBucket
from athens.storage.memorybucket import MemoryBucket


def memory(request: Any, tmp_path: Any) -> Iterator[IBucket]:
    yield MemoryBucket()


BUCKETS: dict[str, Callable[[Any, Any], Iterator[IBucket]]] = {
    "memory": memory,
}
