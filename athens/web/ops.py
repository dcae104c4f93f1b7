"""Operations endpoints: liveness, readiness, version, catalog and robots.txt (the home page: status.py)."""

from __future__ import annotations

import json
import os
import platform
from typing import Callable

import attrs
import twisted
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from athens import __version__
from athens.storage.interface import IStorage
from athens.web.responses import JSON, body, text

log = Logger()

#: How long /readyz waits for the store before calling it not ready.
READY_TIMEOUT = 5.0


#: Athens' /catalog page size: default and largest.
CATALOG_PAGE = 1000
DEFAULT_ROBOTS = b"User-agent: *\nDisallow: /\n"


@attrs.define
class OpsResource:
    storage: IStorage
    clock: object = attrs.field(default=None)
    robots: bytes = DEFAULT_ROBOTS
    #: More to say on /readyz, a phrase each (the vulnerability database's age); none makes it not ready.
    details: tuple[Callable[[], str], ...] = ()

    async def catalog(self, request: IRequest) -> bytes:
        """Athens' paging: ``?token=&pagesize=`` -> ``{"modules": [...], "next": "..."}``."""
        token = _arg(request, b"token")
        size_text = _arg(request, b"pagesize") or str(CATALOG_PAGE)
        if not size_text.isdigit() or not 0 < int(size_text) <= CATALOG_PAGE:
            return text(request, f"bad request: pagesize must be 1 to {CATALOG_PAGE}", 400)
        if len(token) > 2048 or "\x00" in token:
            return text(request, "bad request: invalid token", 400)
        page = await self.storage.catalog(token, int(size_text))
        payload = {"modules": [{"module": i.path, "version": i.version} for i in page.items], "next": page.next_token}
        return body(request, JSON, json.dumps(payload).encode())

    def robots_txt(self, request: IRequest) -> bytes:
        return body(request, b"text/plain; charset=utf-8", self.robots)

    def healthz(self, request: IRequest) -> bytes:
        return text(request, "OK")

    async def readyz(self, request: IRequest) -> bytes:
        d: Deferred[None] = self.storage.ping()
        if self.clock is not None:
            d.addTimeout(READY_TIMEOUT, self.clock)
        try:
            await d
        except Exception as e:
            log.warn("readiness check failed: {error}", error=repr(e))
            return text(request, f"not ready: {self.storage.name} storage: {e or type(e).__name__}", 503)
        return text(request, "; ".join(["OK", *(detail() for detail in self.details)]))

    def version(self, request: IRequest) -> bytes:
        info = {
            "version": __version__,
            "implementation": "athens-py",
            "python": platform.python_version(),
            "twisted": twisted.__version__,
            "storage": self.storage.name,
            "pid": os.getpid(),
        }
        return body(request, JSON, json.dumps(info).encode() + b"\n")


def _arg(request: IRequest, name: bytes) -> str:
    values = request.args.get(name) or [b""]
    return values[0].decode("utf-8", "replace")
