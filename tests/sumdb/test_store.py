"""
Every log store (memory, SQLite on disk, Redis, PostgreSQL) behaves the same; the shared ones
survive a reopen and build one tree from several writers (processes, nodes) at once.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

import psycopg
import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred, gatherResults

from athens.singleflight.redis import redis_lock
from athens.storage.interface import StorageUnavailable
from athens.storage.redis import connect
from athens.sumdb import ILogStore, LogCorrupt, MemoryLogStore, SignerKey, SumLog
from athens.sumdb._redisstore import RedisLogStore
from athens.sumdb._sqlstore import SQLLogStore
from athens.sumdb._tlog import (
    append_hashes,
    append_indexes,
    check_tree,
    record_hash,
    stored_hash_index,
    tree_hash,
    tree_indexes,
    tree_proof,
    tree_proof_indexes,
)
from twisted.python.components import proxyForInterface
from zope.interface.verify import verifyObject

SIGNER = SignerKey.generate("sum.store.test")


def _memory(request: Any, tmp_path: Any) -> Callable[[], ILogStore]:
    store = MemoryLogStore()
    return lambda: store  # one process: every "opening" is the same store


def _disk(request: Any, tmp_path: Any) -> Callable[[], ILogStore]:
    return lambda: SQLLogStore.sqlite(str(tmp_path / "log" / "log.sqlite"), SIGNER.name)


def _redis(request: Any, tmp_path: Any) -> Callable[[], ILogStore]:
    server = request.getfixturevalue("redis_server")
    prefix = f"test-{uuid.uuid4().hex}:"
    return lambda: RedisLogStore(connect(server.endpoint), SIGNER.name, prefix)


def _postgres(request: Any, tmp_path: Any) -> Callable[[], ILogStore]:
    server = request.getfixturevalue("postgres_server")
    database = f"t{uuid.uuid4().hex}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    url = server.url.rsplit("/", 1)[0] + "/" + database
    return lambda: SQLLogStore.postgres(url, SIGNER.name)


STORES = {"memory": _memory, "disk": _disk, "redis": _redis, "postgres": _postgres}
SHARED = ("disk", "redis", "postgres")


@pytest.fixture(params=sorted(STORES))
def opener(request, tmp_path):
    """Opens the same log again (another process or node); every store opened is closed at the end."""
    opened: list[ILogStore] = []
    make = STORES[request.param](request, tmp_path)

    def open_store() -> ILogStore:
        store = make()
        opened.append(store)
        return store

    open_store.kind = request.param  # type: ignore[attr-defined]
    yield open_store
    for store in {id(s): s for s in opened}.values():
        pytest_twisted.blockon(store.close())


def text(i: int, salt: str = "") -> bytes:
    return f"example.com/m{i} v1.0.0 h1:{salt}{i}=\nexample.com/m{i} v1.0.0/go.mod h1:{salt}mod{i}=\n".encode()


def rebuilt_tree(records: list[bytes]) -> bytes:
    """The tree hash computed from the records alone, with the pure functions."""
    hashes: list[bytes] = []
    for n, record in enumerate(records):
        hashes += append_hashes(n, record_hash(record), [hashes[i] for i in append_indexes(n)])
    return tree_hash(len(records), [hashes[i] for i in tree_indexes(len(records))])


@pytest_twisted.ensureDeferred
async def test_append_is_a_compare_and_set(opener):
    store = opener()
    assert verifyObject(ILogStore, store)
    assert await store.size() == 0 and await store.lookup("a@v1.0.0") is None
    assert await store.records(0, 0) == [] and await store.hashes([]) == []
    leaf = record_hash(text(0))
    assert await store.append("a@v1.0.0", text(0), 0, [leaf]) == (0, True)
    assert await store.append("a@v1.0.0", text(1), 1, [b"x" * 32]) == (0, False)  # logged: nothing written
    assert await store.append("b@v1.0.0", text(1), 0, [b"x" * 32]) is None  # the size moved on: refused
    second = append_hashes(1, record_hash(text(1)), [leaf])
    assert await store.append("b@v1.0.0", text(1), 1, second) == (1, True)
    assert await store.size() == 2 and await store.lookup("b@v1.0.0") == 1
    assert await store.records(0, 2) == [text(0), text(1)]
    assert await store.hashes([2, 0, stored_hash_index(0, 1)]) == [second[1], leaf, second[0]]
    with pytest.raises(LogCorrupt):
        await store.records(1, 2)
    with pytest.raises(LogCorrupt):
        await store.hashes([0, 3])


@pytest_twisted.ensureDeferred
async def test_the_log_survives_a_reopen_and_only_grows(opener):
    log = SumLog(SIGNER, opener())
    for i in range(40):
        assert await log.append(f"example.com/m{i}", "v1.0.0", text(i)) == (i, True)
    before = await log.head()
    first_note = await log.latest()
    again = SumLog(SIGNER, opener())  # a restart, or another node
    assert await again.head() == before and await again.latest() == first_note
    assert await again.append("example.com/m3", "v1.0.0", text(3)) == (3, False)
    for i in range(40, 70):
        await again.append(f"example.com/m{i}", "v1.0.0", text(i))
    after = await log.head()
    assert after.n == 70 and after.hash == rebuilt_tree([text(i) for i in range(70)])
    hashes = await again.store.hashes(tree_proof_indexes(after.n, before.n))
    check_tree(tree_proof(after.n, before.n, hashes), after.n, after.hash, before.n, before.hash)


@pytest_twisted.ensureDeferred
async def test_concurrent_writers_build_one_tree(opener):
    """Two writers (nodes, or worker processes on one disk) append at once: one tree, every record once."""
    first, second = SumLog(SIGNER, opener()), SumLog(SIGNER, opener())
    appends = []
    for i in range(30):
        appends.append(first.append(f"example.com/m{i}", "v1.0.0", text(i)))
        appends.append(second.append(f"example.com/m{i + 100}", "v1.0.0", text(i + 100)))
        appends.append(second.append(f"example.com/m{i}", "v1.0.0", text(i)))  # the same version on both
    results = await gatherResults([ensureDeferred(a) for a in appends])
    ids = {}
    for (record_id, _), key in zip(results, [k for i in range(30) for k in (i, i + 100, i)]):
        assert ids.setdefault(key, record_id) == record_id
    assert sorted(ids.values()) == list(range(60))
    assert sum(added for _, added in results) == 60
    head = await first.head()
    records = await first.store.records(0, 60)
    assert head == await second.head() and head.hash == rebuilt_tree(records)
    assert sorted(records) == sorted(text(k) for k in ids)


@pytest_twisted.ensureDeferred
async def test_nodes_ordered_by_the_redis_lock(redis_server):
    """With SingleFlightType redis, appends of several nodes take turns under one lock: no race is even lost."""
    from twisted.internet import reactor

    prefix = f"test-{uuid.uuid4().hex}:"
    stores = [RedisLogStore(connect(redis_server.endpoint), SIGNER.name, prefix) for _ in range(3)]
    locks = [redis_lock(connect(redis_server.endpoint), reactor, ttl=10, wait=60, poll=0.01, prefix=prefix)
             for _ in range(3)]
    raced: list[bool] = []

    class Counting(proxyForInterface(ILogStore)):  # type: ignore[misc]
        """Notes every append that lost a race."""

        def append(self, *args: Any) -> Any:
            return self.original.append(*args).addCallback(lambda r: raced.append(r is None) or r)

    logs = [SumLog(SIGNER, Counting(store), lock) for store, lock in zip(stores, locks)]
    try:
        results = await gatherResults([ensureDeferred(logs[i % 3].append(f"example.com/m{i}", "v1.0.0", text(i)))
                                       for i in range(24)])
        assert sorted(r[0] for r in results) == list(range(24)) and not any(raced)
        assert (await logs[0].head()).hash == rebuilt_tree(await stores[1].records(0, 24))
    finally:
        for store, lock in zip(stores, locks):
            await store.close()
            await lock.close()


@pytest_twisted.ensureDeferred
async def test_a_log_that_shrank_is_never_signed():
    """A store restored from an older copy would fork the log for every client: refused, loudly."""
    store = MemoryLogStore()
    log = SumLog(SIGNER, store)
    for i in range(3):
        await log.append(f"example.com/m{i}", "v1.0.0", text(i))
    await log.latest()
    log.store = MemoryLogStore()
    with pytest.raises(StorageUnavailable, match="shrank from 3 to 0"):
        await log.latest()


@pytest_twisted.ensureDeferred
async def test_processes_opening_a_new_disk_log_at_once_all_get_it(tmp_path):
    """Switching a new SQLite file to its write-ahead log answers "locked" to all but one opener: they wait."""
    for round_ in range(20):
        path = str(tmp_path / f"r{round_}" / "log.sqlite")
        stores = [SQLLogStore.sqlite(path, SIGNER.name) for _ in range(4)]
        try:
            assert await gatherResults([ensureDeferred(_first_append(store, i)) for i, store in
                                        enumerate(stores)]) == [0, 0, 0, 0]
        finally:
            for store in stores:
                await store.close()


async def _first_append(store: ILogStore, i: int) -> int:
    await store.append(f"example.com/m{i}@v1.0.0", text(i), await store.size(), [record_hash(text(i))])
    return 0


@pytest_twisted.ensureDeferred
async def test_the_caches_of_what_never_changes_stay_right_when_full():
    """A log whose caches hold a handful of entries serves the same tree as one with room for everything."""
    from athens.sumdb._log import _Immutable

    store = MemoryLogStore()
    small = SumLog(SIGNER, store, hashes=_Immutable(limit=3), records=_Immutable(limit=2))
    for i in range(40):
        await small.append(f"example.com/m{i}", "v1.0.0", text(i))
    assert (await small.head()).hash == rebuilt_tree([text(i) for i in range(40)])
    assert [await small.record(i) for i in (5, 1, 5, 39, 0)] == [text(5), text(1), text(5), text(39), text(0)]
    cache, loads = _Immutable(limit=3), []

    async def load(keys: list[int]) -> list[bytes]:
        loads.append(keys)
        return [b"%d" % k for k in keys]

    assert await cache.read([1, 2, 3], load) == [b"1", b"2", b"3"]
    assert await cache.read([2, 4, 2], load) == [b"2", b"4", b"2"]  # full: emptied, yet 2 is answered
    assert loads == [[1, 2, 3], [4]]
