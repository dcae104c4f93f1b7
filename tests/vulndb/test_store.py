"""The copy of the vulnerability database in every kind of store: replaced all at once, read consistently."""

from __future__ import annotations

import os

import attrs
import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from athens.storage.interface import StorageError
from athens.storage.memorybucket import MemoryBucket
from athens.vulndb.store import DISK_DIR, IVulnStore, State, digest, vuln_store
from tests.storage.backends import BACKENDS


@attrs.define
class BucketStorage:
    """What an object store's IStorage offers the vulnerability database: its bucket."""

    bucket: MemoryBucket = attrs.field(factory=MemoryBucket)
    name = "s3"


def bucket(request, tmp_path):
    yield BucketStorage()


STORES = {name: BACKENDS[name] for name in ("memory", "disk", "redis", "postgres")} | {"bucket": bucket}


@pytest.fixture(params=sorted(STORES))
def backend(request, tmp_path):
    gen = STORES[request.param](request, tmp_path)
    storage = next(gen)
    yield request.param, storage
    gen.close()


def copy(n: int) -> tuple[State, bytes]:
    archive = b"PK-vulndb-%d-" % n + os.urandom(64) * 1000
    return State(digest(archive), f"2024-03-{n:02d}T00:00:00Z", 1000.0 + n, "test"), archive


@pytest_twisted.ensureDeferred
async def test_save_load_confirm(backend):
    name, storage = backend
    store = vuln_store(storage)
    assert IVulnStore.providedBy(store)
    assert await store.state() is None and await store.load() is None
    first, second = copy(1), copy(2)
    await store.save(*first)
    assert await store.state() == first[0]
    assert await store.load() == first
    await store.save(*second)
    assert await store.load() == second
    await store.confirm(first[0].digest, 5000.0)  # no longer the stored copy: nothing changes
    assert (await store.state()).checked == second[0].checked
    await store.confirm(second[0].digest, 5000.0)
    assert await store.state() == attrs.evolve(second[0], checked=5000.0)
    assert (await store.load())[1] == second[1]
    if name != "memory":  # another process or node, on the same store, sees the same copy
        assert await vuln_store(storage).load() == (attrs.evolve(second[0], checked=5000.0), second[1])


@pytest_twisted.ensureDeferred
async def test_a_reader_never_sees_a_mix_of_two_copies(backend):
    """Saves and loads interleaved: every load's archive is the one its state names."""
    _, storage = backend
    store = vuln_store(storage)
    copies = [copy(n) for n in range(1, 7)]
    await store.save(*copies[0])
    results = await gatherResults([store.save(*c) for c in copies[1:]] + [store.load() for _ in range(12)])
    for loaded in results[len(copies) - 1:]:
        state, archive = loaded
        assert digest(archive) == state.digest
        assert (state, archive) in copies


@pytest_twisted.ensureDeferred
async def test_disk_keeps_the_current_and_the_previous_archive_only(tmp_path):
    storage = next(BACKENDS["disk"](None, tmp_path))
    store = vuln_store(storage)
    copies = [copy(n) for n in range(1, 5)]
    for c in copies:
        await store.save(*c)
    directory = os.path.join(storage.root, DISK_DIR)
    assert sorted(n for n in os.listdir(directory) if n.endswith(".zip")) == sorted(
        c[0].digest + ".zip" for c in copies[-2:])
    assert (await storage.catalog("", 10)).items == []  # not a module to the module store
    with open(os.path.join(directory, "state.json"), "w") as f:
        f.write("{broken")
    with pytest.raises(StorageError, match="unreadable"):
        await store.state()


@pytest_twisted.ensureDeferred
async def test_bucket_keeps_the_current_and_the_previous_archive_only():
    storage = BucketStorage()
    store = vuln_store(storage)
    copies = [copy(n) for n in range(1, 5)]
    for c in copies:
        await store.save(*c)
    assert sorted(storage.bucket.objects) == sorted(
        [f".athens-py/vulndb/{c[0].digest}.zip" for c in copies[-2:]] + [".athens-py/vulndb/state.json"])
