"""
Upstream fetches through the organisation's egress proxy (a real tinyproxy):
HTTP_PROXY for http:// upstreams, a CONNECT tunnel for https:// ones,
NO_PROXY and loopback names straight.  The upstream listens on 127.0.0.2, a
loopback address that is not one of the names that always go direct.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import ssl
from twisted.web.iweb import IPolicyForHTTPS
from twisted.web.server import Site
from zope.interface import implementer

from athens.fetch.egress import EgressAgent, ProxySettings
from athens.fetch.upstream import UpstreamFetcher, make_pool
from tests.servers import start_forward_proxy
from tests.test_hostile import ERRORS, NormalisingUpstream
from tests.tls import make_certificate

V = "v0.9.1"


class Recording(NormalisingUpstream):
    """Also notes each request's ``Via`` header (tinyproxy adds one to what it forwards)."""

    def render_GET(self, request):  # noqa: N802 - Twisted's name
        self.via = getattr(self, "via", []) + [request.getHeader(b"via")]
        return super().render_GET(request)


@implementer(IPolicyForHTTPS)
class TrustOnly:
    def __init__(self, cert: bytes) -> None:
        self.authority = ssl.Certificate.loadPEM(cert)

    def creatorForNetloc(self, hostname: bytes, port: int):  # noqa: N802 - Twisted's name
        return ssl.optionsForClientTLS(hostname.decode(), trustRoot=self.authority)


@pytest_twisted.async_yield_fixture
async def egress(tmp_path):
    from twisted.internet import reactor

    proxy = start_forward_proxy(tmp_path / "proxy")
    cert, key = make_certificate(tmp_path / "tls", "127.0.0.2")
    started, pools = [], []

    def upstream(tls: bool) -> tuple[Recording, str]:
        site = Recording()
        if tls:
            options = ssl.PrivateCertificate.loadPEM(cert.read_text() + key.read_text()).options()
            port = reactor.listenSSL(0, Site(site), options, interface="127.0.0.2")
        else:
            port = reactor.listenTCP(0, Site(site), interface="127.0.0.2")
        started.append(port)
        return site, f"{'https' if tls else 'http'}://127.0.0.2:{port.getHost().port}"

    def fetcher(url: str, settings: ProxySettings) -> UpstreamFetcher:
        pool = make_pool(reactor)
        pool.egress = EgressAgent(reactor, pool, settings, TrustOnly(cert.read_bytes()))
        pools.append(pool)
        return UpstreamFetcher(url, reactor, pool, timeout=10)

    yield upstream, fetcher, proxy
    for pool in pools:
        await pool.closeCachedConnections()
    for port in started:
        await port.stopListening()
    proxy.stop()


@pytest.mark.parametrize("tls", [False, True])
@pytest_twisted.ensureDeferred
async def test_upstreams_are_reached_through_the_egress_proxy(egress, tls):
    upstream, fetcher, proxy = egress
    site, url = upstream(tls)
    settings = ProxySettings(http=proxy.url, https=proxy.url)
    assert await fetcher(url, settings).small(ERRORS, V, "mod") == site.files[f"/{ERRORS}/@v/{V}.mod"]
    log = proxy.log.read_text()
    if tls:  # a tunnel: the proxy sees only where to, the origin's own certificate is checked
        assert f"CONNECT 127.0.0.2:{url.rsplit(':', 1)[1]}" in log
    else:  # absolute-form requests: the proxy forwards them and says so
        assert site.via and b"tinyproxy" in site.via[0]


@pytest.mark.parametrize("settings", [
    ProxySettings(http="http://127.0.0.1:9", no_proxy="127.0.0.2"),  # a dead proxy, bypassed by NO_PROXY
    ProxySettings(),
])
@pytest_twisted.ensureDeferred
async def test_no_proxy_and_no_settings_go_direct(egress, settings):
    upstream, fetcher, proxy = egress
    site, url = upstream(False)
    assert await fetcher(url, settings).small(ERRORS, V, "mod") == site.files[f"/{ERRORS}/@v/{V}.mod"]
    assert site.via == [None]


def test_which_urls_use_which_proxy():
    settings = ProxySettings.from_environ({"HTTP_PROXY": "proxy.internal:3128", "https_proxy": "http://p:8080",
                                           "NO_PROXY": ".corp.example,10.0.0.1"})
    assert settings.proxy_for("http://proxy.golang.org/x") == "http://proxy.internal:3128"
    assert settings.proxy_for("https://proxy.golang.org/x") == "http://p:8080"
    for direct in ("https://mirror.corp.example/x", "http://10.0.0.1/x", "http://localhost:3000/x",
                   "http://127.0.0.1:3000/x", "http://[::1]:3000/x"):
        assert settings.proxy_for(direct) == "", direct
