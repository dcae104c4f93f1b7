"""Serve a resource on a real loopback port inside the test's reactor, and talk to it with treq."""

from __future__ import annotations

from typing import Any

import attrs
import treq
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import IResource

from athens.web.site import ProxySite


@attrs.define
class Served:
    port: Any
    pool: HTTPConnectionPool

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"

    async def get(self, path: str, method: str = "GET") -> tuple[int, bytes, Any]:
        response = await treq.request(method, self.url + path, allow_redirects=False, pool=self.pool)
        return response.code, await response.content(), response

    async def close(self) -> None:
        await self.pool.closeCachedConnections()
        await self.port.stopListening()


def serve(resource: IResource, metrics: Any = None) -> Served:
    from twisted.internet import reactor

    port = reactor.listenTCP(0, ProxySite(resource, metrics), interface="127.0.0.1")
    return Served(port, HTTPConnectionPool(reactor, persistent=False))
