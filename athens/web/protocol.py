"""
The GOPROXY protocol served from storage.

One catch-all route parses ``<module>/@v/<file>`` and ``<module>/@latest``
itself: module paths contain slashes, and every part is validated by
:mod:`athens.module` before storage sees it.  Bad input is a 400, a missing
version a 404, a store that is down a 503, each with a one-line
``text/plain`` reason the go command prints.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import attrs
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from athens.module import (
    InvalidInput,
    ModuleVersion,
    check_version,
    decode_module,
    decode_version,
    is_pseudo_version,
    parse_semver,
    sort_versions,
)
from athens.storage.interface import IStorage, NotFound, StorageUnavailable
from athens.web.responses import JSON, TEXT, ZIP, body, text
from athens.web.streaming import write_stream

log = Logger()


@attrs.frozen
class Request:
    """A parsed protocol request: what is asked for, of which module."""

    kind: str  # list, info, mod, zip, latest
    module: str
    version: str = ""


def parse(path: str) -> Request | None:
    """Parse the path after the leading ``/``; None if it is not a protocol path."""
    if path.endswith("/@latest"):
        return Request("latest", decode_module(path[: -len("/@latest")]))
    module, sep, file = path.rpartition("/@v/")
    if not sep:
        return None
    if file == "list":
        return Request("list", decode_module(module))
    for ext in ("info", "mod", "zip"):
        if file.endswith("." + ext):
            mod = decode_module(module)
            version = decode_version(file[: -len(ext) - 1])
            if ext != "info":
                check_version(mod, version)
            return Request(ext, mod, version)
    return None


def latest_of(versions: list[str]) -> str | None:
    """The version ``@latest`` names: newest release, else pre-release, else pseudo-version."""
    ordered = sort_versions(versions)
    for keep in (
        lambda v: not is_pseudo_version(v) and not parse_semver(v).prerelease,  # type: ignore[union-attr]
        lambda v: not is_pseudo_version(v),
        lambda v: True,
    ):
        chosen = [v for v in ordered if keep(v)]
        if chosen:
            return chosen[-1]
    return None


@attrs.define
class ProtocolResource:
    """The handlers of the protocol routes; storage comes in, nothing else is reached."""

    storage: IStorage

    async def handle(self, request: IRequest, path: str) -> bytes | None:
        try:
            req = parse(path)
            if req is None:
                return text(request, f"not found: {path!r} is not a module proxy path", 404)
            handler: Callable[[IRequest, Request], Awaitable[bytes | None]] = getattr(self, "_" + req.kind)
            return await handler(request, req)
        except InvalidInput as e:
            return text(request, f"bad request: {e}", 400)
        except NotFound as e:
            return text(request, f"not found: {e}", 404)
        except StorageUnavailable as e:
            log.warn("storage unavailable: {error}", error=str(e))
            return text(request, f"storage unavailable: {e}", 503)

    async def _list(self, request: IRequest, req: Request) -> bytes:
        stored = await self.storage.list(req.module)
        if not stored:
            raise NotFound(f"module {req.module} is not in the cache")
        releases = [v for v in sort_versions(stored) if not is_pseudo_version(v)]
        return body(request, TEXT, "".join(v + "\n" for v in releases).encode())

    async def _latest(self, request: IRequest, req: Request) -> bytes:
        version = latest_of(await self.storage.list(req.module))
        if version is None:
            raise NotFound(f"module {req.module} is not in the cache")
        return body(request, JSON, await self.storage.info(req.module, version))

    async def _info(self, request: IRequest, req: Request) -> bytes:
        try:
            check_version(req.module, req.version)
        except InvalidInput:
            # A query (branch, commit, v1.2): only the origin can resolve it.
            raise NotFound(f"{ModuleVersion(req.module, req.version)}: version queries need an origin") from None
        return body(request, JSON, await self.storage.info(req.module, req.version))

    async def _mod(self, request: IRequest, req: Request) -> bytes:
        return body(request, TEXT, await self.storage.go_mod(req.module, req.version))

    async def _zip(self, request: IRequest, req: Request) -> bytes | None:
        blob = await self.storage.zip(req.module, req.version)
        try:
            request.setHeader(b"content-type", ZIP)
            request.setHeader(b"content-length", b"%d" % blob.size)
            if request.method != b"HEAD":
                await write_stream(request, blob.chunks())
        except ConnectionDone:
            pass  # the client left; nothing to answer
        except Exception:
            # Headers promised blob.size bytes: cut the connection so the
            # client sees a broken transfer, never a short file with a 200.
            log.failure("reading {module}@{version}.zip failed", module=req.module, version=req.version)
            request.loseConnection()
        finally:
            blob.close()
        return None
