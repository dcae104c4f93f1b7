"""
The GOPROXY protocol: served from storage, filled from the origin on a miss.

One catch-all route parses ``<module>/@v/<file>`` and ``<module>/@latest``
itself: module paths contain slashes, and every part is validated by
:mod:`athens.module` before storage or the origin sees it.  Every failure
becomes a status the go command acts on, with a one-line ``text/plain``
reason it prints: 400 bad input, 403 filtered, 404/410 not found (the client
falls back), 502 origin broken or unreachable, 503 store down, 504 origin
too slow.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Awaitable, Callable

import attrs
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from athens.fetch.interface import Growing, NoSmallFetch, OriginError, OriginNotFound
from athens.filter import Action
from athens.metrics import Metrics
from athens.module import (
    InvalidInput,
    ModuleVersion,
    check_version,
    decode_module,
    decode_version,
    is_canonical_version,
    is_pseudo_version,
    parse_semver,
    request_path,
    sort_versions,
)
from athens.origin import Origin
from athens.policy import Mode
from athens.storage.interface import IStorage, NotFound, StorageError, StorageUnavailable
from athens.vulndb.policy import Denied, VulnPolicy
from athens.web.answers import LIST_REPLAY, Answers
from athens.web.caching import (NO_STORE, NOT_FOUND_MAX_AGE, YEAR, Validators, content_etag, max_age, version_time,
                                zip_etag)
from athens.web.ranges import Unsatisfiable, Window, requested, window_of
from athens.web.relay import relay
from athens.web.responses import JSON, TEXT, ZIP, abort, body, text
from athens.web.streaming import write_stream
from athens.web.validator import Refused, ValidatorHook

log = Logger()


@attrs.frozen
class Request:
    """A parsed protocol request: what is asked for, of which module."""

    kind: str  # list, info, mod, zip, latest
    module: str
    version: str = ""

    @property
    def canonical(self) -> bool:
        return is_canonical_version(self.module, self.version)


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


class Redirect(Exception):
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")


class Forbidden(Exception):
    pass


class PassThrough(Exception):
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")


class Pending(NotFound):
    """Not stored yet, and being fetched in the background: a 404 no cache in front may keep."""


def fetch_disabled(request: IRequest) -> bool:
    """``Disable-Module-Fetch: true`` (Go's boolean spellings, as goproxy reads it): the cache only."""
    value = request.getHeader(b"disable-module-fetch")
    return value is not None and value.strip() in (b"1", b"t", b"T", b"true", b"TRUE", b"True")


@attrs.define
class ProtocolResource:
    """The handlers of the protocol routes. Without an origin it is a pure cache."""

    storage: IStorage
    origin: Origin | None = None
    redirect_code: int = 301
    metrics: Metrics = attrs.field(factory=Metrics)
    #: A stream-through client that leaves: the fill goes on (True) or stops if nobody else waits (False).
    fill_after_client_leaves: bool = True
    validator: ValidatorHook | None = None
    #: The hit path's memory of answers (None: no hit path).
    answers: Answers | None = None
    #: Seconds the hit path may replay a list or ``@latest`` (never longer than ``ListCacheTTL``).
    list_ttl: float = LIST_REPLAY
    #: Seconds a cache in front may keep a list, ``@latest`` or query (``ListCacheTTL``).
    list_max_age: int = 60
    #: Shared caches may keep answers (False when basic auth is on: they must not hand them to others).
    shared: bool = True
    #: ``VulnPolicy``: judges every download of a zip (None: off).
    vuln_policy: VulnPolicy | None = None
    #: When this process last recorded a use of each version: at most one write an hour per version.
    _touched: dict[tuple[str, str], float] = attrs.field(factory=dict)

    @property
    def _immutable(self) -> bytes:
        return max_age(YEAR, self.shared, immutable=True)

    def record_use(self, module: str, version: str) -> None:
        """Record the use (for garbage collection) without making the answer wait for it."""
        key = (module, version)
        now = time.monotonic()
        if now - self._touched.get(key, -TOUCH_INTERVAL) < TOUCH_INTERVAL:
            return
        if len(self._touched) > 100_000:
            self._touched.clear()
        self._touched[key] = now
        self.storage.touch(module, version).addErrback(
            lambda f: log.warn("could not record the use of {module}@{version}: {error}", module=module,
                               version=version, error=f.getErrorMessage()))

    def _remember(self, request: IRequest, req: Request, content_type: bytes, validators: Validators,
                  data: bytes = b"", path: str = "", size: int = 0) -> None:
        """Offer this 200 to the hit path, which replays it for the same target until a delete anywhere."""
        if self.answers is None or (self.validator is not None and req.version):
            return  # the validator hook is asked for every request naming a version
        if req.kind == "zip" and self.vuln_policy is not None and self.vuln_policy.flags(req.module, req.version):
            return  # a flagged zip is judged (logged, counted) at every download
        ttl = None if req.version else self.list_ttl
        self.answers.remember(request.uri, content_type, req.kind, data, path, size,
                              req.module if req.version else "", req.version, ttl, validators.lines())

    async def handle(self, request: IRequest, path: str) -> bytes | None:
        try:
            req = parse(path)
            if req is None:
                return text(request, f"not found: {path!r} is not a module proxy path", 404)
            request.module, request.module_version = req.module, req.version  # for the access line
            self._apply_filter(req)
            if self.validator is not None and req.version:
                try:
                    await self.validator.check(req.module, req.version)
                except Refused as e:
                    raise Forbidden(str(e)) from None
            mode, url = self._mode(req.module)
            if mode is Mode.PASSTHROUGH:
                if fetch_disabled(request):
                    raise NotFound(f"{req.module} is never cached (pass-through)")
                raise PassThrough(url)  # never cached: storage is not even asked
            handler: Callable[[IRequest, Request], Awaitable[bytes | None]] = getattr(self, "_" + req.kind)
            return await handler(request, req)
        except InvalidInput as e:
            return text(request, f"bad request: {e}", 400)
        except Forbidden as e:
            return text(request, f"forbidden: {e}", 403)
        except Redirect as r:
            return self._redirect(request, r.base + request_path(req.module, req.kind, req.version))
        except PassThrough as p:
            return await self._pass_through(request, p.base + request_path(req.module, req.kind, req.version))
        except NotFound as e:
            answer = text(request, f"not found: {e}", 404)
            if not isinstance(e, Pending) and not fetch_disabled(request):
                request.setHeader(b"cache-control", max_age(NOT_FOUND_MAX_AGE, self.shared))  # as proxy.golang.org does
            return answer
        except OriginError as e:
            answer = text(request, f"{_origin_words(e)}: {e}", e.status)
            if isinstance(e, OriginNotFound):
                request.setHeader(b"cache-control", max_age(NOT_FOUND_MAX_AGE, self.shared))
            return answer
        except StorageUnavailable as e:
            self.metrics.storage_errors.inc()
            log.warn("storage unavailable: {error}", error=str(e))
            return text(request, f"storage unavailable: {e}", 503)
        except StorageError as e:
            self.metrics.storage_errors.inc()
            log.error("storage error: {error}", error=str(e))
            return text(request, f"storage error: {e}", 503)

    # -- policy --

    def _apply_filter(self, req: Request) -> None:
        if self.origin is None or self.origin.filter is None:
            return
        action = self.origin.filter.action(req.module, req.version if req.kind != "list" else "")
        if action is Action.EXCLUDE:
            raise Forbidden(f"{req.module} is excluded by the filter file")
        if action is Action.DIRECT:
            raise Redirect(self.origin.global_endpoint)

    def _sync_origin(self, module: str) -> Origin | None:
        """The origin that fills ``module`` while its client waits (sync mode, not offline); None otherwise."""
        if self.origin is None or self.origin.offline or self._mode(module)[0] is not Mode.SYNC:
            return None
        return self.origin

    def _mode(self, module: str) -> tuple[Mode, str]:
        if self.origin is None:
            return Mode.NONE, ""
        return self.origin.policy.for_module(module)

    async def _pass_through(self, request: IRequest, url: str) -> bytes | None:
        assert self.origin is not None
        from twisted.internet import reactor

        request.setHeader(b"cache-control", NO_STORE)  # modules an operator keeps out of every cache
        try:
            return await relay(request, url, self.origin.http_pool, reactor)
        except OriginError as e:
            return text(request, f"{_origin_words(e)}: {e}", e.status)

    def _redirect(self, request: IRequest, location: str) -> bytes:
        request.setHeader(b"location", location.encode("ascii"))
        return text(request, f"redirecting to {location}", self.redirect_code)

    async def _fill(self, req: Request) -> None:
        """A canonical version is not stored: act on the download mode, or raise."""
        mode, url = self._mode(req.module)
        what = ModuleVersion(req.module, req.version)
        if mode is Mode.NONE or self.origin is None:
            raise NotFound(f"{what} is not in the cache")
        if self.origin.offline:  # never an origin: a redirect sends the client elsewhere, nothing is fetched
            if mode.redirects:
                raise Redirect(url)
            raise NotFound(f"{what} is not in the cache (NetworkMode offline: no origin is asked)")
        if mode is Mode.SYNC:
            await self.origin.stash.stash(req.module, req.version)
            return
        if mode.fills:
            self.origin.stash.background(req.module, req.version)
        if mode.redirects:
            raise Redirect(url)
        raise Pending(f"{what} is not in the cache yet; it is being fetched, try again shortly")

    def _looked_up(self, request: IRequest, req: Request, hit: bool) -> None:
        request.cache = "hit" if hit else "miss"
        self.metrics.cache.labels(request.cache).inc()
        if hit:
            self.record_use(req.module, req.version)

    async def _stored(self, request: IRequest, req: Request, get: Callable[[str, str], Awaitable[bytes]]) -> bytes:
        try:
            found = await get(req.module, req.version)
            self._looked_up(request, req, True)
            return found
        except NotFound:
            self._looked_up(request, req, False)
            if fetch_disabled(request):
                raise
            origin = self._sync_origin(req.module)
            if origin is not None:
                try:
                    return await origin.small(req.module, req.version, req.kind)
                except NoSmallFetch:
                    pass  # the go command: the whole version, stored
            await self._fill(req)
            return await get(req.module, req.version)

    # -- handlers --

    def _asks_origin(self, request: IRequest, module: str) -> bool:
        """Lists, latest and queries go to the origin unless offline, the mode is none, or the cache only is asked."""
        return (self.origin is not None and not self.origin.offline and self._mode(module)[0] is not Mode.NONE
                and not fetch_disabled(request))

    async def _list(self, request: IRequest, req: Request) -> bytes:
        stored = set(await self.storage.list(req.module))
        if self._asks_origin(request, req.module):
            assert self.origin is not None
            try:
                stored.update((await self.origin.lists.get(req.module)).versions)
                return self._versions(request, req, stored)  # the origin knows it: 200, even if empty
            except OriginNotFound:
                if not stored:
                    raise
            except OriginError:
                if self.origin.network_mode == "strict" or not stored:
                    raise
        if not stored:
            raise NotFound(f"module {req.module} is not in the cache")
        return self._versions(request, req, stored)

    def _versions(self, request: IRequest, req: Request, versions: set[str]) -> bytes:
        releases = [v for v in sort_versions(versions) if not is_pseudo_version(v)]
        return self._answer(request, req, TEXT, "".join(v + "\n" for v in releases).encode())

    def _answer(self, request: IRequest, req: Request, content_type: bytes, data: bytes,
                modified: int | None = None) -> bytes:
        """
        A 200 with its caching headers, which the hit path may replay: a
        version's is immutable; a list's or ``@latest``'s fresh for
        ``ListCacheTTL``, unless it names stored versions only for
        ``Disable-Module-Fetch`` (kept by no cache, and not remembered).
        """
        if req.version:
            validators = Validators(self._immutable, content_etag(data), modified)
        elif fetch_disabled(request):
            return self._send(request, content_type, data, Validators(NO_STORE, content_etag(data)))
        else:
            validators = Validators(max_age(self.list_max_age, self.shared), content_etag(data), modified)
        self._remember(request, req, content_type, validators, data)
        return self._send(request, content_type, data, validators)

    @staticmethod
    def _send(request: IRequest, content_type: bytes, data: bytes, validators: Validators) -> bytes:
        """The answer, or 304 when the client's copy is current."""
        validators.apply(request)
        if validators.not_modified(request):
            request.setResponseCode(304)
            return b""
        return body(request, content_type, data)

    async def _version_time(self, req: Request, info: bytes | None = None) -> int | None:
        """``Last-Modified`` of a version: its ``.info``'s time (the same on every node), if the store has it."""
        if info is None:
            try:
                info = await self.storage.info(req.module, req.version)
            except NotFound:
                return None  # a go.mod-only version kept without its .info
        return version_time(info)

    async def _latest(self, request: IRequest, req: Request) -> bytes:
        listed: tuple[str, ...] = ()
        if self._asks_origin(request, req.module):
            assert self.origin is not None
            try:
                listing = await self.origin.lists.get(req.module)
                if listing.latest is not None:
                    return self._answer(request, req, JSON, listing.latest)
                listed = listing.versions  # no @latest of its own: the newest of the list clients see
            except OriginNotFound:
                pass
            except OriginError:
                if self.origin.network_mode == "strict":
                    raise
        stored = await self.storage.list(req.module)  # (only when the origin named no @latest)
        version = latest_of(list(set(stored) | set(listed)))
        if version is None:
            raise NotFound(f"module {req.module} is not in the cache")
        if version in stored:
            return self._answer(request, req, JSON, await self.storage.info(req.module, version))
        assert self.origin is not None
        try:
            info = await self.origin.small(req.module, version, "info")
        except NoSmallFetch:
            info = await self.origin.query(req.module, version)
        return self._answer(request, req, JSON, info)

    async def _info(self, request: IRequest, req: Request) -> bytes:
        if req.canonical:
            info = await self._stored(request, req, self.storage.info)
            return self._answer(request, req, JSON, info, version_time(info))
        # A query (branch, commit, v1.2): only the origin can resolve it; nothing is stored.
        if not self._asks_origin(request, req.module):
            raise NotFound(f"{ModuleVersion(req.module, req.version)}: version queries need the origin")
        assert self.origin is not None
        mode, url = self._mode(req.module)
        if mode.redirects:
            raise Redirect(url)
        info = await self.origin.query(req.module, req.version)
        return self._send(request, JSON, info, Validators(max_age(self.list_max_age, self.shared), content_etag(info)))

    async def _mod(self, request: IRequest, req: Request) -> bytes:
        mod = await self._stored(request, req, self.storage.go_mod)
        return self._answer(request, req, TEXT, mod, await self._version_time(req))

    async def _zip(self, request: IRequest, req: Request) -> bytes | None:
        if self.vuln_policy is not None:
            try:
                self.vuln_policy.check(req.module, req.version)
            except Denied as e:
                raise Forbidden(str(e)) from None
        try:
            blob = await self.storage.zip(req.module, req.version)
            self._looked_up(request, req, True)
        except NotFound:
            self._looked_up(request, req, False)
            if fetch_disabled(request):
                raise
            if await self._stream_through(request, req):
                return None
            await self._fill(req)
            blob = await self.storage.zip(req.module, req.version)
        return await self._send_zip(request, req, blob)

    async def _send_zip(self, request: IRequest, req: Request, blob: Any) -> bytes | None:
        """A stored zip: whole, one range of it (206, 416), or 304; the blob is closed in the end."""
        try:
            validators = await self._zip_validators(req, blob.size)
        except BaseException:
            blob.close()
            raise
        path = getattr(blob, "path", "")  # a zip in a local file: the hit path sends it with sendfile
        if path:
            self._remember(request, req, ZIP, validators, path=path, size=blob.size)
        window: Window | None = None
        try:
            validators.apply(request)
            if validators.not_modified(request):
                request.setResponseCode(304)
                return b""
            if request.method == b"GET" and validators.range_applies(request):
                try:
                    window = requested(request.getHeader(b"range"), blob.size)
                except Unsatisfiable:
                    request.setHeader(b"content-range", b"bytes */%d" % blob.size)
                    return text(request, f"range not satisfiable: the zip has {blob.size} bytes", 416)
            request.setHeader(b"content-type", ZIP)
            if window is not None:
                request.setResponseCode(206)
                request.setHeader(b"content-range", window.content_range)
            request.setHeader(b"content-length", b"%d" % (window.length if window else blob.size))
            if request.method != b"HEAD":
                await write_stream(request, window_of(blob, window) if window else blob.chunks())
        except (ConnectionDone, CancelledError):
            abort(request, "client left")  # nothing more to answer; logged with what it got
        except Exception:
            # Headers promised blob.size bytes: cut the connection so the
            # client sees a broken transfer, never a short file with a 200.
            log.failure("reading {module}@{version}.zip failed", module=req.module, version=req.version)
            abort(request, "the stored zip could not be read")
        finally:
            blob.close()
        return None

    async def _zip_validators(self, req: Request, size: int) -> Validators:
        """
        A zip's tag and time come from its version's ``.info``: nothing is read
        of the zip itself.  A zip ``VulnPolicy`` flags is kept by no cache in
        front, so that every download of it is judged here.
        """
        flagged = self.vuln_policy is not None and self.vuln_policy.flags(req.module, req.version)
        freshness = NO_STORE if flagged else self._immutable
        try:
            info = await self.storage.info(req.module, req.version)
        except NotFound:  # deleted meanwhile (the open blob still reads): no validators
            return Validators(freshness, ranges=True)
        return Validators(freshness, zip_etag(info, size), version_time(info), ranges=True)

    async def _stream_through(self, request: IRequest, req: Request) -> bool:
        """
        On a sync miss from a streaming origin, send the zip while it arrives
        (the fill goes on if the client leaves).  False: serve it the usual way.
        """
        origin = self._sync_origin(req.module)
        if origin is None or request.method != b"GET":
            return False
        arriving, place = origin.stash.zip_arriving(req.module, req.version)
        growing = await arriving
        if growing is None:
            await place  # the fill ended before a zip arrived: stored (served below), or the origin's error
            return False
        place.addErrback(lambda f: None)  # from here the stream reports what goes wrong
        try:
            f = await deferToThread(open, growing.path, "rb")
        except FileNotFoundError:
            return False  # already stored and cleaned up: storage has it
        request.setHeader(b"content-type", ZIP)
        # Not checked yet (that happens before it is stored): no cache in front may keep it.
        request.setHeader(b"cache-control", NO_STORE)
        if growing.declared is not None:
            request.setHeader(b"content-length", b"%d" % growing.declared)
        try:
            await write_stream(request, follow(growing, f))
        except (ConnectionDone, CancelledError):
            abort(request, "client left")
            if not self.fill_after_client_leaves:
                origin.stash.abandon(req.module, req.version, place)
        except Exception as e:
            log.warn("stream-through of {what} broke: {error}", what=str(ModuleVersion(req.module, req.version)),
                     error=str(e))
            abort(request, f"the upstream broke off: {e}")  # a broken transfer, never a short zip under a 200
        finally:
            f.close()
        return True


async def follow(growing: Growing, f: Any) -> AsyncIterator[bytes]:
    """The bytes of a file being written, as they are written, until it is finished (or fails)."""
    offset = 0
    reader = growing.join()
    try:
        while True:
            if offset < growing.written:
                chunk = await deferToThread(f.read, min(STREAM_CHUNK, growing.written - offset))
                if not chunk:
                    raise OriginError("the zip being downloaded shrank")
                offset += len(chunk)
                growing.reached(reader, offset)
                yield chunk
            elif growing.error is not None:
                raise growing.error
            elif growing.finished:
                return
            else:
                await growing.changed()
    finally:
        growing.leave(reader)  # a client that leaves no longer holds the download back


STREAM_CHUNK = 256 << 10
#: Seconds between two recorded uses of one version by one process.
TOUCH_INTERVAL = 3600.0


def _origin_words(e: OriginError) -> str:
    return {404: "not found", 504: "origin timed out"}.get(e.status, "origin failed")
