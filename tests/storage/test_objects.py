"""ObjectStorage's own rules: Athens' layouts served unchanged, the commit point, leftovers, paging, touches."""

from __future__ import annotations

import pytest
import pytest_twisted

from athens.module import ModuleVersion
from athens.storage.interface import NotFound
from athens.storage.memorybucket import MemoryBucket
from athens.storage.objects import AT_V, MINIO, STALE, ObjectStorage
from tests.streams import Boom, once, pattern

INFO = b'{"Version":"v1.2.0","Time":"2023-05-06T07:08:09Z"}'
MOD = b"module github.com/Azure/Go-Lib\n"
ZIP = b"PK\x03\x04 athens wrote this zip"


def athens_s3_bucket() -> MemoryBucket:
    """The keys Athens' s3, gcp and azureblob storage write (config.PackageVersionedName): the path as it is."""
    bucket = MemoryBucket()
    for ext, data in (("info", INFO), ("mod", MOD), ("zip", ZIP)):
        bucket.objects[f"github.com/Azure/Go-Lib/@v/v1.2.0.{ext}"] = data
        bucket.modified[f"github.com/Azure/Go-Lib/@v/v1.2.0.{ext}"] = 1_700_000_000.0
    return bucket


def athens_minio_bucket() -> MemoryBucket:
    """Athens' minio storage: ``<module>/<version>/go.mod``, ``source.zip``, ``<version>.info``."""
    bucket = MemoryBucket()
    for name, data in (("v1.2.0.info", INFO), ("go.mod", MOD), ("source.zip", ZIP)):
        bucket.objects[f"github.com/Azure/Go-Lib/v1.2.0/{name}"] = data
        bucket.modified[f"github.com/Azure/Go-Lib/v1.2.0/{name}"] = 1_700_000_000.0
    return bucket


@pytest.mark.parametrize("bucket, layout", [(athens_s3_bucket, AT_V), (athens_minio_bucket, MINIO)])
@pytest_twisted.ensureDeferred
async def test_a_bucket_athens_filled_is_served_unchanged(bucket, layout):
    store = ObjectStorage(bucket(), layout)
    module = "github.com/Azure/Go-Lib"
    assert await store.list(module) == ["v1.2.0"]
    assert await store.exists(module, "v1.2.0")
    assert await store.info(module, "v1.2.0") == INFO
    assert await store.go_mod(module, "v1.2.0") == MOD
    blob = await store.zip(module, "v1.2.0")
    assert (blob.size, b"".join([c async for c in blob.chunks()])) == (len(ZIP), ZIP)
    assert (await store.catalog("", 10)).items == [ModuleVersion(module, "v1.2.0")]
    assert await store.last_used(module, "v1.2.0") == 1_700_000_000.0
    assert await store.list("github.com/azure/go-lib") == []


@pytest.mark.parametrize("layout", [AT_V, MINIO])
@pytest_twisted.ensureDeferred
async def test_what_we_write_is_athens_layout(layout):
    bucket = MemoryBucket()
    await ObjectStorage(bucket, layout).save("github.com/Azure/Go-Lib", "v1.2.0", INFO, MOD, once(ZIP))
    expected = athens_s3_bucket() if layout is AT_V else athens_minio_bucket()
    assert bucket.objects == expected.objects


@pytest_twisted.ensureDeferred
async def test_what_a_killed_save_left_is_invisible_and_removed_later():
    bucket = MemoryBucket()
    clock = [10_000.0]
    store = ObjectStorage(bucket, clock=lambda: clock[0])
    m = "example.com/killed"
    # a zip and a go.mod, no .info: the save died before its commit point
    await bucket.put(f"{m}/@v/v1.0.0.zip", b"partial")
    await bucket.put(f"{m}/@v/v1.0.0.mod", MOD)
    bucket.modified.update({k: clock[0] for k in bucket.objects})
    assert not await store.exists(m, "v1.0.0")
    assert await store.list(m) == []
    assert (await store.catalog("", 10)).items == []
    for getter in (store.zip, store.info):
        with pytest.raises(NotFound):
            await getter(m, "v1.0.0")
    assert await store.go_mod(m, "v1.0.0") == MOD  # a go.mod-only version: the go.mod never changes
    assert await store.sweep() == []  # young: it may be a save in progress elsewhere
    clock[0] += STALE + 1
    assert await store.sweep() == [f"{m}/@v/v1.0.0.zip"]
    assert list(bucket.objects) == [f"{m}/@v/v1.0.0.mod"]
    await store.delete(m, "v1.0.0")
    assert list(bucket.objects) == [".athens-py/deletions"]
    del bucket.objects[".athens-py/deletions"]

    # the same leftover again: the next save of the version removes it and stores the whole version
    await bucket.put(f"{m}/@v/v1.0.0.zip", b"partial")
    bucket.modified[f"{m}/@v/v1.0.0.zip"] = clock[0] - STALE - 1
    assert await store.save(m, "v1.0.0", INFO, MOD, once(b"whole"))
    blob = await store.zip(m, "v1.0.0")
    assert b"".join([c async for c in blob.chunks()]) == b"whole"


@pytest_twisted.ensureDeferred
async def test_sweep_keeps_whole_versions_and_go_mod_only_ones():
    bucket = MemoryBucket()
    clock = [10_000.0]
    store = ObjectStorage(bucket, clock=lambda: clock[0])
    await store.save("example.com/whole", "v1.0.0-pre", INFO, MOD, once(ZIP))
    # a pre-release whose keys interleave with v1.0.0-pre's in key order
    await store.save("example.com/whole", "v1.0.0-pre.mod1", INFO, MOD, once(ZIP))
    await bucket.put("example.com/modonly/@v/v1.0.0.mod", MOD)
    await bucket.put("example.com/modonly/@v/v1.0.0.info", INFO)
    kept = dict(bucket.objects)
    clock[0] += 10 * STALE
    assert await store.sweep() == []
    assert bucket.objects == kept


@pytest_twisted.ensureDeferred
async def test_a_failed_save_leaves_no_object():
    bucket = MemoryBucket()
    store = ObjectStorage(bucket)
    with pytest.raises(Boom):
        await store.save("example.com/m", "v1.0.0", INFO, MOD, pattern(b"x", 3 << 20, fail_at=1 << 20))
    assert bucket.objects == {}

    class RefusesInfo(MemoryBucket):
        def put(self, key, data, exclusive=False):
            if key.endswith(".info"):
                raise Boom("the store refused the .info")
            return super().put(key, data, exclusive)

    bucket = RefusesInfo()  # the zip and go.mod are written, the commit point fails
    with pytest.raises(Boom):
        await ObjectStorage(bucket).save("example.com/m", "v1.0.0", INFO, MOD, once(ZIP))
    assert bucket.objects == {}


class Counting(MemoryBucket):
    """Counts listings and writes, to check what each operation costs."""

    lists: int = 0
    puts: int = 0

    def list(self, prefix, delimiter="", token="", limit=1000):
        self.lists += 1
        return super().list(prefix, delimiter, token, limit)

    def put(self, key, data, exclusive=False):
        self.puts += 1
        return super().put(key, data, exclusive)


@pytest_twisted.ensureDeferred
async def test_list_is_one_paged_listing_not_requests_per_version():
    bucket = Counting()
    store = ObjectStorage(bucket)
    for i in range(50):
        await store.save("example.com/many", f"v1.0.{i}", INFO, MOD, once(ZIP))
    bucket.lists = 0
    assert len(await store.list("example.com/many")) == 50
    assert bucket.lists == 1


@pytest_twisted.ensureDeferred
async def test_touch_writes_at_most_once_an_hour_per_node():
    bucket = Counting()
    clock = [10_000.0]
    store = ObjectStorage(bucket, clock=lambda: clock[0])
    await store.save("example.com/used", "v1.0.0", INFO, MOD, once(ZIP))
    bucket.puts = 0
    for _ in range(5):
        await store.touch("example.com/used", "v1.0.0")
    assert bucket.puts == 1
    clock[0] += 3601
    await store.touch("example.com/used", "v1.0.0")
    assert bucket.puts == 2
    bucket.modified["example.com/used/@v/v1.0.0.used"] = 9e9  # later than the save
    assert await store.last_used("example.com/used", "v1.0.0") == 9e9


@pytest_twisted.ensureDeferred
async def test_catalog_pages_through_small_bucket_listings():
    class SmallPages(MemoryBucket):
        def list(self, prefix, delimiter="", token="", limit=1000):
            return super().list(prefix, delimiter, token, 5)

    bucket = SmallPages()
    store = ObjectStorage(bucket)
    for i in range(12):
        await store.save(f"example.com/c{i % 4}", f"v1.{i}.0", INFO, MOD, once(ZIP))
    await bucket.put("example.com/c0/@v/v9.0.0.zip", b"leftover")  # never counted
    seen, token = [], ""
    while True:
        page = await store.catalog(token, 5)
        seen += page.items
        if not page.next_token:
            break
        token = page.next_token
    assert set(seen) == {ModuleVersion(f"example.com/c{i % 4}", f"v1.{i}.0") for i in range(12)}
    assert len(seen) == 12
