"""
The storage compliance suite: every backend in ``backends.BACKENDS`` must pass it unchanged.

Athens' own scenarios (not found, list, look-alike suffixes, delete, get,
exists, no prefix match) plus what a shared production store needs: upper
case, concurrent saves, failed saves and very large zips.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredList, gatherResults

from athens.module import ModuleVersion
from athens.storage.interface import ModChanged, NotFound, ZipTooLarge
from athens.storage.summary import Summary, count_catalog, summarize
from tests.streams import Boom, once, pattern, pattern_digest

MOD = "example.com/compliance/one"


def info(version: str) -> bytes:
    return json.dumps({"Version": version, "Time": "2024-01-02T03:04:05Z"}).encode()


def gomod(module: str) -> bytes:
    return f"module {module}\n\ngo 1.21\n".encode()


async def save(storage, module: str, version: str, zip: bytes = b"PK-zip-bytes") -> bool:
    return await storage.save(module, version, info(version), gomod(module), once(zip))


async def read_zip(storage, module: str, version: str) -> tuple[int, bytes]:
    blob = await storage.zip(module, version)
    try:
        return blob.size, b"".join([c async for c in blob.chunks()])
    finally:
        blob.close()


async def assert_absent(storage, module: str, version: str) -> None:
    assert not await storage.exists(module, version)
    for getter in (storage.info, storage.go_mod, storage.zip):
        with pytest.raises(NotFound):
            await getter(module, version)
    assert version not in await storage.list(module)


@pytest_twisted.ensureDeferred
async def test_not_found_for_every_getter(storage):
    await assert_absent(storage, MOD, "v1.0.0")
    assert await storage.list(MOD) == []
    with pytest.raises(NotFound):
        await storage.delete(MOD, "v1.0.0")


@pytest_twisted.ensureDeferred
async def test_get_bytes_and_size(storage):
    zip_bytes = bytes(range(256)) * 1000
    assert await save(storage, MOD, "v1.0.0", zip_bytes) is True
    assert await storage.info(MOD, "v1.0.0") == info("v1.0.0")
    assert await storage.go_mod(MOD, "v1.0.0") == gomod(MOD)
    assert await read_zip(storage, MOD, "v1.0.0") == (len(zip_bytes), zip_bytes)
    assert await storage.exists(MOD, "v1.0.0")


@pytest_twisted.ensureDeferred
async def test_list(storage):
    versions = ["v1.0.0", "v1.1.0", "v1.2.0-pre", "v0.0.0-20240102030405-abcdefabcdef"]
    for v in versions:
        await save(storage, MOD, v)
    assert sorted(await storage.list(MOD)) == sorted(versions)
    assert await storage.list("example.com/compliance/other") == []


@pytest_twisted.ensureDeferred
async def test_list_does_not_mix_lookalike_suffixes(storage):
    await save(storage, "example.com/two", "v1.0.0")
    await save(storage, "example.com/two/v2", "v2.0.0")
    await save(storage, "example.com/two-other", "v1.1.0")
    assert await storage.list("example.com/two") == ["v1.0.0"]
    assert await storage.list("example.com/two/v2") == ["v2.0.0"]
    assert await storage.list("example.com/two-other") == ["v1.1.0"]
    assert await storage.list("example.com/tw") == []


@pytest_twisted.ensureDeferred
async def test_delete(storage):
    await save(storage, MOD, "v1.0.0")
    await save(storage, MOD, "v1.1.0")
    await storage.delete(MOD, "v1.0.0")
    await assert_absent(storage, MOD, "v1.0.0")
    assert await storage.list(MOD) == ["v1.1.0"]
    assert await storage.exists(MOD, "v1.1.0")


@pytest_twisted.ensureDeferred
async def test_no_prefix_match(storage):
    await save(storage, MOD, "v1.2.3-pre.1")
    await assert_absent(storage, MOD, "v1.2.3-pre")
    await assert_absent(storage, MOD, "v1.2.3")
    assert await storage.exists(MOD, "v1.2.3-pre.1")


@pytest_twisted.ensureDeferred
async def test_upper_case_module_paths_are_distinct(storage):
    await save(storage, "github.com/Azure/Go-Lib", "v1.0.0", b"upper")
    await save(storage, "github.com/azure/go-lib", "v1.0.0", b"lower")
    assert await read_zip(storage, "github.com/Azure/Go-Lib", "v1.0.0") == (5, b"upper")
    assert await read_zip(storage, "github.com/azure/go-lib", "v1.0.0") == (5, b"lower")
    assert await storage.list("github.com/Azure/Go-Lib") == ["v1.0.0"]
    assert not await storage.exists("github.com/AZURE/go-lib", "v1.0.0")


@pytest_twisted.ensureDeferred
async def test_incompatible_and_pseudo_versions(storage):
    await save(storage, MOD, "v2.0.0+incompatible")
    assert await storage.list(MOD) == ["v2.0.0+incompatible"]
    assert await storage.info(MOD, "v2.0.0+incompatible") == info("v2.0.0+incompatible")


@pytest_twisted.ensureDeferred
async def test_a_stored_version_never_changes(storage):
    assert await save(storage, MOD, "v1.0.0", b"first") is True
    assert await save(storage, MOD, "v1.0.0", b"second") is False
    assert await read_zip(storage, MOD, "v1.0.0") == (5, b"first")


@pytest_twisted.ensureDeferred
async def test_concurrent_saves_of_one_version_one_wins_none_corrupt(storage):
    size = 8 << 20
    seeds = [b"writer-%d" % i for i in range(4)]
    results = await gatherResults(
        [
            storage.save(MOD, "v1.0.0", info("v1.0.0"), gomod(MOD), pattern(seed, size, chunk=256 << 10, yield_every=1))
            for seed in seeds
        ]
    )
    assert sorted(results) == [False, False, False, True]
    winner = seeds[results.index(True)]
    blob = await storage.zip(MOD, "v1.0.0")
    h = hashlib.sha256()
    async for chunk in blob.chunks():
        h.update(chunk)
    blob.close()
    assert blob.size == size
    assert h.hexdigest() == pattern_digest(winner, size, chunk=256 << 10)
    assert await storage.list(MOD) == ["v1.0.0"]


@pytest_twisted.ensureDeferred
async def test_failed_save_leaves_nothing(storage):
    stream = pattern(b"broken", 4 << 20, chunk=256 << 10, fail_at=2 << 20)
    with pytest.raises(Boom):
        await storage.save(MOD, "v1.0.0", info("v1.0.0"), gomod(MOD), stream)
    await assert_absent(storage, MOD, "v1.0.0")
    assert (await storage.catalog("", 100)).items == []
    # and the version can still be stored afterwards
    assert await save(storage, MOD, "v1.0.0", b"good")
    assert await read_zip(storage, MOD, "v1.0.0") == (4, b"good")


@pytest_twisted.ensureDeferred
async def test_zip_over_the_limit_is_refused(storage, monkeypatch):
    import athens.storage.interface as interface

    monkeypatch.setattr(interface, "MAX_ZIP_SIZE", 1 << 20)
    with pytest.raises(ZipTooLarge):
        await storage.save(MOD, "v1.0.0", info("v1.0.0"), gomod(MOD), pattern(b"big", 2 << 20, chunk=64 << 10))
    await assert_absent(storage, MOD, "v1.0.0")


@pytest_twisted.ensureDeferred
async def test_200_mib_zip_round_trips_as_a_stream(storage):
    size = 200 << 20
    assert await storage.save(MOD, "v1.0.0", info("v1.0.0"), gomod(MOD), pattern(b"large", size))
    blob = await storage.zip(MOD, "v1.0.0")
    assert blob.size == size
    h = hashlib.sha256()
    largest = 0
    async for chunk in blob.chunks():
        largest = max(largest, len(chunk))
        h.update(chunk)
    blob.close()
    assert h.hexdigest() == pattern_digest(b"large", size)
    assert largest <= 4 << 20, "the zip must be read in chunks, not whole"


@pytest_twisted.ensureDeferred
async def test_catalog_pages_through_every_version(storage):
    stored = set()
    for i in range(7):
        module = f"example.com/cat/m{i % 3}"
        version = f"v1.{i}.0"
        await save(storage, module, version)
        stored.add(ModuleVersion(module, version))
    seen = []
    token = ""
    for _ in range(10):
        page = await storage.catalog(token, 3)
        assert len(page.items) <= 3
        seen.extend(page.items)
        token = page.next_token
        if not token:
            break
    assert len(seen) == len(stored) and set(seen) == stored
    assert seen == sorted(seen, key=lambda mv: (mv.path, mv.version))


@pytest_twisted.ensureDeferred
async def test_summary_counts_whole_versions_and_modules(storage):
    """The status page's figures: go.mod-only and deleted versions are not counted; the size covers the zips."""
    empty = await summarize(storage)
    assert (empty.modules, empty.versions) == (0, 0)
    zip = os.urandom(100_000)  # (incompressible: PostgreSQL compresses what it can)
    for module, version in (("example.com/sum/a", "v1.0.0"), ("example.com/sum/a", "v1.1.0"),
                            ("example.com/sum/b", "v0.1.0"), ("example.com/sum/c", "v2.0.0")):
        await save(storage, module, version, zip)
    await storage.save_mod("example.com/sum/d", "v1.0.0", gomod("example.com/sum/d"), None)
    await storage.delete("example.com/sum/c", "v2.0.0")
    summary = await summarize(storage)
    assert isinstance(summary, Summary)
    assert (summary.modules, summary.versions) == (2, 3)
    by_catalog = await count_catalog(storage)
    assert (by_catalog.modules, by_catalog.versions) == (2, 3)
    if summary.size is not None:  # (the whole Redis server's memory, the PostgreSQL tables: more than the zips)
        assert summary.size >= 3 * len(zip) and summary.size_of


@pytest_twisted.ensureDeferred
async def test_ping_and_close(storage):
    assert await storage.ping() is None
    results = await DeferredList([storage.close()], consumeErrors=True)
    assert results[0][0]


@pytest_twisted.ensureDeferred
async def test_last_used_starts_at_the_save_and_moves_with_touch(storage):
    import time

    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    before = time.time() - 2
    await save(storage, MOD, "v1.0.0")
    saved = await storage.last_used(MOD, "v1.0.0")
    assert before <= saved <= time.time() + 2
    await deferLater(reactor, 0.05, lambda: None)
    await storage.touch(MOD, "v1.0.0")
    assert await storage.last_used(MOD, "v1.0.0") >= saved
    # absent versions: touch does nothing (creates nothing), last_used is NotFound
    await storage.touch(MOD, "v9.9.9")
    await assert_absent(storage, MOD, "v9.9.9")
    with pytest.raises(NotFound):
        await storage.last_used(MOD, "v9.9.9")
    await storage.delete(MOD, "v1.0.0")
    with pytest.raises(NotFound):
        await storage.last_used(MOD, "v1.0.0")


@pytest_twisted.ensureDeferred
async def test_deletions_change_the_token_and_saves_do_not(storage):
    """The hit path drops every answer when this token changes: a deleted version is served by no cache."""
    start = await storage.deletions()
    await save(storage, MOD, "v1.0.0")
    await save(storage, MOD, "v1.1.0")
    assert await storage.deletions() == start
    await storage.delete(MOD, "v1.0.0")
    after_one = await storage.deletions()
    assert after_one != start
    with pytest.raises(NotFound):
        await storage.delete(MOD, "v1.0.0")
    await storage.delete(MOD, "v1.1.0")
    assert await storage.deletions() not in (start, after_one)


@pytest_twisted.ensureDeferred
async def test_index_lists_whole_versions_by_save_time(storage):
    """Athens' /index: every whole version with its save time, oldest first, from ``since`` on, at most ``limit``."""
    import time

    before = time.time() - 2  # (a file system's clock may lag a little)
    order = [("example.com/zz", "v1.0.0"), (MOD, "v1.0.0"), ("example.com/aa", "v0.1.0"), (MOD, "v1.1.0")]
    for module, version in order:
        await save(storage, module, version)
    await storage.save_mod(MOD, "v2.0.0", gomod(MOD), info("v2.0.0"))  # go.mod-only: not in the index
    lines = await storage.index(0, 100)
    after = time.time() + 2
    assert sorted((i.path, i.version) for i in lines) == sorted(order)
    assert lines == sorted(lines, key=lambda i: (i.saved, i.path, i.version))
    by_key = {(i.path, i.version): i.saved for i in lines}
    saved = [by_key[key] for key in order]
    assert saved == sorted(saved), "later saves have later (or equal) times"
    assert all(before <= t <= after for t in saved)
    assert await storage.index(0, 2) == lines[:2]
    assert await storage.index(0, 0) == []
    assert await storage.index(lines[2].saved, 100) == [i for i in lines if i.saved >= lines[2].saved]
    assert await storage.index(after + 60, 100) == []
    # Completing the go.mod-only version brings it in; a delete takes a version out.
    await save(storage, MOD, "v2.0.0")
    await storage.delete("example.com/zz", "v1.0.0")
    now = await storage.index(0, 100)
    assert [(i.path, i.version) for i in now][-1] == (MOD, "v2.0.0")
    assert ("example.com/zz", "v1.0.0") not in [(i.path, i.version) for i in now]
    assert len(now) == len(order)


# -- go.mod-only versions: what the go command fetched for its module graph without the zip --


@pytest_twisted.ensureDeferred
async def test_a_go_mod_only_version_serves_go_mod_and_info_and_nothing_else(storage):
    assert await storage.save_mod(MOD, "v1.0.0", gomod(MOD), info("v1.0.0")) is True
    assert await storage.go_mod(MOD, "v1.0.0") == gomod(MOD)
    assert await storage.info(MOD, "v1.0.0") == info("v1.0.0")
    with pytest.raises(NotFound):
        await storage.zip(MOD, "v1.0.0")
    assert not await storage.exists(MOD, "v1.0.0")
    assert await storage.list(MOD) == []
    assert (await storage.catalog("", 10)).items == []
    with pytest.raises(NotFound):
        await storage.last_used(MOD, "v1.0.0")


@pytest_twisted.ensureDeferred
async def test_a_go_mod_only_version_gains_its_info_once_and_never_changes(storage):
    assert await storage.save_mod(MOD, "v1.0.0", gomod(MOD), None) is True
    with pytest.raises(NotFound):
        await storage.info(MOD, "v1.0.0")
    assert await storage.save_mod(MOD, "v1.0.0", gomod(MOD), None) is False
    assert await storage.save_mod(MOD, "v1.0.0", gomod(MOD), info("v1.0.0")) is True
    assert await storage.info(MOD, "v1.0.0") == info("v1.0.0")
    assert await storage.save_mod(MOD, "v1.0.0", b"module other\n", b'{"Version":"v1.0.0"}') is False
    assert await storage.go_mod(MOD, "v1.0.0") == gomod(MOD)
    assert await storage.info(MOD, "v1.0.0") == info("v1.0.0")


@pytest_twisted.ensureDeferred
async def test_a_save_completes_a_go_mod_only_version(storage):
    await storage.save_mod(MOD, "v1.0.0", gomod(MOD), None)
    assert await save(storage, MOD, "v1.0.0", b"the zip") is True
    assert await storage.exists(MOD, "v1.0.0")
    assert await storage.list(MOD) == ["v1.0.0"]
    assert await read_zip(storage, MOD, "v1.0.0") == (7, b"the zip")
    assert await storage.info(MOD, "v1.0.0") == info("v1.0.0")
    assert await storage.go_mod(MOD, "v1.0.0") == gomod(MOD)
    assert (await storage.catalog("", 10)).items == [ModuleVersion(MOD, "v1.0.0")]
    assert await save(storage, MOD, "v1.0.0", b"again") is False
    assert await storage.save_mod(MOD, "v1.0.0", gomod(MOD), info("v1.0.0")) is False


@pytest_twisted.ensureDeferred
async def test_completing_keeps_the_stored_info(storage):
    stored_info = json.dumps({"Version": "v1.0.0", "Time": "2020-01-01T00:00:00Z"}).encode()
    await storage.save_mod(MOD, "v1.0.0", gomod(MOD), stored_info)
    assert await save(storage, MOD, "v1.0.0") is True
    assert await storage.info(MOD, "v1.0.0") == stored_info


@pytest_twisted.ensureDeferred
async def test_a_save_with_another_go_mod_is_refused_and_changes_nothing(storage):
    await storage.save_mod(MOD, "v1.0.0", gomod(MOD), None)
    with pytest.raises(ModChanged):
        await storage.save(MOD, "v1.0.0", info("v1.0.0"), b"module evil\n", once(b"zip"))
    assert await storage.go_mod(MOD, "v1.0.0") == gomod(MOD)
    assert not await storage.exists(MOD, "v1.0.0")
    with pytest.raises(NotFound):
        await storage.zip(MOD, "v1.0.0")


@pytest_twisted.ensureDeferred
async def test_a_failed_completion_leaves_the_go_mod_only_version(storage):
    await storage.save_mod(MOD, "v1.0.0", gomod(MOD), None)
    with pytest.raises(Boom):
        await storage.save(MOD, "v1.0.0", info("v1.0.0"), gomod(MOD), pattern(b"x", 3 << 20, fail_at=1 << 20))
    assert await storage.go_mod(MOD, "v1.0.0") == gomod(MOD)
    assert not await storage.exists(MOD, "v1.0.0")
    with pytest.raises(NotFound):
        await storage.info(MOD, "v1.0.0")


@pytest_twisted.ensureDeferred
async def test_concurrent_completions_one_wins(storage):
    await storage.save_mod(MOD, "v1.0.0", gomod(MOD), None)
    size = 2 << 20
    seeds = [b"completer-%d" % i for i in range(3)]
    results = await gatherResults([
        storage.save(MOD, "v1.0.0", info("v1.0.0"), gomod(MOD), pattern(seed, size, chunk=256 << 10, yield_every=1))
        for seed in seeds
    ])
    assert sorted(results) == [False, False, True]
    blob = await storage.zip(MOD, "v1.0.0")
    h = hashlib.sha256()
    async for chunk in blob.chunks():
        h.update(chunk)
    blob.close()
    assert h.hexdigest() == pattern_digest(seeds[results.index(True)], size, chunk=256 << 10)


@pytest_twisted.ensureDeferred
async def test_delete_removes_a_go_mod_only_version(storage):
    start = await storage.deletions()
    await storage.save_mod(MOD, "v1.0.0", gomod(MOD), info("v1.0.0"))
    await storage.delete(MOD, "v1.0.0")
    await assert_absent(storage, MOD, "v1.0.0")
    assert await storage.deletions() != start
    with pytest.raises(NotFound):
        await storage.delete(MOD, "v1.0.0")
