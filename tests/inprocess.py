"""Serve a resource on a real loopback port inside the test's reactor, and talk to it with treq."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import treq
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import IResource

from athens.web.site import ProxySite


@attrs.define
class Served:
    port: Any
    pool: HTTPConnectionPool
    #: Ask every GET and HEAD twice and check the second answer (from the hit path, if it remembered the first) is
    #: the same: the ``both_paths`` fixture turns it on, so protocol tests run through both paths.
    repeat: ClassVar[bool] = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"

    async def get(self, path: str, method: str = "GET") -> tuple[int, bytes, Any]:
        response = await treq.request(method, self.url + path, allow_redirects=False, pool=self.pool)
        content = await response.content()
        hits = getattr(self.port.factory, "hits", None)
        if self.repeat and response.code == 200 and hits is not None and ("/@v/" in path or "/@latest" in path):
            before = hits.answered
            again = await treq.request(method, self.url + path, allow_redirects=False, pool=self.pool)
            assert (again.code, await again.content()) == (response.code, content), path
            for name in ("content-type", "content-length", "etag", "last-modified", "cache-control", "accept-ranges"):
                assert again.headers.getRawHeaders(name) == response.headers.getRawHeaders(name), (path, name)
            assert again.headers.getRawHeaders("x-request-id") != response.headers.getRawHeaders("x-request-id")
            remembered = hits.answers.get(("/" + path.lstrip("/")).encode()) is not None
            assert hits.answered == before + remembered, path
        return response.code, content, response

    async def close(self) -> None:
        await self.pool.closeCachedConnections()
        await self.port.stopListening()


def serve(resource: IResource | ProxySite, metrics: Any = None) -> Served:
    """Serve a site (:func:`athens.web.app.make_site`: with the hit path), or a bare resource (without it)."""
    from twisted.internet import reactor

    site = resource if isinstance(resource, ProxySite) else ProxySite(resource, metrics)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    return Served(port, HTTPConnectionPool(reactor, persistent=False))
