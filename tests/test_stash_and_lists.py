"""Single-flight, the stash (checks before storing) and the list cache, with a fake fetcher."""

from __future__ import annotations

import io
import zipfile

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock

from athens.fetch.interface import Listing, OriginError, OriginNotFound
from athens.fetch.testing import FakeFetcher
from athens.listcache import ListCache
from athens.singleflight import SingleFlight
from athens.stash import Stash
from athens.storage.memory import MemoryStorage

M = "example.com/m"


def module_zip(module: str, version: str, files: dict[str, bytes] | None = None) -> bytes:
    """The same bytes at every call (a fixed time stamp: tests build a zip twice to compare)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in (files or {"m.go": b"package m\n"}).items():
            info = zipfile.ZipInfo(f"{module}@{version}/{name}", date_time=(2024, 1, 2, 3, 4, 6))
            info.external_attr = 0o600 << 16  # as writestr gives a name
            zf.writestr(info, data)
    return buf.getvalue()


@pytest_twisted.ensureDeferred
async def test_single_flight_shares_results_and_survives_a_cancelled_waiter():
    flights: SingleFlight[int] = SingleFlight()
    gate: Deferred[int] = Deferred()
    calls = []

    async def call() -> int:
        calls.append(1)
        return await gate

    waiters = [flights.do("k", call) for _ in range(10)]
    waiters[0].cancel()  # a client that hung up
    assert flights.in_flight("k") and len(calls) == 1
    gate.callback(42)
    assert await gatherResults(waiters[1:]) == [42] * 9
    assert not flights.in_flight("k")


@pytest_twisted.ensureDeferred
async def test_stash_fetches_once_for_concurrent_callers_and_cleans_up():
    fetcher, storage = FakeFetcher(gate=Deferred()), MemoryStorage()
    fetcher.add(M, "v1.0.0", module_zip(M, "v1.0.0"))
    stash = Stash(fetcher, storage)
    waiting = [stash.stash(M, "v1.0.0") for _ in range(50)]
    stash.background(M, "v1.0.0")
    fetcher.gate.callback(None)
    await gatherResults(waiting)
    assert fetcher.count("download", M, "v1.0.0") == 1
    assert fetcher.cleaned == 1
    assert await storage.exists(M, "v1.0.0")
    await stash.stash(M, "v1.0.0")  # stored: no fetch at all
    assert fetcher.count("download", M, "v1.0.0") == 1


@pytest.mark.parametrize(
    "files, reason",
    [({"../evil.go": b"x"}, "invalid zip"), ({"A.go": b"1", "a.go": b"2"}, "collision"),
     ({"go.mod": b"module other\n"}, "differs from the .mod")],
)
@pytest_twisted.ensureDeferred
async def test_an_invalid_zip_from_the_origin_is_refused_and_nothing_stored(files, reason):
    fetcher, storage = FakeFetcher(), MemoryStorage()
    fetcher.add(M, "v1.0.0", module_zip(M, "v1.0.0", files))
    with pytest.raises(OriginError, match=reason):
        await Stash(fetcher, storage).stash(M, "v1.0.0")
    assert not await storage.exists(M, "v1.0.0")
    assert fetcher.cleaned == 1


@pytest_twisted.ensureDeferred
async def test_a_failed_fetch_reaches_every_waiter_and_stores_nothing():
    fetcher, storage = FakeFetcher(failure=OriginError("boom")), MemoryStorage()
    stash = Stash(fetcher, storage)
    results = await gatherResults([stash.stash(M, "v1.0.0").addErrback(lambda f: f.value) for _ in range(3)])
    assert all(isinstance(r, OriginError) for r in results)
    assert await storage.list(M) == []


def listing(*versions: str) -> Listing:
    return Listing(versions, b'{"Version": "%s"}' % versions[-1].encode())


@pytest_twisted.ensureDeferred
async def test_list_cache_fresh_then_stale_while_refreshing():
    clock = Clock()
    fetcher = FakeFetcher(listings={M: listing("v1.0.0")})
    cache = ListCache(fetcher, clock, ttl=60)
    assert (await cache.get(M)).versions == ("v1.0.0",)
    assert (await cache.get(M)).versions == ("v1.0.0",)
    assert fetcher.count("listing", M) == 1
    clock.advance(61)
    fetcher.listings[M] = listing("v1.0.0", "v1.1.0")
    fetcher.gate = Deferred()
    assert (await cache.get(M)).versions == ("v1.0.0",)  # stale, at once, while the refresh runs
    assert (await cache.get(M)).versions == ("v1.0.0",)
    assert fetcher.count("listing", M) == 2  # one refresh, not two
    fetcher.gate.callback(None)
    assert (await cache.get(M)).versions == ("v1.0.0", "v1.1.0")


@pytest_twisted.ensureDeferred
async def test_list_cache_serves_the_last_listing_when_the_origin_fails():
    clock = Clock()
    fetcher = FakeFetcher(listings={M: listing("v1.0.0")})
    cache = ListCache(fetcher, clock, ttl=60, max_stale=120)
    await cache.get(M)
    fetcher.failure = OriginError("origin down")
    clock.advance(500)  # past max_stale: the refresh is awaited, fails, and the old listing answers
    assert (await cache.get(M)).versions == ("v1.0.0",)
    other = ListCache(fetcher, clock)
    with pytest.raises(OriginError):
        await other.get(M)  # nothing cached: the error is the answer


@pytest_twisted.ensureDeferred
async def test_list_cache_remembers_not_found_briefly():
    clock = Clock()
    fetcher = FakeFetcher()
    cache = ListCache(fetcher, clock, ttl=60, negative_ttl=15)
    for _ in range(3):
        with pytest.raises(OriginNotFound):
            await cache.get(M)
    assert fetcher.count("listing", M) == 1
    clock.advance(16)
    fetcher.listings[M] = listing("v1.0.0")
    assert (await cache.get(M)).versions == ("v1.0.0",)
