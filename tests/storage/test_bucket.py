"""What ObjectStorage relies on, checked against every object store client in ``buckets.BUCKETS``."""

from __future__ import annotations

import hashlib

import pytest
import pytest_twisted

from athens.storage.bucket import IBucket, ObjectExists
from athens.storage.interface import NotFound
from tests.storage.buckets import BUCKETS
from tests.streams import Boom, once, pattern, pattern_digest


@pytest.fixture(params=sorted(BUCKETS))
def bucket(request, tmp_path):
    gen = BUCKETS[request.param](request, tmp_path)
    store = next(gen)
    assert IBucket.providedBy(store)
    yield store
    gen.close()


async def read(bucket, key: str) -> bytes:
    blob = await bucket.open(key)
    try:
        chunks = [c async for c in blob.chunks()]
    finally:
        blob.close()
    assert blob.size == sum(map(len, chunks))
    return b"".join(chunks)


@pytest_twisted.ensureDeferred
async def test_put_get_exists_delete(bucket):
    key = "example.com/A/@v/v1.0.0.info"
    assert not await bucket.exists(key)
    with pytest.raises(NotFound):
        await bucket.get(key)
    with pytest.raises(NotFound):
        await bucket.open(key)
    await bucket.put(key, b'{"Version":"v1.0.0"}')
    assert await bucket.exists(key)
    assert await bucket.get(key) == b'{"Version":"v1.0.0"}'
    assert await read(bucket, key) == b'{"Version":"v1.0.0"}'
    await bucket.put(key, b"")
    assert await bucket.get(key) == b""
    await bucket.delete(key)
    await bucket.delete(key)  # absent: nothing
    assert not await bucket.exists(key)


@pytest_twisted.ensureDeferred
async def test_keys_are_exact_not_prefixes(bucket):
    await bucket.put("m/@v/v1.0.0.mod", b"a")
    assert not await bucket.exists("m/@v/v1.0.0.mo")
    assert not await bucket.exists("m/@v/v1.0.0.mod2")


@pytest_twisted.ensureDeferred
async def test_upload_streams_any_size(bucket):
    size = 40 << 20  # several parts where the store has multipart uploads
    assert await bucket.upload("big/@v/v1.0.0.zip", pattern(b"upload", size)) == size
    blob = await bucket.open("big/@v/v1.0.0.zip")
    digest = hashlib.sha256()
    try:
        assert blob.size == size
        async for chunk in blob.chunks():
            digest.update(chunk)
    finally:
        blob.close()
    assert digest.hexdigest() == pattern_digest(b"upload", size)
    assert await bucket.upload("empty/@v/v1.0.0.zip", once(b"")) == 0
    assert await read(bucket, "empty/@v/v1.0.0.zip") == b""


@pytest_twisted.ensureDeferred
async def test_a_failed_upload_leaves_nothing(bucket):
    with pytest.raises(Boom):
        await bucket.upload("failed/@v/v1.0.0.zip", pattern(b"failed", 20 << 20, fail_at=12 << 20))
    assert not await bucket.exists("failed/@v/v1.0.0.zip")
    assert (await bucket.list("failed/")).keys == []


@pytest_twisted.ensureDeferred
async def test_list_pages_and_delimiter(bucket):
    keys = [f"p/m{i:02d}/@v/v1.0.{j}.info" for i in range(7) for j in range(3)]
    for key in keys:
        await bucket.put(key, b"x")
    await bucket.put("pother/x", b"x")
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        listing = await bucket.list("p/", token=token, limit=5)
        assert len(listing.keys) <= 5 and listing.prefixes == []
        seen += listing.keys
        pages += 1
        if not listing.next_token:
            break
        token = listing.next_token
    assert seen == sorted(keys) and pages >= 5

    dirs: list[str] = []
    token = ""
    while True:
        listing = await bucket.list("p/", delimiter="/", token=token, limit=3)
        assert listing.keys == []
        dirs += listing.prefixes
        if not listing.next_token:
            break
        token = listing.next_token
    assert dirs == [f"p/m{i:02d}/" for i in range(7)]
    assert (await bucket.list("p/m03/@v/", delimiter="/")).keys == [f"p/m03/@v/v1.0.{j}.info" for j in range(3)]


@pytest_twisted.ensureDeferred
async def test_ping(bucket):
    await bucket.ping()


@pytest_twisted.ensureDeferred
async def test_exclusive_writes_keep_the_first(bucket):
    """What makes one of two concurrent saves win: the store decides, atomically, who was first."""
    key = "excl/@v/v1.0.0.zip"
    await bucket.put(key, b"first", exclusive=True)
    with pytest.raises(ObjectExists):
        await bucket.put(key, b"second", exclusive=True)
    with pytest.raises(ObjectExists):
        await bucket.upload(key, pattern(b"third", 12 << 20), exclusive=True)
    assert await bucket.get(key) == b"first"
    assert (await bucket.list("excl/")).keys == [key]  # the refused multipart upload left nothing
    size = 12 << 20
    assert await bucket.upload("excl/@v/v2.0.0.zip", pattern(b"big", size), exclusive=True) == size


@pytest_twisted.ensureDeferred
async def test_listings_say_when_each_object_was_written(bucket):
    import time

    before = time.time() - 5
    await bucket.put("when/a", b"x")
    listing = await bucket.list("when/")
    assert listing.keys == ["when/a"]
    assert before <= listing.modified["when/a"] <= time.time() + 5
