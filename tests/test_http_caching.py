"""
HTTP caching, so that a CDN or any cache in front can absorb hits: every
answer says how long it may be kept and by whom, conditional requests get
304 and ranges 206 or 416, all from the full path (never a remembered 200),
and ``Disable-Module-Fetch`` is answered from the store alone.
"""

from __future__ import annotations

import json
import os

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread

from athens.fetch.interface import Listing
from athens.fetch.testing import FakeFetcher
from athens.listcache import ListCache
from athens.origin import Origin
from athens.policy import DownloadPolicy, Mode, Rule
from athens.stash import Stash
from athens.storage.disk import DiskStorage
from athens.storage.memory import MemoryStorage
from athens.web.app import make_site
from tests import rawhttp
from tests.inprocess import serve
from tests.streams import once
from tests.test_stash_and_lists import module_zip

M = "example.com/cachable"
INFO = json.dumps({"Version": "v1.0.0", "Time": "2024-01-02T03:04:05Z"}).encode()
MOD = f"module {M}\n".encode()
#: Several of memory storage's 256 KiB chunks: a range starts and ends inside them.
ZIP = module_zip(M, "v1.0.0", {f"f{i}.go": os.urandom(100_000) for i in range(7)})
LAST_MODIFIED = "Tue, 02 Jan 2024 03:04:05 GMT"
IMMUTABLE = "public, max-age=31536000, immutable"
TARGETS = {"info": (f"/{M}/@v/v1.0.0.info", INFO), "mod": (f"/{M}/@v/v1.0.0.mod", MOD),
           "zip": (f"/{M}/@v/v1.0.0.zip", ZIP)}
LIST, LATEST = f"/{M}/@v/list", f"/{M}/@latest"
#: What the origin knows beyond the store.
ORIGIN_ONLY = "v1.1.0"


@pytest_twisted.async_yield_fixture
async def proxy(tmp_path):
    """A proxy over a store holding M v1.0.0, whose origin also knows v1.1.0; ``storage`` disk or memory."""
    started = []

    async def make(storage_kind: str = "disk", **options):
        storage = DiskStorage(str(tmp_path / f"s{len(started)}")) if storage_kind == "disk" else MemoryStorage()
        await storage.save(M, "v1.0.0", INFO, MOD, once(ZIP))
        fetcher = FakeFetcher()
        fetcher.add(M, ORIGIN_ONLY, module_zip(M, ORIGIN_ONLY))
        latest = json.dumps({"Version": ORIGIN_ONLY, "Time": "2024-02-02T00:00:00Z"}).encode()
        fetcher.listings[M] = Listing(("v1.0.0", ORIGIN_ONLY), latest)
        policy = options.pop("policy", DownloadPolicy())
        origin = Origin(fetcher, Stash(fetcher, storage), ListCache(fetcher, Clock()), policy)
        served = serve(make_site(storage, None, origin, **options))
        started.append(served)
        return served.port.getHost().port, served.port.factory.hits, fetcher

    yield make
    for served in started:
        await served.close()


def get(port: int, target: str, headers: dict[str, str] | None = None, method: str = "GET") -> rawhttp.RawResponse:
    return rawhttp.get(port, target, method, headers)


@pytest_twisted.ensureDeferred
async def test_each_answer_says_how_long_a_cache_may_keep_it(proxy):
    port, _, _ = await proxy(list_max_age=30)
    for kind, (target, data) in TARGETS.items():
        answer = await deferToThread(get, port, target)
        assert (answer.status, answer.body) == (200, data)
        assert answer.headers["cache-control"] == IMMUTABLE, kind
        assert answer.headers["last-modified"] == LAST_MODIFIED, kind  # the version's time, on every node alike
        assert answer.headers["etag"].startswith('"'), kind
    tags = {kind: (await deferToThread(get, port, target)).headers["etag"] for kind, (target, _) in TARGETS.items()}
    assert len(set(tags.values())) == 3
    for target in (LIST, LATEST, f"/{M}/@v/master.info"):
        answer = await deferToThread(get, port, target)
        assert answer.status == 200
        assert answer.headers["cache-control"] == "public, max-age=30", target  # ListCacheTTL
        assert "etag" in answer.headers and "last-modified" not in answer.headers
    # The origin says no such module: a cache may keep that briefly, as proxy.golang.org does.
    missing = await deferToThread(get, port, "/example.com/unknown/@v/v1.0.0.info")
    assert (missing.status, missing.headers["cache-control"]) == (404, "public, max-age=60")
    # Bad requests and other errors: kept by no cache.
    bad = await deferToThread(get, port, f"/{M}/@v/not-a-version.zip")
    assert (bad.status, bad.headers["cache-control"]) == (400, "no-store")
    assert "etag" not in bad.headers


@pytest_twisted.ensureDeferred
async def test_answers_that_will_change_soon_are_kept_by_no_cache(proxy):
    other = "example.com/elsewhere"
    policy = DownloadPolicy(Mode.SYNC, "", (Rule(M, Mode.ASYNC, ""), Rule(other, Mode.REDIRECT, "http://b.example")))
    port, _, fetcher = await proxy(policy=policy)
    fetching = await deferToThread(get, port, f"/{M}/@v/{ORIGIN_ONLY}.zip")  # async: fetched in the background
    assert (fetching.status, fetching.headers["cache-control"]) == (404, "no-store")
    redirected = await deferToThread(get, port, f"/{other}/@v/v1.0.0.info")
    assert (redirected.status, redirected.headers["cache-control"]) == (301, "no-store")


@pytest_twisted.ensureDeferred
async def test_with_basic_auth_no_shared_cache_may_hand_answers_to_others(proxy):
    port, _, _ = await proxy(basic_auth=("builder", "s3cret"))
    good = {"Authorization": "Basic YnVpbGRlcjpzM2NyZXQ="}
    for headers in (good, good):  # the full path, then the hit path
        answer = await deferToThread(get, port, TARGETS["zip"][0], headers)
        assert answer.headers["cache-control"] == "max-age=31536000, immutable"
    assert (await deferToThread(get, port, LIST, good)).headers["cache-control"] == "max-age=60"
    refused = await deferToThread(get, port, LIST)
    assert (refused.status, refused.headers["cache-control"]) == (401, "no-store")


@pytest.mark.parametrize("kind", ["info", "mod", "zip", "list"])
@pytest_twisted.ensureDeferred
async def test_conditional_requests_are_answered_304_by_the_full_path(proxy, kind):
    port, hits, _ = await proxy()
    target, data = TARGETS[kind] if kind != "list" else (LIST, b"v1.0.0\nv1.1.0\n")
    first = await deferToThread(get, port, target)
    again = await deferToThread(get, port, target)
    assert first.body == again.body == data
    tag, answered = first.headers["etag"], hits.answered  # (the second came from the hit path)
    modified = first.headers.get("last-modified")

    async def status(headers, method="GET"):
        answer = await deferToThread(get, port, target, headers, method)
        if answer.status == 304:
            assert answer.body == b"" and "content-length" not in answer.headers
            assert (answer.headers["etag"], answer.headers["cache-control"]) == (tag, first.headers["cache-control"])
        else:
            assert answer.body == (data if method == "GET" else b"")
        return answer.status

    assert await status({"If-None-Match": tag}) == 304
    assert await status({"If-None-Match": tag}, "HEAD") == 304
    assert await status({"If-None-Match": f'"other", W/{tag}'}) == 304  # weak comparison
    assert await status({"If-None-Match": "*"}) == 304
    assert await status({"If-None-Match": '"other"'}) == 200
    if modified is not None:
        assert await status({"If-Modified-Since": modified}) == 304
        assert await status({"If-Modified-Since": "Thu, 01 Jan 2015 00:00:00 GMT"}) == 200
        assert await status({"If-Modified-Since": "yesterday"}) == 200  # not a date: ignored
        assert await status({"If-None-Match": '"other"', "If-Modified-Since": modified}) == 200  # the tag decides
    assert hits.answered == answered, "no conditional request was answered with the remembered 200"


@pytest.mark.parametrize("storage_kind", ["disk", "memory"])
@pytest_twisted.ensureDeferred
async def test_ranges_of_a_zip(proxy, storage_kind):
    port, hits, _ = await proxy(storage_kind)
    target = TARGETS["zip"][0]
    whole = await deferToThread(get, port, target)
    size, tag = len(ZIP), whole.headers["etag"]
    assert whole.headers["accept-ranges"] == "bytes"
    answered = hits.answered

    async def ask(headers, method="GET"):
        return await deferToThread(get, port, target, headers, method)

    for spec, (start, end) in {"bytes=0-99": (0, 99), "bytes=300000-": (300000, size - 1), "bytes=-50": (size - 50, size - 1),
                               "bytes=262143-262144": (262143, 262144), f"bytes=5-{size * 2}": (5, size - 1),
                               "bytes=-999999999": (0, size - 1)}.items():
        answer = await ask({"Range": spec})
        assert answer.status == 206, spec
        assert answer.body == ZIP[start:end + 1], spec
        assert answer.headers["content-range"] == f"bytes {start}-{end}/{size}", spec
        assert int(answer.headers["content-length"]) == end - start + 1
        assert (answer.headers["etag"], answer.headers["cache-control"]) == (tag, IMMUTABLE)
    for spec in ("bytes=0-9,20-29", "bytes=9-0", "items=0-9", "bytes=x-y"):
        answer = await ask({"Range": spec})
        assert (answer.status, answer.body) == (200, ZIP), spec  # several ranges or none we read: the whole zip
    for spec in (f"bytes={size}-", "bytes=-0"):
        answer = await ask({"Range": spec})
        assert answer.status == 416, spec
        assert answer.headers["content-range"] == f"bytes */{size}"
    # If-Range: the range if the client's copy is this one, else the whole zip.
    assert (await ask({"Range": "bytes=0-9", "If-Range": tag})).body == ZIP[:10]
    assert (await ask({"Range": "bytes=0-9", "If-Range": LAST_MODIFIED})).body == ZIP[:10]
    for stale in ('"other"', f"W/{tag}", "Thu, 01 Jan 2015 00:00:00 GMT"):
        answer = await ask({"Range": "bytes=0-9", "If-Range": stale})
        assert (answer.status, answer.body) == (200, ZIP), stale
    head = await ask({"Range": "bytes=0-9"}, "HEAD")  # ranges are for GET only
    assert (head.status, head.headers["content-length"]) == (200, str(size))
    assert hits.answered == answered, "no range request was answered with the remembered 200"


@pytest_twisted.ensureDeferred
async def test_disable_module_fetch_answers_from_the_store_alone(proxy):
    port, hits, fetcher = await proxy()
    cache_only = {"Disable-Module-Fetch": "true"}
    normal_list = await deferToThread(get, port, LIST)
    assert normal_list.body == b"v1.0.0\nv1.1.0\n"  # (and the hit path remembers it)
    calls = len(fetcher.calls)
    for kind, (target, data) in TARGETS.items():
        answer = await deferToThread(get, port, target, cache_only)
        assert (answer.status, answer.body, answer.headers["cache-control"]) == (200, data, IMMUTABLE), kind
    listed = await deferToThread(get, port, LIST, cache_only)
    assert (listed.status, listed.body, listed.headers["cache-control"]) == (200, b"v1.0.0\n", "no-store")
    latest = await deferToThread(get, port, LATEST, cache_only)
    assert (latest.status, json.loads(latest.body)["Version"], latest.headers["cache-control"]) == (
        200, "v1.0.0", "no-store")
    for target in (f"/{M}/@v/{ORIGIN_ONLY}.info", f"/{M}/@v/{ORIGIN_ONLY}.mod", f"/{M}/@v/{ORIGIN_ONLY}.zip",
                   f"/{M}/@v/master.info", "/example.com/unknown/@v/list", "/example.com/unknown/@latest"):
        answer = await deferToThread(get, port, target, cache_only)
        assert (answer.status, answer.headers["cache-control"]) == (404, "no-store"), target
    assert len(fetcher.calls) == calls, "nothing was fetched"
    assert hits.answered == 0, "the hit path hands cache-only requests to the full path"
    for value in ("false", "0", "yes"):  # anything but Go's true spellings: an ordinary request
        answer = await deferToThread(get, port, f"/{M}/@v/{ORIGIN_ONLY}.info", {"Disable-Module-Fetch": value})
        assert answer.status == 200, value
