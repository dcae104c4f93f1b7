"""The Redis lock, and what shared stores do when they fail: against real servers."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from athens.module import ModuleVersion
from athens.singleflight.polling import PollingLock
from athens.singleflight.redis import redis_lock
from athens.storage.interface import StorageError, StorageUnavailable
from athens.storage.redis import RedisStorage, connect
from athens.web.app import make_site
from tests.inprocess import serve
from tests.servers import start_redis
from tests.streams import once, pattern

#: Every protocol answer here, from the full path and again from the hit path.
pytestmark = pytest.mark.usefixtures("both_paths")

WHAT = ModuleVersion("example.com/locked", "v1.0.0")


def reactor():
    from twisted.internet import reactor as r

    return r


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor(), seconds, lambda: None)


@pytest.fixture
def redis_pool(redis_server):
    pool = connect(redis_server.endpoint)
    yield pool
    pytest_twisted.blockon(pool.disconnect())


def lock(pool, **kwargs) -> PollingLock:
    return redis_lock(pool, reactor(), prefix=f"lock-{uuid.uuid4().hex}:", **kwargs)


@pytest_twisted.ensureDeferred
async def test_two_nodes_one_runs_the_other_finds_it_done(redis_pool):
    node_a = lock(redis_pool, poll=0.05)
    node_b = attr_copy(node_a)
    done = []

    async def work():
        done.append(1)
        await sleep(0.3)
        return "fetched"

    async def is_done():
        return bool(done)

    results = await gatherResults([Deferred.fromCoroutine(node_a.run(WHAT, is_done, work)),
                                   Deferred.fromCoroutine(node_b.run(WHAT, is_done, work))])
    assert sorted(results, key=str) == [None, "fetched"]
    assert done == [1]


def attr_copy(held: PollingLock) -> PollingLock:
    """A second node: same Redis and prefix, its own tokens."""
    return redis_lock(held.server.redis, held.clock, ttl=held.server.ttl, wait=held.wait, poll=held.poll,
                      prefix=held.server.prefix)


@pytest_twisted.ensureDeferred
async def test_the_lock_is_renewed_while_a_long_fetch_runs(redis_pool, redis_server):
    holder = lock(redis_pool, ttl=0.3)
    key = f"{holder.server.prefix}lock:{WHAT}"

    async def slow():
        await sleep(1.2)  # four TTLs
        return redis_server.cli("EXISTS", key)

    async def never():
        return False

    assert await holder.run(WHAT, never, slow) == ":1\r\n"  # still held at the end
    assert redis_server.cli("EXISTS", key) == ":0\r\n"  # and released after


@pytest_twisted.ensureDeferred
async def test_a_dead_holder_blocks_others_only_until_the_ttl(redis_pool, redis_server):
    waiter = lock(redis_pool, poll=0.05)
    key = f"{waiter.server.prefix}lock:{WHAT}"
    assert redis_server.cli("SET", key, "a-node-that-died", "PX", "500") == "+OK\r\n"

    async def never():
        return False

    async def work():
        return "mine"

    assert await waiter.run(WHAT, never, work) == "mine"


@pytest_twisted.ensureDeferred
async def test_only_the_holder_releases(redis_pool, redis_server):
    holder = lock(redis_pool, ttl=0.2)
    key = f"{holder.server.prefix}lock:{WHAT}"

    async def never():
        return False

    async def overrun():
        await sleep(0.1)
        # the lock was taken over by someone else meanwhile (as after an expiry)
        redis_server.cli("SET", key, "someone-else")
        holder.server.ttl = 60.0
        return "done"

    await holder.run(WHAT, never, overrun)
    assert redis_server.cli("GET", key) == "$12\r\nsomeone-else\r\n"


@pytest_twisted.ensureDeferred
async def test_redis_down_is_503_and_the_storage_reconnects(tmp_path):
    server = start_redis(tmp_path / "r", None, "--appendonly", "yes", "--appendfsync", "always")
    storage = RedisStorage(connect(server.endpoint, timeout=2))
    served = serve(make_site(storage))
    try:
        await storage.save("example.com/kept", "v1.0.0", b'{"Version":"v1.0.0"}', b"module kept\n", once(b"zip"))
        slow = pattern(b"half", 8 << 20, chunk=1 << 20, yield_every=1)

        async def killed_midway():
            async for chunk in slow:
                yield chunk
                if server.process.poll() is None:
                    server.process.send_signal(signal.SIGKILL)
                    server.process.wait()

        with pytest.raises(StorageUnavailable):
            await storage.save("example.com/half", "v1.0.0", b"{}", b"m", killed_midway())
        status, body, _ = await served.get("/example.com/kept/@v/v1.0.0.info")
        assert status == 503 and b"storage unavailable" in body
        assert (await served.get("/readyz"))[0] == 503

        restarted = start_redis(tmp_path / "r", server.port, "--appendonly", "yes", "--appendfsync", "always")
        try:
            await answering_again(storage)
            assert (await served.get("/readyz"))[0] == 200
            assert (await served.get("/example.com/kept/@v/v1.0.0.info"))[0] == 200
            assert await storage.list("example.com/half") == []
            assert not await storage.exists("example.com/half", "v1.0.0")
        finally:
            restarted.stop()
    finally:
        await served.close()
        await storage.close()
        server.stop()


@pytest_twisted.ensureDeferred
async def test_a_store_that_refuses_writes_fails_the_save_cleanly(tmp_path):
    server = start_redis(tmp_path / "full", None, "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    storage = RedisStorage(connect(server.endpoint, timeout=5))
    try:
        with pytest.raises(StorageError, match="OOM"):
            await storage.save("example.com/big", "v1.0.0", b"{}", b"m", pattern(b"big", 16 << 20))
        assert not await storage.exists("example.com/big", "v1.0.0")
        assert await storage.list("example.com/big") == []
    finally:
        await storage.close()
        server.stop()


@pytest_twisted.ensureDeferred
async def test_redis_through_sentinel_for_the_lock_and_the_store(tmp_path, redis_server):
    from athens.singleflight.redis import connect_sentinel
    from tests.servers import start_sentinel

    sentinel = start_sentinel(tmp_path / "sentinel", redis_server)
    master = connect_sentinel((sentinel.endpoint,), "redis-1", "", "", 5, db=3)  # Athens' RedisSentinel.DB
    try:
        storage = RedisStorage(master, prefix=f"sentinel-{uuid.uuid4().hex}:")
        assert await storage.save("example.com/s", "v1.0.0", b"{}", b"module s\n", once(b"zip"))
        assert await storage.go_mod("example.com/s", "v1.0.0") == b"module s\n"
        in_db = subprocess.run(["redis-cli", "-p", str(redis_server.port), "-n", "3", "--scan", "--pattern",
                                storage.prefix + "*"], capture_output=True, text=True, timeout=30).stdout.split()
        assert storage.prefix + "v:example.com/s@v1.0.0" in in_db
        node = redis_lock(master, reactor(), prefix=storage.prefix)

        async def never():
            return False

        async def work():
            return "locked through sentinel"

        assert await node.run(WHAT, never, work) == "locked through sentinel"
        for _ in range(100):  # every pooled connection has selected its database (closing one midway is noisy)
            if master._factory.size == 4:
                break
            await deferLater(reactor(), 0.05, lambda: None)
    finally:
        await storage.close()
        sentinel.stop()


@pytest_twisted.ensureDeferred
async def test_postgres_down_is_503_and_the_pool_reconnects():
    from athens.storage.sql import PostgresStorage
    from tests.servers import start_postgres

    server = start_postgres()
    storage = PostgresStorage.connect(server.url, reactor(), max_connections=2)
    served = serve(make_site(storage))
    try:
        await storage.save("example.com/kept", "v1.0.0", b'{"Version":"v1.0.0"}', b"module kept\n", once(b"zip"))
        server.halt()
        status, body, _ = await served.get("/example.com/kept/@v/v1.0.0.mod")
        assert status == 503 and b"storage unavailable: postgres" in body
        assert (await served.get("/readyz"))[0] == 503
        server.start_again()
        deadline = time.monotonic() + 60  # adbapi drops broken connections and opens new ones (slow on a busy machine)
        while True:
            status, body, _ = await served.get("/example.com/kept/@v/v1.0.0.mod")
            if status == 200 or time.monotonic() > deadline:
                break
            await sleep(0.1)
        assert (status, body) == (200, b"module kept\n")
        assert (await served.get("/readyz"))[0] == 200
    finally:
        await served.close()
        await storage.close()
        server.stop()


@pytest_twisted.ensureDeferred
async def test_redis_down_at_start_is_503_at_once_and_the_storage_connects_when_it_comes(tmp_path):
    """Item 14 of the hardening issue: no 30 s hang when Redis was never up."""
    import time

    from tests.daemon import free_port

    port = free_port()
    storage = RedisStorage(connect(f"127.0.0.1:{port}", timeout=2))
    served = serve(make_site(storage))
    try:
        await sleep(0.5)  # the first connection attempts are refused
        started = time.monotonic()
        status, body, _ = await served.get("/example.com/x/@v/v1.0.0.info")
        assert status == 503 and b"storage unavailable: redis" in body
        assert (await served.get("/readyz"))[0] == 503
        assert time.monotonic() - started < 1.5, "answered at once, not after a timeout"
        server = start_redis(tmp_path / "r", port)
        try:
            await answering_again(storage)
            assert (await served.get("/readyz"))[0] == 200
            assert (await served.get("/example.com/x/@v/v1.0.0.info"))[0] == 404
        finally:
            server.stop()
    finally:
        await served.close()
        await storage.close()


async def answering_again(storage) -> None:
    """Until the store answers (txredisapi reconnects by itself; its retry delay grows up to 10 s)."""
    for _ in range(300):
        try:
            await storage.ping()
            return
        except StorageUnavailable:
            await sleep(0.1)


@pytest_twisted.ensureDeferred
async def test_redis_chunks_of_a_save_in_progress_expire_by_themselves(redis_pool, redis_server):
    """The README's promise: a save that dies half way (kill -9) leaves only chunks that expire."""
    from athens.storage.redis import PENDING_TTL

    prefix = f"expiry-{uuid.uuid4().hex}:"
    storage = RedisStorage(redis_pool, prefix=prefix)
    gate: Deferred[None] = Deferred()

    async def half_then_wait():
        yield b"x" * (2 << 20)  # two whole chunks are written...
        yield b"y"
        await gate  # ...and the save stops here, as if its process died

    saving = storage.save("example.com/dying", "v1.0.0", b"{}", b"module dying\n", half_then_wait())
    keys: list[str] = []
    for _ in range(100):
        keys = [k for k in redis_server.cli("KEYS", f"{prefix}b:*").split("\r\n") if k.startswith(prefix)]
        if len(keys) >= 2:
            break
        await deferLater(reactor(), 0.02, lambda: None)
    assert len(keys) >= 2, keys
    for key in keys:
        ttl = int(redis_server.cli("TTL", key).strip().lstrip(":"))
        assert 0 < ttl <= PENDING_TTL, (key, ttl)
    assert not await storage.exists("example.com/dying", "v1.0.0")  # nothing published meanwhile
    saving.cancel()
    saving.addErrback(lambda f: None)


@pytest_twisted.ensureDeferred
async def test_nodes_starting_together_migrate_one_postgres_schema_once(postgres_server):
    """The advisory lock: four nodes' first requests at once against a new database build one schema."""
    import psycopg

    from athens.storage.sql import SCHEMA_VERSION, PostgresStorage

    database = f"together{uuid.uuid4().hex}"
    with psycopg.connect(postgres_server.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {database}")
    url = f"{postgres_server.url.rsplit('/', 1)[0]}/{database}"
    nodes = [PostgresStorage.connect(url, reactor(), max_connections=2) for _ in range(4)]
    try:
        assert await gatherResults([n.list("example.com/m") for n in nodes]) == [[]] * 4
        await nodes[0].save("example.com/m", "v1.0.0", b"{}", b"module m\n", once(b"zip"))
        assert await gatherResults([n.list("example.com/m") for n in nodes]) == [["v1.0.0"]] * 4
    finally:
        for node in nodes:
            await node.close()
    with psycopg.connect(url) as c:
        rows = c.execute("SELECT version FROM athens_schema ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))


@pytest_twisted.ensureDeferred
async def test_only_the_holder_renews(redis_pool, redis_server):
    """A lock taken over by another node (after an expiry) is not kept alive by the old holder's renewals."""
    holder = lock(redis_pool, ttl=0.2)  # renewed every ~0.07 s while the work runs
    key = f"{holder.server.prefix}lock:{WHAT}"

    async def never():
        return False

    async def taken_over():
        redis_server.cli("SET", key, "someone-else", "PX", "150")
        await sleep(0.6)  # several renewals of the old holder come meanwhile
        return redis_server.cli("EXISTS", key)

    assert await holder.run(WHAT, never, taken_over) == ":0\r\n"  # the other's lock lived its own 150 ms only


@pytest_twisted.ensureDeferred
async def test_a_redis_store_from_before_the_index_gets_one_from_its_last_uses(redis_pool, redis_server):
    """Versions published before the ``saved`` set existed come into /index once, at their last use."""
    prefix = f"old-{uuid.uuid4().hex}:"
    storage = RedisStorage(redis_pool, prefix=prefix)
    for version in ("v1.0.0", "v1.1.0"):
        await storage.save("example.com/old", version, b"{}", b"module example.com/old\n", once(b"zip"))
    redis_server.cli("DEL", f"{prefix}saved")  # as a store written by an earlier version of the proxy
    used = float(redis_server.cli("HGET", f"{prefix}v:example.com/old@v1.0.0", "used").split("\r\n")[1])
    lines = await RedisStorage(redis_pool, prefix=prefix).index(0, 10)
    assert sorted((i.path, i.version) for i in lines) == [("example.com/old", "v1.0.0"), ("example.com/old", "v1.1.0")]
    assert abs(next(i.saved for i in lines if i.version == "v1.0.0") - used) < 0.01
    await storage.save("example.com/old", "v1.2.0", b"{}", b"module example.com/old\n", once(b"zip"))
    assert [i.version for i in await storage.index(0, 10)][-1] == "v1.2.0"
