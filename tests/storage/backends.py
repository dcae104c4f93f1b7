"""
The storage backends the compliance suite runs against.

Each factory yields a fresh, empty store.  Add a backend here and the whole
suite runs against it unchanged.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Iterator

import psycopg
import pytest_twisted

from athens.storage.cached import CachedStorage
from athens.storage.disk import DiskStorage
from athens.storage.interface import IStorage
from athens.storage.memory import MemoryStorage
from athens.storage.memorybucket import MemoryBucket
from athens.storage.objects import ObjectStorage
from athens.storage.redis import RedisStorage, connect
from athens.storage.sql import PostgresStorage


def memory(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    yield MemoryStorage()


def disk(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    yield DiskStorage(tmp_path / "storage")


def cached_disk(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    """The LRU the daemon puts in front of every backend must not change what storage answers."""
    yield CachedStorage(DiskStorage(tmp_path / "storage"), time.monotonic)


def memory_objects(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    """Athens' object layout over the in-memory bucket: the object store's rules without a server."""
    yield ObjectStorage(MemoryBucket())


def s3(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    """Athens' object layout on a real SeaweedFS (signatures checked); a fresh bucket per test."""
    from tests.storage.buckets import s3_bucket

    for bucket in s3_bucket(request):
        yield ObjectStorage(bucket)


def gcs(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    """Athens' object layout on fake-gcs-server; a fresh bucket per test, uploads in the default 8 MiB pieces."""
    from athens.storage.gcs import GCSSettings
    from tests.storage.buckets import gcs as gcs_bucket

    for bucket in gcs_bucket(request, tmp_path, GCSSettings("-").chunk_size):
        yield ObjectStorage(bucket)


def azureblob(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    """Athens' object layout on Azurite (shared-key signatures checked); a fresh container per test."""
    from tests.storage.buckets import azureblob as azure_bucket

    for bucket in azure_bucket(request, tmp_path):
        yield ObjectStorage(bucket)


def redis(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    """A real redis-server; each test gets a key prefix of its own."""
    server = request.getfixturevalue("redis_server")
    store = RedisStorage(connect(server.endpoint), prefix=f"test-{uuid.uuid4().hex}:")
    yield store
    pytest_twisted.blockon(store.close())


def postgres(request: Any, tmp_path: Any) -> Iterator[IStorage]:
    """A real PostgreSQL; each test gets a database of its own."""
    from twisted.internet import reactor

    server = request.getfixturevalue("postgres_server")
    database = f"t{uuid.uuid4().hex}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    store = PostgresStorage.connect(server.url.rsplit("/", 1)[0] + "/" + database, reactor)
    yield store
    pytest_twisted.blockon(store.close())


BACKENDS: dict[str, Callable[[Any, Any], Iterator[IStorage]]] = {
    "memory": memory,
    "disk": disk,
    "cached-disk": cached_disk,
    "memory-objects": memory_objects,
    "redis": redis,
    "postgres": postgres,
    "s3": s3,
    "gcs": gcs,
    "azureblob": azureblob,
}
