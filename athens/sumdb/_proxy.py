"""
The checksum database proxy: ``/sumdb/<name>/...`` for each of ``SumDBs``.

``supported`` answers 200 for a configured database (the go command then
sends all its checksum traffic here) and 404 otherwise (it asks the
database itself).  ``lookup``, ``tile`` and ``latest`` pass through byte for
byte with the database's status and content type.  A full tile never
changes, so it is kept and served without asking the database again;
``latest`` and partial tiles (``.p/<width>``) always go through.  A lookup
of a private module (``NoSumPatterns``, ``OwnSumDB.Patterns``) is refused with 403.  The
organisation's own database, when there is one, answers under its own name.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from typing import Any, Sequence
from urllib.parse import urlsplit

import attrs
import treq
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from athens.fetch.egress import via
from athens.module import InvalidInput, unescape
from athens.policy import match_patterns
from athens.sumdb._server import OwnSumDBResource
from athens.web.responses import body, text

log = Logger()

MAX_ANSWER = 1 << 20
_FULL_TILE = re.compile(r"^tile/[0-9]+/(?:[0-9]+|data)/(?:x[0-9]{3}/)*[0-9]{3}$")
_PATH = re.compile(r"^(?:lookup/[^/].*|latest|tile/[0-9]+/(?:[0-9]+|data)/(?:x[0-9]{3}/)*[0-9]{3}(?:\.p/[0-9]+)?)$")


def sumdb_name(url: str) -> str:
    """The database's name as the go command spells it: the URL's host (and port)."""
    return urlsplit(url).netloc


@attrs.define
class TileCache:
    """Full tiles: on disk under the storage root when there is one, else a bounded LRU in memory."""

    directory: str = ""
    max_entries: int = 10000
    _memory: OrderedDict[str, bytes] = attrs.field(factory=OrderedDict)

    async def get(self, key: str) -> bytes | None:
        if not self.directory:
            data = self._memory.get(key)
            if data is not None:
                self._memory.move_to_end(key)
            return data
        return await deferToThread(_read, os.path.join(self.directory, key))

    async def put(self, key: str, data: bytes) -> None:
        if not self.directory:
            self._memory[key] = data
            while len(self._memory) > self.max_entries:
                self._memory.popitem(last=False)
            return
        await deferToThread(_write_atomically, os.path.join(self.directory, key), data)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write_atomically(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@attrs.define
class SumDBProxy:
    urls: Sequence[str]
    pool: Any
    reactor: Any
    no_sum_patterns: Sequence[str] = ()
    tiles: TileCache = attrs.field(factory=TileCache)
    timeout: float = 30.0
    #: Requests sent to the databases: observability, and tests count them.
    upstream_requests: int = 0
    #: The organisation's own database, served under its name beside the carried ones.
    own: OwnSumDBResource | None = None

    @property
    def names(self) -> dict[str, str]:
        return {sumdb_name(u): u.rstrip("/") for u in self.urls}

    async def handle(self, request: IRequest, name: str, path: str) -> bytes:
        if self.own is not None and name == self.own.name:
            return await self.own.handle(request, path)
        base = self.names.get(name)
        if path == "supported":
            if base is None:
                return text(request, f"not found: this proxy does not carry the checksum database {name}", 404)
            return text(request, "OK")
        if base is None:
            return text(request, f"not found: this proxy does not carry the checksum database {name}", 404)
        if not _PATH.match(path) or ".." in path.split("/"):
            return text(request, f"not found: {path!r} is not a checksum database path", 404)
        if path.startswith("lookup/"):
            refused = self._refused(path[len("lookup/") :])
            if refused:
                return text(request, refused, 403)
        cacheable = bool(_FULL_TILE.match(path))
        key = os.path.join(name.replace(":", "_"), path)
        if cacheable:
            cached = await self.tiles.get(key)
            if cached is not None:
                return body(request, b"application/octet-stream", cached)
        code, content_type, data = await self._fetch(f"{base}/{path}")
        if code == 200 and cacheable:
            await self.tiles.put(key, data)
        return body(request, content_type, data, code)

    def _refused(self, target: str) -> str:
        escaped_module = target.rpartition("@")[0]
        try:
            module = unescape(escaped_module)
        except InvalidInput:
            return ""
        for pattern in self.no_sum_patterns:
            if match_patterns(pattern, module):
                return (f"forbidden: {module} is private (NoSumPatterns, OwnSumDB.Patterns); its checksums are "
                        "not looked up")
        return ""

    async def _fetch(self, url: str) -> tuple[int, bytes, bytes]:
        self.upstream_requests += 1
        try:
            response = await treq.get(url, **via(self.pool), timeout=self.timeout, reactor=self.reactor,
                                      headers={"User-Agent": "athens-py"})
            if isinstance(response.length, int) and response.length > MAX_ANSWER:
                raise ValueError(f"answer over {MAX_ANSWER} bytes")
            data = await treq.content(response)
        except Exception as e:
            log.warn("checksum database {url} failed: {error}", url=url, error=str(e))
            return 502, b"text/plain; charset=utf-8", f"checksum database unreachable: {e}\n".encode()
        content_type = (response.headers.getRawHeaders(b"content-type") or [b"text/plain; charset=utf-8"])[0]
        return response.code, content_type, data
