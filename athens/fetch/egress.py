"""
The proxy's own HTTP requests (upstreams, the checksum database, the validator
hook, pass-through) through the organisation's egress proxy, as the go command
and Athens do: ``HTTP_PROXY`` for ``http://`` URLs (absolute-form requests),
``HTTPS_PROXY`` for ``https://`` ones (a ``CONNECT`` tunnel, then TLS to the
origin itself), ``NO_PROXY`` for exceptions.  ``localhost``, ``127.0.0.1`` and
``::1`` never go through a proxy.
"""

from __future__ import annotations

import urllib.request
from typing import Any, Mapping
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ProxyAgent
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

_LOOPBACK = ("localhost", "127.0.0.1", "::1")


@attrs.frozen
class ProxySettings:
    """The egress proxies of the environment (upper or lower case names, as the go command reads them)."""

    http: str = ""
    https: str = ""
    no_proxy: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "ProxySettings":
        def get(name: str) -> str:
            return environ.get(name) or environ.get(name.lower()) or ""

        return cls(get("HTTP_PROXY"), get("HTTPS_PROXY"), get("NO_PROXY"))

    def proxy_for(self, url: str) -> str:
        """The proxy URL for ``url``, or ``""`` to go direct."""
        parts = urlsplit(url)
        proxy = self.https if parts.scheme == "https" else self.http if parts.scheme == "http" else ""
        host = parts.hostname or ""
        if not proxy or host in _LOOPBACK:
            return ""
        if self.no_proxy and urllib.request.proxy_bypass_environment(host, {"no": self.no_proxy}):
            return ""
        return proxy if "://" in proxy else "http://" + proxy


def _endpoint(reactor: Any, proxy: str) -> HostnameEndpoint:
    parts = urlsplit(proxy)
    return HostnameEndpoint(reactor, parts.hostname or "", parts.port or 80)


class _Tunnel(Protocol):
    """Asks the proxy to ``CONNECT``; once it says 200, the connection is the origin's (``factory``'s protocol)."""

    def __init__(self, target: bytes, factory: Factory, ready: Deferred[Protocol]) -> None:
        # (not ``self.factory``: the factory that builds this protocol sets that attribute)
        self.target, self.origin_factory, self.ready = target, factory, ready
        self.buffer = b""

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self.transport.write(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.target, self.target))

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            if len(self.buffer) > 16 << 10:
                self._refused(b"an endless answer")
            return
        status = head.split(b"\r\n", 1)[0]
        if status.split(b" ")[1:2] != [b"200"]:
            self._refused(status)
            return
        protocol = self.origin_factory.buildProtocol(self.transport.getPeer())
        self.transport.protocol = protocol  # from now on the transport's bytes are the origin's
        protocol.makeConnection(self.transport)
        if rest:
            protocol.dataReceived(rest)
        self.ready.callback(protocol)

    def _refused(self, why: bytes) -> None:
        self.transport.loseConnection()
        if not self.ready.called:
            self.ready.errback(ConnectionError(f"the proxy refused CONNECT {self.target.decode()}: "
                                               f"{why.decode('ascii', 'replace')[:200]}"))

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        if not self.ready.called:
            self.ready.errback(reason)


@implementer(IStreamClientEndpoint)
@attrs.frozen
class ConnectEndpoint:
    """A connection to ``host:port`` through an HTTP proxy's ``CONNECT`` (TLS is added around it)."""

    proxy: IStreamClientEndpoint
    host: str
    port: int

    def connect(self, factory: Factory) -> Deferred[Protocol]:
        ready: Deferred[Protocol] = Deferred()
        target = f"{self.host}:{self.port}".encode("ascii")
        tunnel = Factory.forProtocol(lambda: _Tunnel(target, factory, ready))
        self.proxy.connect(tunnel).addErrback(lambda f: ready.errback(f) if not ready.called else None)
        return ready


@implementer(IAgentEndpointFactory)
@attrs.frozen
class _Tunnels:
    reactor: Any
    proxy: str
    tls: IPolicyForHTTPS

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:  # noqa: N802 - Twisted's name
        host = uri.host.decode("ascii")
        inner = ConnectEndpoint(_endpoint(self.reactor, self.proxy), host, uri.port)
        return wrapClientTLS(self.tls.creatorForNetloc(uri.host, uri.port), inner)


@implementer(IAgent)
@attrs.define
class EgressAgent:
    """Direct, through ``HTTP_PROXY``, or through a ``CONNECT`` tunnel, per request URL."""

    reactor: Any
    pool: HTTPConnectionPool
    settings: ProxySettings
    tls: IPolicyForHTTPS = attrs.field(factory=BrowserLikePolicyForHTTPS)
    _agents: dict[str, IAgent] = attrs.field(factory=dict)

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Deferred[Any]:
        proxy = self.settings.proxy_for(uri.decode("ascii"))
        return self._agent(proxy, uri.startswith(b"https:")).request(method, uri, headers, bodyProducer)

    def _agent(self, proxy: str, tls: bool) -> IAgent:
        key = f"{proxy}|{tls}"
        agent = self._agents.get(key)
        if agent is None:
            if not proxy:
                agent = Agent(self.reactor, self.tls, pool=self.pool)
            elif tls:
                agent = Agent.usingEndpointFactory(self.reactor, _Tunnels(self.reactor, proxy, self.tls), pool=self.pool)
            else:
                agent = ProxyAgent(_endpoint(self.reactor, proxy), self.reactor, pool=self.pool)
            self._agents[key] = agent
        return agent


def via(pool: HTTPConnectionPool) -> dict[str, Any]:
    """treq's keyword for a pool made by :func:`athens.fetch.upstream.make_pool`: its egress agent."""
    agent = getattr(pool, "egress", None)
    return {"agent": agent} if agent is not None else {"pool": pool}
