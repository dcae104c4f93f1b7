"""How the protocol answers misses, lists and origin failures, with a fake fetcher in memory."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from athens.fetch.interface import Listing, OriginError, OriginTimeout
from athens.fetch.testing import FakeFetcher
from athens.listcache import ListCache
from athens.module import ModuleVersion
from athens.origin import Origin
from athens.policy import DownloadPolicy, Mode, Rule
from athens.stash import Stash
from athens.storage.memory import MemoryStorage
from athens.web.app import make_site
from tests.inprocess import serve
from tests.streams import once
from tests.test_stash_and_lists import module_zip

#: Every protocol answer here, from the full path and again from the hit path.
pytestmark = pytest.mark.usefixtures("both_paths")

M = "example.com/m"


@pytest_twisted.async_yield_fixture
async def servers():
    started = []
    yield started
    for served in started:
        await served.close()


@pytest.fixture
def proxy(servers):
    def make(fetcher: FakeFetcher, storage=None, network_mode="strict", policy=DownloadPolicy()):
        storage = storage or MemoryStorage()
        origin = Origin(fetcher, Stash(fetcher, storage), ListCache(fetcher, Clock()), policy, None, network_mode)
        served = serve(make_site(storage, None, origin))
        servers.append(served)
        return served, storage

    return make


@pytest_twisted.ensureDeferred
async def test_sync_miss_fetches_stores_and_serves(proxy):
    fetcher = FakeFetcher()
    fetcher.add(M, "v1.0.0", module_zip(M, "v1.0.0"))
    client, storage = proxy(fetcher)
    code, body, _ = await client.get(f"/{M}/@v/v1.0.0.zip")
    assert code == 200 and body == module_zip(M, "v1.0.0")
    assert await storage.exists(M, "v1.0.0")


@pytest.mark.parametrize("failure, code", [(OriginTimeout("slow"), 504), (OriginError("broken"), 502)])
@pytest_twisted.ensureDeferred
async def test_origin_failures_become_gateway_errors(proxy, failure, code):
    client, storage = proxy(FakeFetcher(failure=failure))
    for path in (f"/{M}/@v/v1.0.0.zip", f"/{M}/@v/v1.0.0.info", f"/{M}/@v/list", f"/{M}/@latest", f"/{M}/@v/main.info"):
        status, body, response = await client.get(path)
        assert status == code, path
        assert response.headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
        assert body.count(b"\n") == 1
    assert await storage.list(M) == []


@pytest_twisted.ensureDeferred
async def test_network_modes_for_lists(proxy):
    storage = MemoryStorage()
    await storage.save(M, "v1.0.0", b'{"Version":"v1.0.0"}', b"module m\n", once(b"z"))
    broken = FakeFetcher(failure=OriginError("origin down"))
    assert (await proxy(broken, storage, "strict")[0].get(f"/{M}/@v/list"))[0] == 502
    assert (await proxy(broken, storage, "fallback")[0].get(f"/{M}/@v/list"))[1] == b"v1.0.0\n"
    assert (await proxy(broken, storage, "fallback")[0].get(f"/{M}/@latest"))[0] == 200
    offline = FakeFetcher(listings={M: Listing(("v1.0.0", "v2.0.0"), None)})
    code, body, _ = await proxy(offline, storage, "offline")[0].get(f"/{M}/@v/list")
    assert (code, body) == (200, b"v1.0.0\n") and offline.calls == []
    code, body, _ = await proxy(offline, storage, "strict")[0].get(f"/{M}/@v/list")
    assert body == b"v1.0.0\nv2.0.0\n"


@pytest_twisted.ensureDeferred
async def test_a_module_the_origin_knows_without_tags_lists_empty(proxy):
    fetcher = FakeFetcher(listings={M: Listing((), b'{"Version":"v0.0.0-20240102030405-abcdefabcdef"}')})
    client, _ = proxy(fetcher)
    assert (await client.get(f"/{M}/@v/list"))[:2] == (200, b"")
    code, body, _ = await client.get(f"/{M}/@latest")
    assert json.loads(body)["Version"] == "v0.0.0-20240102030405-abcdefabcdef"


@pytest_twisted.ensureDeferred
async def test_redirect_keeps_the_escaped_path(proxy):
    policy = DownloadPolicy(Mode.REDIRECT, "https://mirror.example.com/base/")
    client, _ = proxy(FakeFetcher(), policy=policy)
    code, _, response = await client.get("/github.com/!azure/x/@v/v1.0.0.zip")
    assert code == 301
    assert response.headers.getRawHeaders("location") == ["https://mirror.example.com/base/github.com/!azure/x/@v/v1.0.0.zip"]


@pytest_twisted.ensureDeferred
async def test_a_query_that_resolves_to_a_wrong_version_is_refused(proxy):
    fetcher = FakeFetcher(listings={M: Listing((), b'{"Version":"v9.9.9"}')})
    code, body, _ = await proxy(fetcher)[0].get(f"/{M}/@v/main.info")
    assert code == 502 and b"not a version" in body


@pytest_twisted.ensureDeferred
async def test_path_prefix(servers):
    storage = MemoryStorage()
    await storage.save(M, "v1.0.0", b'{"Version":"v1.0.0"}', b"module m\n", once(b"z"))
    fetcher = FakeFetcher()
    policy = DownloadPolicy(Mode.SYNC, "https://mirror.example.com",
                            (Rule("example.com/r", Mode.REDIRECT, ""),))
    origin = Origin(fetcher, Stash(fetcher, storage), ListCache(fetcher, Clock()), policy)
    served = serve(make_site(storage, None, origin, 302, None, "/go/proxy"))
    servers.append(served)
    assert (await served.get(f"/go/proxy/{M}/@v/v1.0.0.mod"))[:2] == (200, b"module m\n")
    assert (await served.get("/go/proxy/healthz"))[0] == 200
    for outside in (f"/{M}/@v/v1.0.0.mod", "/healthz", "/go/other/healthz"):
        assert (await served.get(outside))[0] == 404
    code, _, response = await served.get("/go/proxy/example.com/r/@v/v1.0.0.zip")
    assert code == 302
    assert response.headers.getRawHeaders("location") == ["https://mirror.example.com/example.com/r/@v/v1.0.0.zip"]


@pytest_twisted.ensureDeferred
async def test_basic_auth_guards_all_but_health(servers):
    import treq

    storage = MemoryStorage()
    await storage.save(M, "v1.0.0", b'{"Version":"v1.0.0"}', b"module m\n", once(b"z"))
    for prefix in ("", "/athens"):
        served = serve(make_site(storage, None, None, 301, None, prefix, basic_auth=("builder", "s3cret")))
        servers.append(served)
        code, body, response = await served.get(f"{prefix}/{M}/@v/v1.0.0.mod")
        assert code == 401 and response.headers.getRawHeaders("www-authenticate") == ['Basic realm="athens-py"']
        for path in ("/healthz", "/readyz"):
            assert (await served.get(prefix + path))[0] == 200
        for user, password, expected in (("builder", "s3cret", 200), ("builder", "wrong", 401), ("x", "s3cret", 401)):
            response = await treq.get(f"{served.url}{prefix}/{M}/@v/v1.0.0.mod", auth=(user, password),
                                      pool=served.pool)
            assert response.code == expected
            await response.content()


@pytest_twisted.ensureDeferred
async def test_metrics_after_known_traffic(servers, both_paths):
    from athens.metrics import Metrics

    repeated = both_paths == "hit path"  # every 200 asked twice, the repeats answered by the hit path

    metrics = Metrics()
    fetcher = FakeFetcher()
    fetcher.add(M, "v1.0.0", module_zip(M, "v1.0.0"))
    storage = MemoryStorage()
    origin = Origin(fetcher, Stash(fetcher, storage, metrics=metrics), ListCache(fetcher, Clock()))
    served = serve(make_site(storage, None, origin, metrics=metrics), metrics)
    servers.append(served)
    assert (await served.get(f"/{M}/@v/v1.0.0.zip"))[0] == 200  # miss, fetch, store
    code, zip_body, _ = await served.get(f"/{M}/@v/v1.0.0.zip")  # hit
    assert code == 200
    assert (await served.get(f"/{M}/@v/v1.0.0.mod"))[0] == 200  # hit
    assert (await served.get("/example.com/nothing/@v/v1.0.0.info"))[0] == 404  # miss, not found
    code, exposition, response = await served.get("/metrics")
    assert code == 200 and response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    text = exposition.decode()
    for line in (
        f'athens_requests_total{{code="200",endpoint="zip"}} {4.0 if repeated else 2.0}',
        'athens_requests_total{code="404",endpoint="info"} 1.0',
        f'athens_cache_total{{result="hit"}} {5.0 if repeated else 2.0}',
        'athens_cache_total{result="miss"} 2.0',
        'athens_fetches_total{outcome="stored"} 1.0',
        'athens_fetches_total{outcome="not_found"} 1.0',
        "athens_fetches_in_flight 0.0",
        f'athens_served_bytes_total{{endpoint="zip"}} {(4.0 if repeated else 2.0) * len(zip_body)}',
        "athens_fetch_seconds_count 2.0",
    ):
        assert line in text, line
    assert M not in text  # labels never carry module paths


@pytest_twisted.ensureDeferred
async def test_validator_hook_allows_refuses_and_fails_closed(servers, both_paths):
    import json as jsonlib

    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from athens.fetch.upstream import make_pool
    from athens.web.validator import ValidatorHook

    asked = []

    class Hook(Resource):
        isLeaf = True

        def render_POST(self, request):  # noqa: N802
            query = jsonlib.loads(request.content.read())
            asked.append(query)
            if query["Module"] == "example.com/denied":
                request.setResponseCode(403)
                return b"licence not approved"
            if query["Module"] == "example.com/broken":
                request.setResponseCode(500)
                return b""
            return b""

    port = reactor.listenTCP(0, Site(Hook()), interface="127.0.0.1")
    pool = make_pool(reactor)
    storage = MemoryStorage()
    for module in ("example.com/ok", "example.com/denied", "example.com/broken"):
        await storage.save(module, "v1.0.0", b'{"Version":"v1.0.0"}', b"module m\n", once(b"z"))
    hook = ValidatorHook(f"http://127.0.0.1:{port.getHost().port}/validate", pool, reactor)
    served = serve(make_site(storage, None, None, validator=hook))
    servers.append(served)
    try:
        assert (await served.get("/example.com/ok/@v/v1.0.0.mod"))[0] == 200
        code, body, _ = await served.get("/example.com/denied/@v/v1.0.0.zip")
        assert code == 403 and b"licence not approved" in body
        assert (await served.get("/example.com/broken/@v/v1.0.0.info"))[0] == 502
        assert (await served.get("/example.com/ok/@v/list"))[0] == 200  # lists name no version: not asked
        # The hook is asked for every request naming a version: the hit path never answers those for it.
        assert {"Module": "example.com/ok", "Version": "v1.0.0"} in asked
        assert len(asked) == (4 if both_paths == "hit path" else 3)
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_serving_a_version_records_its_use(servers):
    import time

    storage = MemoryStorage()
    await storage.save(M, "v1.0.0", b'{"Version":"v1.0.0"}', b"module m\n", once(b"z"))
    storage._used[ModuleVersion(M, "v1.0.0")] = 0.0  # long unused
    served = serve(make_site(storage))
    servers.append(served)
    assert (await served.get(f"/{M}/@v/v1.0.0.zip"))[0] == 200
    assert await storage.last_used(M, "v1.0.0") > time.time() - 60


@pytest.mark.parametrize("mode", [Mode.SYNC, Mode.ASYNC])
@pytest_twisted.ensureDeferred
async def test_offline_never_asks_the_origin_for_a_missing_version(proxy, mode):
    """Item 17 of the hardening issue: NetworkMode offline means no origin, for versions too."""
    fetcher = FakeFetcher()
    fetcher.add(M, "v1.0.0", module_zip(M, "v1.0.0"))
    client, storage = proxy(fetcher, network_mode="offline", policy=DownloadPolicy(mode))
    for kind in ("info", "mod", "zip"):
        status, body, _ = await client.get(f"/{M}/@v/v1.0.0.{kind}")
        assert status == 404 and b"offline" in body, (kind, body)
    assert fetcher.calls == [] and await storage.list(M) == []


@pytest_twisted.ensureDeferred
async def test_an_origin_failure_is_logged_once_with_what_and_why(proxy):
    """Item 15 of the hardening issue: the log says which version failed, where, and why."""
    from twisted.logger import globalLogPublisher

    fetcher = FakeFetcher(failure=OriginError("the upstream answered 500"))
    client, _ = proxy(fetcher)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        assert (await client.get(f"/{M}/@v/v1.0.0.zip"))[0] == 502
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert fetcher.count("download", M, "v1.0.0") == 1, "asked once, not again after the failure"
    failures = [e for e in events if "failed" in (e.get("log_format") or "") and e.get("module") == M]
    assert len(failures) == 1, failures
    assert failures[0]["version"] == "v1.0.0" and "answered 500" in failures[0]["error"] and failures[0]["origin"]



@pytest_twisted.ensureDeferred
async def test_latest_agrees_with_the_list_when_the_origin_has_no_latest(proxy):
    """Item 19 of the hardening issue: @latest is the newest of the list a client sees, stored or not."""
    storage = MemoryStorage()
    await storage.save(M, "v0.55.0", b'{"Version":"v0.55.0"}', b"module m\n", once(b"z"))
    fetcher = FakeFetcher(listings={M: Listing(("v0.55.0", "v0.62.0"), None)})
    fetcher.add(M, "v0.62.0", module_zip(M, "v0.62.0"))
    client, _ = proxy(fetcher, storage)
    assert (await client.get(f"/{M}/@v/list"))[1] == b"v0.55.0\nv0.62.0\n"
    code, body, _ = await client.get(f"/{M}/@latest")
    assert code == 200 and json.loads(body)["Version"] == "v0.62.0"



@pytest_twisted.ensureDeferred
async def test_the_use_of_a_version_is_recorded_at_most_once_an_hour(servers):
    """By either path: many hits, one write of the last-use record."""
    touched: list[tuple[str, str]] = []

    class Counting(MemoryStorage):
        def touch(self, module: str, version: str):  # type: ignore[no-untyped-def]
            touched.append((module, version))
            return MemoryStorage.touch(self, module, version)

    storage = Counting()
    await storage.save(M, "v1.0.0", b'{"Version":"v1.0.0"}', b"module m\n", once(b"z"))
    served = serve(make_site(storage))
    servers.append(served)
    for kind in ("info", "mod", "zip", "info", "mod", "zip"):
        assert (await served.get(f"/{M}/@v/v1.0.0.{kind}"))[0] == 200
    assert touched == [(M, "v1.0.0")]
