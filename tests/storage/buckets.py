"""
The object stores the bucket conformance suite runs against.

Each factory yields an empty bucket (or an empty key space of a shared
bucket).  Add a client here and ``test_bucket.py`` runs against it unchanged;
``ObjectStorage`` on top of it then runs the storage compliance suite.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterator

import pytest_twisted

from athens.storage.azure import AzureBucket, AzureSettings
from athens.storage.bucket import IBucket
from athens.storage.gcs import GCSBucket, GCSSettings
from athens.storage.memorybucket import MemoryBucket
from tests.objectservers import AZURITE_ACCOUNT, AZURITE_KEY


def memory(request: Any, tmp_path: Any) -> Iterator[IBucket]:
    yield MemoryBucket()


def azureblob(request: Any, tmp_path: Any) -> Iterator[IBucket]:
    """Azurite, a container of its own per test; small blocks so that uploads take several."""
    from twisted.internet import reactor

    server = request.getfixturevalue("azurite")
    settings = AzureSettings(AZURITE_ACCOUNT, server.create_container(), AZURITE_KEY, endpoint=server.endpoint,
                             timeout=30, block_size=1 << 20)
    bucket = AzureBucket(settings, reactor)
    yield bucket
    pytest_twisted.blockon(bucket.close())


def gcs(request: Any, tmp_path: Any, chunk_size: int = 1 << 20) -> Iterator[IBucket]:
    """
    fake-gcs-server, a bucket of its own per test; small pieces so that uploads take many.  (The
    emulator copies the whole session at every piece, so large objects use the default size.)
    """
    from twisted.internet import reactor

    server = request.getfixturevalue("fake_gcs")
    settings = GCSSettings(server.create_bucket(), emulator=server.endpoint, timeout=30, chunk_size=chunk_size)
    bucket = GCSBucket(settings, reactor)
    yield bucket
    pytest_twisted.blockon(bucket.close())


def s3(request: Any, tmp_path: Any) -> Iterator[IBucket]:
    """A real SeaweedFS checking every signature; a fresh bucket per test."""
    yield from s3_bucket(request)


def s3_bucket(request: Any, **settings: Any) -> Iterator[Any]:
    bucket = new_s3_bucket(request.getfixturevalue("seaweedfs_server"), **settings)
    yield bucket
    pytest_twisted.blockon(bucket.close())


def new_s3_bucket(server: Any, **settings: Any) -> Any:
    """An empty bucket of its own on the tests' SeaweedFS; the caller closes the client."""
    from twisted.internet import reactor

    from athens.storage.awscreds import CredentialSettings
    from athens.storage.s3 import S3Bucket, S3Settings
    from tests.servers import s3_request

    name = f"t{uuid.uuid4().hex}"
    assert s3_request(server, "PUT", "/" + name)[0] == 200
    settings.setdefault("credentials", CredentialSettings(server.key, server.secret))
    return S3Bucket.connect(S3Settings(name, endpoint=server.endpoint, path_style=True, **settings), reactor)


BUCKETS: dict[str, Callable[[Any, Any], Iterator[IBucket]]] = {
    "memory": memory,
    "azureblob": azureblob,
    "gcs": gcs,
    "s3": s3,
}
