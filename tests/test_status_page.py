"""The status page at ``/``: what it says, how fresh its figures are, and an operator's HomeTemplatePath."""

from __future__ import annotations

import html
import re
import time

from typing import Any

import pytest
import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from athens import config
from athens.metrics import Metrics
from athens.stash import Fill
from athens.storage.memory import MemoryStorage
from athens.storage.summary import Summary, SummaryCache
from athens.web.app import make_resource, make_site
from athens.web.status import ClientSettings, StatusPage
from tests.sumdb.test_verifier import make_key
from tests.inprocess import serve
from tests.test_web import get, seed


def page_client(storage, page: StatusPage, path_prefix: str = "") -> StubTreq:
    """In memory, for tests that drive a Clock (``flush()`` delivers what a Deferred finished later)."""
    return StubTreq(make_resource(storage, path_prefix=path_prefix, metrics=page.metrics, home=page))


async def view(storage, page: StatusPage, path: str = "/", headers: dict[str, str] | None = None,
               path_prefix: str = "") -> tuple[int, Any, bytes]:
    """Over a real loopback connection (the template file is read in a thread)."""
    served = serve(make_site(storage, path_prefix=path_prefix, metrics=page.metrics, home=page))
    try:
        response = await treq.get(served.url + path, headers=headers, pool=served.pool)
        return response.code, response.headers, await response.content()
    finally:
        await served.close()


def text_of(content: bytes) -> str:
    """The page's words, tags out and spaces folded: what a reader sees."""
    return " ".join(re.sub(r"<[^>]+>", " ", content.decode()).split())


@pytest_twisted.ensureDeferred
async def test_the_page_says_how_to_point_the_go_command_here():
    storage = MemoryStorage()
    page = StatusPage(storage, client=ClientSettings("/athens", ("corp.example.com/*", "git.corp/x")))
    client = page_client(storage, page, "/athens")
    response, content = await get(client, "/athens/")
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
    assert response.headers.getRawHeaders("cache-control") == ["no-store"]
    assert "default-src 'none'" in response.headers.getRawHeaders("content-security-policy")[0]
    assert b"<pre>export GOPROXY=http://proxy/athens,direct\nexport GONOSUMDB=corp.example.com/*,git.corp/x</pre>" \
        in content
    assert b"GOSUMDB=" not in content.replace(b"GONOSUMDB=", b"")
    assert "for sum.golang.org go through this proxy" in text_of(content)
    for link in ("/athens/catalog", "/athens/index", "/athens/metrics"):
        assert f'href="{link}"'.encode() in content
    response = await client.get("http://proxy/athens/", headers={"X-Forwarded-Proto": "https"})
    assert b"export GOPROXY=https://proxy/athens,direct" in await response.content()


def test_gosumdb_is_shown_when_the_proxy_carries_another_checksum_database():
    _, vkey = make_key("sum.example.com")
    other = config.load(environ={"ATHENS_SUM_DBS": "https://sum.example.com", "ATHENS_SUM_DB_KEYS": vkey})
    assert ClientSettings.from_config(other).gosumdb == vkey
    assert ClientSettings.from_config(other).sumdbs == ("sum.example.com",)
    assert ClientSettings.from_config(config.load(environ={})).gosumdb == ""  # sum.golang.org: the default


@pytest_twisted.ensureDeferred
async def test_with_the_organisations_checksum_database_gosumdb_names_it_here_and_nothing_is_private():
    storage = MemoryStorage()
    page = StatusPage(storage, client=ClientSettings("/athens", ("git.corp/x",), own_sumdb="sum.corp.example",
                                                     own_sumdb_key="sum.corp.example+01020304+KEY"))
    _, content = await get(page_client(storage, page, "/athens"), "/athens/")
    assert '<pre>export GOPROXY=http://proxy/athens,direct\nexport GOSUMDB="sum.corp.example+01020304+KEY ' \
           'http://proxy/athens/sumdb/sum.corp.example"</pre>' in html.unescape(content.decode())  # ("+" is &#43;)
    assert b"GONOSUMDB=" not in content
    assert "runs the organisation's checksum database sum.corp.example" in text_of(content)


@pytest_twisted.ensureDeferred
async def test_without_a_checksum_database_and_with_basic_auth():
    storage = MemoryStorage()
    page = StatusPage(storage, client=ClientSettings(sumdbs=(), basic_auth=True))
    _, content = await get(page_client(storage, page), "/")
    assert b"export GOPROXY=http://USER:PASSWORD@proxy,direct" in content
    assert "does not carry checksum database traffic" in text_of(content)


@pytest_twisted.ensureDeferred
async def test_counts_size_hit_ratio_origin_failures_and_recent_fills():
    storage = MemoryStorage()
    await seed(storage, "example.com/a", ("v1.0.0", "v1.1.0"))
    await seed(storage, "example.com/b", ("v0.1.0",))
    metrics = Metrics()
    metrics.cache.labels("hit").inc(2)
    metrics.served_hit("zip", 200, 100)  # the hit path's count joins the counters
    metrics.cache.labels("miss").inc(1)
    for outcome in ("stored", "stored", "not_found", "error"):
        metrics.fetches.labels(outcome).inc()
    fills = [Fill("example.com/<script>alert(1)</script>", "v1.0.0", time.time() - 90, 2.5),
             Fill("example.com/a", "v1.1.0", time.time() - 30, 0.25)]
    page = StatusPage(storage, metrics=metrics, fills=lambda: fills)
    response, content = await get(page_client(storage, page), "/")
    words = text_of(content)
    assert "3 versions" in words and "2 modules" in words
    assert "bytes held in memory" in words and re.search(r"\d+\.\d MiB bytes held", words)
    assert "75.0% hit ratio (3 hits, 1 misses)" in words
    assert "2 versions fetched and stored 1 not found at the origin 1 origin failures" in words
    assert "<script>alert" not in content.decode() and "&lt;script&gt;alert(1)&lt;/script&gt;" in content.decode()
    assert re.search(r"example\.com/a v1\.1\.0 \d+ s ago 0\.2 s", words)
    assert "Counted 0.0 s ago" in words


@pytest_twisted.ensureDeferred
async def test_the_store_is_counted_once_per_max_age_never_per_view():
    clock = Clock()
    counts: list[Deferred[Summary]] = []

    def count() -> Deferred[Summary]:
        counts.append(Deferred())
        return counts[-1]

    storage = MemoryStorage()
    page = StatusPage(storage, clock, summaries=SummaryCache(count, clock.seconds, max_age=300))
    client = page_client(storage, page)
    first = client.get("http://proxy/")
    counts[0].callback(Summary(4, 7, 1 << 20, "files under the root"))
    client.flush()
    assert "7 versions" in text_of(await (await first).content())
    for _ in range(3):
        clock.advance(100)
        _, content = await get(client, "/")
    assert len(counts) == 2  # 300 s passed: the fourth view started a count
    words = text_of(content)
    assert "7 versions" in words and "1.0 MiB files under the root" in words and "Counted 5 min ago" in words
    counts[1].callback(Summary(5, 9))
    _, content = await get(client, "/")
    words = text_of(content)
    assert "9 versions" in words and "size unknown for this storage" in words and "Counted 0.0 s ago" in words
    assert len(counts) == 2


@pytest_twisted.ensureDeferred
async def test_the_first_view_waits_a_little_then_says_counting_and_a_failed_count_says_why():
    clock = Clock()
    pending: Deferred[Summary] = Deferred()
    storage = MemoryStorage()
    page = StatusPage(storage, clock, summaries=SummaryCache(lambda: pending, clock.seconds))
    client = page_client(storage, page)
    answer = client.get("http://proxy/")
    clock.advance(page.first_count_wait)
    client.flush()
    assert "Counting now: reload in a moment" in text_of(await (await answer).content())
    pending.errback(RuntimeError("the store is down"))
    _, content = await get(client, "/")
    assert "The last count failed: the store is down" in text_of(content)


ATHENS_STYLE = """<!DOCTYPE html>
<html><body>
<h1>Our proxy</h1>
<pre>GOPROXY={{ .Host }},direct</pre>
{{ if .NoSumPatterns }}<pre>GONOSUMDB={{ .NoSumPatterns }}</pre>{{ end }}
<a href="{{ .Host }}/catalog">catalog</a>
</body></html>
"""


@pytest_twisted.ensureDeferred
async def test_an_athens_home_template_replaces_the_page_and_edits_show_at_once(tmp_path):
    template = tmp_path / "home.html"
    template.write_text(ATHENS_STYLE)
    storage = MemoryStorage()
    page = StatusPage(storage, client=ClientSettings(no_sum_patterns=("a<b",)), template_path=str(template))
    code, headers, content = await view(storage, page, headers={"Host": "proxy"})
    assert code == 200 and headers.getRawHeaders("content-security-policy") is None
    assert content.decode() == ATHENS_STYLE.replace("{{ .Host }}", "http://proxy").replace(
        "{{ if .NoSumPatterns }}", "").replace("{{ .NoSumPatterns }}", "a&lt;b").replace("{{ end }}", "")
    template.write_text("<p>{{ .Version }} {{ .Storage }} {{ .Modules }}</p>")
    _, _, content = await view(storage, page)
    assert content == b"<p>0.1.0 memory 0</p>"
    template.write_text("<p>\n\n{{ printf \"%s\" .Host }}</p>")
    code, _, content = await view(storage, page)
    assert code == 500 and b"line 3" in content and str(template).encode() in content
    template.unlink()  # no file: athens-py's own page, as Athens shows its own
    _, _, content = await view(storage, page)
    assert b"athens-py Go module proxy" in content


@pytest_twisted.ensureDeferred
async def test_an_unreadable_home_template_falls_back_to_the_built_in_page(tmp_path):
    storage = MemoryStorage()
    page = StatusPage(storage, template_path=str(tmp_path))  # a directory
    code, _, content = await view(storage, page)
    assert code == 200 and b"athens-py Go module proxy" in content


@pytest.mark.parametrize("host", ['evil"><script>x()</script>', "a'b+c"])
@pytest_twisted.ensureDeferred
async def test_a_hostile_host_header_is_escaped(host):
    storage = MemoryStorage()
    page = StatusPage(storage)
    _, _, content = await view(storage, page, headers={"Host": host})
    assert "<script>x()" not in content.decode() and "a'b+c" not in content.decode()
    assert b"export GOPROXY=http://" in content


def test_home_template_path_is_athens_key_with_athens_default():
    assert config.load(environ={}).home_template_path == "/var/lib/athens/home.html"
    assert config.load(environ={"ATHENS_HOME_TEMPLATE_PATH": "/etc/athens/home.html"}).home_template_path == \
        "/etc/athens/home.html"
