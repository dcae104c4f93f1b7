"""Operations endpoints: liveness, readiness, version, catalog, index and robots.txt (the home page: status.py)."""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import datetime, timedelta, timezone
from typing import Callable

import attrs
import twisted
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from athens import __version__
from athens.storage.interface import IndexLine, IStorage, StorageError, StorageUnavailable
from athens.web.responses import JSON, body, text

log = Logger()

#: How long /readyz waits for the store before calling it not ready.
READY_TIMEOUT = 5.0


#: Athens' /catalog page size: default and largest.
CATALOG_PAGE = 1000
#: Athens' /index default ``limit``; a larger one is cut to INDEX_MAX (Athens has no bound).
INDEX_LIMIT = 2000
INDEX_MAX = 100_000
#: What Go's time.Parse(time.RFC3339, ...) takes: a date, ``T``, a time (fraction optional) and ``Z`` or an offset.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
DEFAULT_ROBOTS = b"User-agent: *\nDisallow: /\n"


@attrs.define
class OpsResource:
    storage: IStorage
    clock: object = attrs.field(default=None)
    robots: bytes = DEFAULT_ROBOTS
    #: ``IndexType = "none"``: /index answers nothing, as Athens' no-op index does.
    index_enabled: bool = True
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

    async def index(self, request: IRequest) -> bytes:
        """
        Athens' ``/index?since=<RFC3339>&limit=N``: one JSON line a version
        (``Path``, ``Version``, ``Timestamp`` of its save), oldest first, from
        ``since`` (inclusive) on; ``limit`` 2000 by default.
        """
        limit_text = _arg(request, b"limit")
        since_text = _arg(request, b"since")
        if limit_text and (not re.fullmatch(r"\+?\d{1,12}", limit_text) or int(limit_text) <= 0):
            return text(request, f"bad request: limit must be a positive integer, not {limit_text[:40]!r}", 400)
        since = 0.0
        if since_text:
            try:
                since = _parse_rfc3339(since_text)
            except ValueError:
                return text(request, f"bad request: since must be an RFC 3339 time, not {since_text[:40]!r}", 400)
        limit = min(int(limit_text) if limit_text else INDEX_LIMIT, INDEX_MAX)
        lines: list[IndexLine] = []
        if self.index_enabled:
            try:
                lines = await self.storage.index(since, limit)
            except StorageError as e:
                if not isinstance(e, StorageUnavailable):
                    log.error("storage error: {error}", error=str(e))
                return text(request, f"storage unavailable: {e}", 503)
        data = b"".join(json.dumps({"Path": i.path, "Version": i.version, "Timestamp": _rfc3339(i.saved)},
                                   separators=(",", ":")).encode() + b"\n" for i in lines)
        return body(request, b"application/json; charset=utf-8", data)

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


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _parse_rfc3339(value: str) -> float:
    if not _RFC3339.match(value):
        raise ValueError(value)
    whole, dot, rest = value.partition(".")
    if dot:  # Python takes at most 6 digits of a second's fraction; Go, 9
        digits = re.match(r"\d+", rest).group()  # type: ignore[union-attr]
        value = f"{whole}.{digits[:6]}{rest[len(digits):]}"
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _rfc3339(epoch: float) -> str:
    """
    Go's encoding of a time.Time in UTC: RFC 3339 with the fraction's
    trailing zeros cut (none if whole).  Cut to the microsecond, never
    rounded up: the line itself is in an answer ``since`` its own timestamp.
    """
    micros = int(epoch * 1_000_000)
    if micros / 1_000_000 > epoch:  # the product was rounded up
        micros -= 1
    moment = _EPOCH + timedelta(microseconds=micros)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def _arg(request: IRequest, name: bytes) -> str:
    values = request.args.get(name) or [b""]
    return values[0].decode("utf-8", "replace")
