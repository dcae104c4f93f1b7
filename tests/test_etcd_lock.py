"""The etcd lock (``SingleFlightType = "etcd"``) against a real etcd the tests start."""

from __future__ import annotations

import base64
import uuid

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from athens.config import ConfigError, load
from athens.fetch.testing import FakeFetcher
from athens.module import ModuleVersion
from athens.service import build_lock
from athens.singleflight.etcd import EtcdGateway, EtcdLockServer, endpoint_urls, etcd_lock
from athens.stash import Stash
from athens.storage.interface import StorageUnavailable
from athens.storage.memory import MemoryStorage
from tests.daemon import free_port
from tests.test_stash_and_lists import module_zip

WHAT = ModuleVersion("example.com/locked", "v1.0.0")


def reactor():
    from twisted.internet import reactor as r

    return r


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor(), seconds, lambda: None)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def claims(etcd_server, prefix: str) -> list[tuple[str, int]]:
    """The claims queued under ``prefix`` (key, lease), oldest first, as etcd holds them."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    answer = etcd_server.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(end),
                                               "sort_order": "ASCEND", "sort_target": "CREATE"})
    return [(base64.b64decode(kv["key"]).decode(), int(kv.get("lease", 0))) for kv in answer.get("kvs", [])]


def lease_ttl(etcd_server, lease: int) -> int:
    return int(etcd_server.call("/v3/lease/timetolive", {"ID": str(lease)}).get("TTL", 0))


@pytest.fixture
def prefix():
    return f"test-{uuid.uuid4().hex}/"


@pytest.fixture
def locks(etcd_server, prefix):
    """Nodes on the one etcd: each call makes another, with its own connections."""
    made = []

    def node(**kwargs):
        lock = etcd_lock((etcd_server.endpoint,), reactor(), prefix=prefix, poll=0.05, **kwargs)
        made.append(lock)
        return lock

    yield node
    for lock in made:
        pytest_twisted.blockon(lock.close())


async def never() -> bool:
    return False


@pytest_twisted.ensureDeferred
async def test_two_stashes_fetch_each_version_once(etcd_server, locks, prefix):
    storage = MemoryStorage()  # the store both nodes share
    versions = [ModuleVersion("example.com/m", f"v1.{i}.0") for i in range(3)]
    nodes = []
    for _ in range(2):
        fetcher = FakeFetcher(gate=Deferred())
        for v in versions:
            fetcher.add(v.path, v.version, module_zip(v.path, v.version))
        nodes.append((fetcher, Stash(fetcher, storage, locks())))
    waiting = [stash.stash(v.path, v.version) for v in versions for _, stash in nodes]
    for _ in range(200):  # both nodes queue on every version before either fetch may go on
        if all(len(claims(etcd_server, f"{prefix}{v}/")) == 2 for v in versions):
            break
        await sleep(0.02)
    assert all(len(claims(etcd_server, f"{prefix}{v}/")) == 2 for v in versions)
    for fetcher, _ in nodes:
        fetcher.gate.callback(None)
    await gatherResults(waiting)
    for v in versions:
        assert sum(f.count("download", v.path, v.version) for f, _ in nodes) == 1, v
        assert await storage.exists(v.path, v.version)
        assert claims(etcd_server, f"{prefix}{v}/") == []  # every claim left


@pytest_twisted.ensureDeferred
async def test_the_claim_of_a_node_that_died_lapses_after_its_ttl(etcd_server, locks, prefix):
    """A claim in etcd's mutex layout (Athens' too) on a lease nobody renews: the waiter goes on after the TTL."""
    dead = int(etcd_server.call("/v3/lease/grant", {"TTL": 1})["ID"])
    etcd_server.call("/v3/kv/put", {"key": b64(f"{prefix}{WHAT}/{dead:x}"), "value": "", "lease": str(dead)})
    seen = []

    async def work():
        seen.append(lease_ttl(etcd_server, dead))
        return "mine"

    assert await locks().run(WHAT, never, work) == "mine"
    assert seen == [-1]  # it ran only once the dead node's lease had expired


@pytest_twisted.ensureDeferred
async def test_a_held_lock_outlives_its_ttl_while_renewed(etcd_server, locks, prefix):
    holder = locks(ttl=1)
    during = []

    async def slow():
        await sleep(2.5)  # a fetch as long as two and a half TTLs
        during.extend(claims(etcd_server, f"{prefix}{WHAT}/"))
        return "done"

    assert await holder.run(WHAT, never, slow) == "done"
    assert len(during) == 1 and lease_ttl(etcd_server, during[0][1]) == -1  # held to the end, then revoked
    assert claims(etcd_server, f"{prefix}{WHAT}/") == []


@pytest_twisted.ensureDeferred
async def test_renewal_checks_the_claim_is_still_this_nodes(etcd_server, prefix):
    gateway = EtcdGateway.connect(endpoint_urls((etcd_server.endpoint,)), reactor())
    server = EtcdLockServer(gateway, ttl=30, prefix=prefix)
    try:
        ticket = await server.join(WHAT)
        assert await server.turn(ticket) and await server.renew(ticket)
        # Someone deletes the claim (an operator, or a lapse and a takeover): the lease lives on, the claim does not.
        etcd_server.call("/v3/kv/deleterange", {"key": b64(ticket.key)})
        assert not await server.renew(ticket)
        other = int(etcd_server.call("/v3/lease/grant", {"TTL": 30})["ID"])
        etcd_server.call("/v3/kv/put", {"key": b64(f"{prefix}{WHAT}/{other:x}"), "value": "", "lease": str(other)})
        assert not await server.turn(ticket)
        await server.leave(ticket)  # revokes this node's lease: the other claim stays
        assert claims(etcd_server, f"{prefix}{WHAT}/") == [(f"{prefix}{WHAT}/{other:x}", other)]
        assert lease_ttl(etcd_server, ticket.lease) == -1
    finally:
        await gateway.close()


@pytest_twisted.ensureDeferred
async def test_a_later_claim_waits_for_the_earlier_one(etcd_server, prefix):
    gateway = EtcdGateway.connect(endpoint_urls((etcd_server.endpoint,)), reactor())
    server = EtcdLockServer(gateway, ttl=30, prefix=prefix)
    try:
        first, second = await server.join(WHAT), await server.join(WHAT)
        assert (await server.turn(first), await server.turn(second)) == (True, False)
        await server.leave(first)
        assert await server.turn(second)
        await server.leave(second)
    finally:
        await gateway.close()


@pytest_twisted.ensureDeferred
async def test_the_next_endpoint_answers_when_one_is_down(etcd_server):
    dead = f"127.0.0.1:{free_port()}"
    lock = etcd_lock((dead, etcd_server.endpoint), reactor(), prefix=f"failover-{uuid.uuid4().hex}/")
    try:
        async def work():
            return "through the second endpoint"

        assert await lock.run(WHAT, never, work) == "through the second endpoint"
        assert lock.server.gateway.urls[lock.server.gateway._current] == f"http://{etcd_server.endpoint}"
    finally:
        await lock.close()


@pytest_twisted.ensureDeferred
async def test_etcd_down_is_storage_unavailable():
    lock = etcd_lock((f"127.0.0.1:{free_port()}",), reactor())
    lock.retries = 2
    ran = []

    async def work():
        ran.append(1)

    try:
        with pytest.raises(StorageUnavailable, match="etcd unreachable"):
            await lock.run(WHAT, never, work)
        assert ran == []
    finally:
        await lock.close()


@pytest_twisted.ensureDeferred
async def test_athens_names_choose_and_place_the_etcd_lock(etcd_server):
    config = load(None, environ={"ATHENS_SINGLE_FLIGHT_TYPE": "etcd",
                                 "ATHENS_ETCD_ENDPOINTS": f"{etcd_server.endpoint}, http://127.0.0.1:2"})
    assert config.etcd_endpoints == (etcd_server.endpoint, "http://127.0.0.1:2")
    lock = build_lock(config, reactor())
    try:
        assert isinstance(lock.server, EtcdLockServer)
        assert lock.server.gateway.urls == (f"http://{etcd_server.endpoint}", "http://127.0.0.1:2")
    finally:
        await lock.close()
    with pytest.raises(ConfigError, match="SingleFlight.Etcd.Endpoints"):
        build_lock(load(None, environ={"ATHENS_SINGLE_FLIGHT_TYPE": "etcd", "ATHENS_ETCD_ENDPOINTS": "ftp://x/y"}),
                   reactor())


def test_athens_dev_configuration_names_its_etcd_endpoints():
    from tests.test_config import ATHENS_DEV

    assert load(ATHENS_DEV, environ={}).etcd_endpoints == ("localhost:2379", "localhost:22379", "localhost:32379")
