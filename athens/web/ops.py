"""Operations endpoints: liveness, readiness (the store answers) and version."""

from __future__ import annotations

import json
import platform

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


@attrs.define
class OpsResource:
    storage: IStorage
    clock: object = attrs.field(default=None)

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
        return text(request, "OK")

    def version(self, request: IRequest) -> bytes:
        info = {
            "version": __version__,
            "implementation": "athens-py",
            "python": platform.python_version(),
            "twisted": twisted.__version__,
            "storage": self.storage.name,
        }
        return body(request, JSON, json.dumps(info).encode() + b"\n")
