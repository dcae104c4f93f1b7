"""
Fetch from an upstream GOPROXY (proxy.golang.org, another instance of this
proxy) over HTTP with treq: far faster than cloning (gomods/athens#2041).

Everything the upstream sends is untrusted: statuses map to the origin
errors (404/410 not found, anything else 502, silence 504), JSON and
version lists are checked, a zip is streamed to a temporary file with a size
limit and an idle timeout, never held in memory.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from typing import Any, Callable

import attrs
import treq
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred, gatherResults
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError, TimeoutError
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool, ResponseDone, ResponseFailed, _HTTP11ClientFactory
from twisted.web.error import InfiniteRedirection, RedirectWithNoLocation
from twisted.web.http import PotentialDataLoss
from zope.interface import implementer

from athens.fetch.egress import EgressAgent, ProxySettings, via
from athens.fetch.interface import (
    Fetched,
    Growing,
    IFetcher,
    Listing,
    OnZip,
    OriginError,
    OriginNotFound,
    OriginTimeout,
)
from athens.module import is_canonical_version, is_pseudo_version, request_path, sort_versions
from athens.storage.interface import MAX_ZIP_SIZE

#: Small answers (.info, .mod, lists) larger than this are refused.
MAX_SMALL = 16 << 20
#: How many ``.info``/``.mod`` files an upstream fetcher remembers.
RECENT = 4096


class _QuietFactory(_HTTP11ClientFactory):
    """Each new upstream connection would log "Starting factory ..." at info."""

    noisy = False


def make_pool(reactor: Any, per_host: int = 10) -> HTTPConnectionPool:
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool._factory = _QuietFactory
    pool.maxPersistentPerHost = per_host
    pool.cachedConnectionTimeout = 120
    pool.egress = EgressAgent(reactor, pool, ProxySettings.from_environ(os.environ))  # HTTP(S)_PROXY, NO_PROXY
    return pool


@attrs.frozen
class Pace:
    """What a zip download must keep up: a deadline for the whole of it, and a minimum rate."""

    #: Seconds the whole download may take (``Timeout``).
    deadline: float = 300.0
    #: Bytes a second, averaged over ``window`` seconds in which we did not hold the download back ourselves.
    min_rate: int = 16 << 10
    window: float = 30.0


class _ToFile(Protocol):
    """Write a response body to a file, within a size limit and a pace, failing if the upstream goes quiet."""

    def __init__(self, f: Any, limit: int, idle: float, reactor: Any, growing: Growing, pace: Pace) -> None:
        self.f, self.limit, self.idle, self.reactor, self.growing = f, limit, idle, reactor, growing
        self.pace = pace
        self.size = 0
        #: Bytes in this rate window; whether we are holding the download back, or did in this window.
        self.window_bytes, self.paused, self.held = 0, False, False
        self.deadline = reactor.callLater(pace.deadline, self._fail, OriginTimeout(
            f"the upstream took longer than {pace.deadline:g}s (Timeout) for a zip"))
        self.rate_check = reactor.callLater(pace.window, self._check_rate)
        # Cancelled (the fill is abandoned): stop reading at once.
        self.done: Deferred[int] = Deferred(lambda d: self.transport.stopProducing() if self.transport else None)
        # First in the chain, before anyone awaits it: followers hear of the end either way.
        self.done.addCallbacks(lambda size: growing.finish() or size, lambda f: growing.fail(f.value) or f)
        self.timer = reactor.callLater(idle, self._quiet)
        growing.throttle = self._throttle

    def _throttle(self, pause: bool) -> None:
        """A slow reader holds the download back; the idle timeout waits while we are the ones pausing."""
        if self.done.called or self.transport is None:
            return
        self.paused = pause
        self.held = self.held or pause
        if pause:
            self.transport.pauseProducing()
            if self.timer.active():
                self.timer.cancel()
        else:
            self.transport.resumeProducing()
            self.timer = self.reactor.callLater(self.idle, self._quiet)

    def _quiet(self) -> None:
        self._fail(OriginTimeout(f"the upstream sent nothing for {self.idle:g}s in the middle of a zip"))

    def _check_rate(self) -> None:
        if self.done.called:
            return
        floor = self.pace.min_rate * self.pace.window
        if not self.held and self.window_bytes < floor:  # (a window we held back ourselves proves nothing)
            self._fail(OriginTimeout(f"the upstream sent {self.window_bytes} bytes of a zip in {self.pace.window:g}s,"
                                     f" under the minimum of {self.pace.min_rate} bytes a second"))
            return
        self.window_bytes, self.held = 0, self.paused
        self.rate_check = self.reactor.callLater(self.pace.window, self._check_rate)

    def _fail(self, error: OriginError) -> None:
        if not self.done.called:
            self.done.errback(error)
            if self.transport is not None:
                self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.done.called:
            return
        self.size += len(data)
        self.window_bytes += len(data)
        if self.size > self.limit:
            self._fail(OriginError(f"the upstream sent a zip over {self.limit} bytes"))
            return
        self.f.write(data)  # a local temporary file: fast, and bounded by the limit
        self.f.flush()  # readers following the growing file see it at once
        if self.timer.active():
            self.timer.reset(self.idle)
        self.growing.advance(len(data))

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        self.growing.throttle = None
        for call in (self.timer, self.deadline, self.rate_check):
            if call.active():
                call.cancel()
        if self.done.called:
            return
        if reason.check(ResponseDone):
            self.done.callback(self.size)
        elif reason.check(PotentialDataLoss):
            self.done.errback(OriginError("the upstream ended the zip without saying its length"))
        else:
            self.done.errback(OriginError(f"the upstream broke off the zip: {reason.getErrorMessage()}"))


@implementer(IFetcher)
@attrs.define
class UpstreamFetcher:
    url: str
    reactor: Any
    pool: HTTPConnectionPool
    #: Seconds to connect and get the headers of an answer.
    timeout: float = 30.0
    #: Seconds a body may stall before the transfer is given up.
    idle_timeout: float = 60.0
    #: The deadline and minimum rate of a zip download.
    pace: Pace = attrs.field(factory=Pace)
    slots: DeferredSemaphore = attrs.field(factory=lambda: DeferredSemaphore(32))
    work_dir: str = ""
    #: Requests sent, by kind: observability, and tests count them.
    requests: list[str] = attrs.field(factory=list)
    #: ``.info`` and ``.mod`` of versions fetched lately (they never change): the fill of a zip asked for
    #: after them (the go command asks in that order) does not fetch them again.
    _recent: OrderedDict[str, bytes] = attrs.field(factory=OrderedDict)

    def _url(self, module: str, kind: str, version: str = "") -> str:
        return self.url.rstrip("/") + request_path(module, kind, version)

    async def _get(self, url: str, body: Callable[[Any], Deferred[Any]]) -> Any:
        self.requests.append(url)
        await self.slots.acquire()
        try:
            try:
                response = await treq.get(url, **via(self.pool), timeout=self.timeout, unbuffered=True,
                                          reactor=self.reactor, headers={"User-Agent": "athens-py"})
            except (defer.CancelledError, TimeoutError, ConnectingCancelledError):
                raise OriginTimeout(f"the upstream {self.url} did not answer within {self.timeout:g}s") from None
            except (ConnectError, DNSLookupError) as e:
                raise OriginError(f"cannot reach the upstream {self.url}: {e}") from None
            except (InfiniteRedirection, RedirectWithNoLocation) as e:
                raise OriginError(f"the upstream {self.url} redirects in a loop or nowhere: {e}") from None
            except ResponseFailed as e:
                raise self._failed(e) from None
            if response.code in (404, 410):
                text = (await _small(response, self.reactor, self.idle_timeout)).decode("utf-8", "replace")
                raise OriginNotFound(" ".join(text.split())[:500] or f"{response.code} from the upstream")
            if response.code != 200:
                await _discard(response)
                raise OriginError(f"the upstream {self.url} answered {response.code} for {url}")
            return await body(response)
        finally:
            self.slots.release()

    def _failed(self, e: ResponseFailed) -> OriginError:
        """What lies under treq's ResponseFailed: a timeout, a redirect loop, a dropped connection."""
        reasons = [r for r in e.reasons if isinstance(r, Failure)]
        if any(r.check(defer.CancelledError, TimeoutError) for r in reasons):
            return OriginTimeout(f"the upstream {self.url} did not answer within {self.timeout:g}s")
        if any(r.check(InfiniteRedirection, RedirectWithNoLocation) for r in reasons):
            return OriginError(f"the upstream {self.url} redirects in a loop or nowhere")
        why = "; ".join(r.getErrorMessage() for r in reasons) or str(e)
        return OriginError(f"the upstream {self.url} broke the connection: {why}")

    async def _small_get(self, url: str) -> bytes:
        return await self._get(url, lambda r: ensureDeferred(_small(r, self.reactor, self.idle_timeout)))

    async def get_file(self, path: str, limit: int = MAX_SMALL) -> bytes:
        """Any file under the upstream's URL, whole, up to ``limit`` bytes (the vulnerability database's)."""
        url = f"{self.url.rstrip('/')}/{path}"
        return await self._get(url, lambda r: ensureDeferred(_small(r, self.reactor, self.idle_timeout, limit)))

    async def _version_file(self, module: str, version: str, kind: str) -> bytes:
        """A canonical version's ``.info`` or ``.mod``, from :attr:`_recent` when it was fetched lately."""
        url = self._url(module, kind, version)
        data = self._recent.get(url)
        if data is None:
            data = await self._small_get(url)
            self._recent[url] = data
            while len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(url)
        return data

    async def _info(self, module: str, version: str) -> bytes:
        if is_canonical_version(module, version):
            return _checked_info(await self._version_file(module, version, "info"), module, version)
        return _checked_info(await self._small_get(self._url(module, "info", version)), module, None)

    def download(self, module: str, version: str, on_zip: OnZip | None = None) -> Deferred[Fetched]:
        return ensureDeferred(self._download(module, version, on_zip))

    async def _download(self, module: str, version: str, on_zip: OnZip | None = None) -> Fetched:
        info, mod = await gatherResults([ensureDeferred(self._info(module, version)),
                                         ensureDeferred(self._version_file(module, version, "mod"))],
                                        consumeErrors=True).addErrback(lambda f: f.value.subFailure)
        fd, path = tempfile.mkstemp(prefix="athens-upstream-", suffix=".zip", dir=self.work_dir or None)

        async def cleanup() -> None:
            await deferToThread(_unlink, path)

        try:
            with os.fdopen(fd, "wb") as f:

                async def into_file(response: Any) -> int:
                    declared = response.length if isinstance(response.length, int) else None
                    if declared is not None and declared > MAX_ZIP_SIZE:
                        await _discard(response)
                        raise OriginError(f"the upstream offers a zip of {declared} bytes, over the limit")
                    growing = Growing(path, declared)
                    sink = _ToFile(f, MAX_ZIP_SIZE, self.idle_timeout, self.reactor, growing, self.pace)
                    response.deliverBody(sink)
                    if on_zip is not None:
                        on_zip(growing)
                    return await sink.done

                await self._get(self._url(module, "zip", version), lambda r: ensureDeferred(into_file(r)))
            return Fetched(module, version, info, mod, path, cleanup)
        except BaseException:
            await cleanup()
            raise

    def query(self, module: str, query: str) -> Deferred[bytes]:
        return ensureDeferred(self._info(module, query))

    def small(self, module: str, version: str, kind: str) -> Deferred[bytes]:
        """The ``.info`` or ``.mod`` of a version alone: the go command often needs no more (nothing is stored)."""
        if kind == "info":
            return ensureDeferred(self._info(module, version))
        return ensureDeferred(self._version_file(module, version, "mod"))

    def listing(self, module: str) -> Deferred[Listing]:
        return ensureDeferred(self._listing(module))

    async def _listing(self, module: str) -> Listing:
        text = (await self._small_get(self._url(module, "list"))).decode("utf-8", "replace")
        versions = []
        for line in text.split("\n"):
            version = line.strip()
            if not version:
                continue
            if not is_canonical_version(module, version):
                raise OriginError(f"the upstream {self.url} listed {version[:80]!r} for {module}: not a version")
            if not is_pseudo_version(version):
                versions.append(version)
        try:
            latest: bytes | None = await self._info_latest(module)
        except OriginNotFound:
            latest = None
        if not versions and latest is None:
            raise OriginNotFound(f"module {module}: the upstream {self.url} has no versions")
        return Listing(tuple(sort_versions(set(versions))), latest)

    async def _info_latest(self, module: str) -> bytes:
        data = await self._small_get(self._url(module, "latest"))
        return _checked_info(data, module, None)


def _checked_info(data: bytes, module: str, version: str | None) -> bytes:
    try:
        info = json.loads(data)
    except ValueError:
        raise OriginError(f"the upstream sent a .info for {module} that is not JSON") from None
    if not isinstance(info, dict) or not isinstance(info.get("Version"), str):
        raise OriginError(f"the upstream sent a .info for {module} without a Version")
    if version is not None and info["Version"] != version:
        raise OriginError(f"the upstream sent a .info naming {info['Version'][:80]!r} for {module}@{version}")
    if not is_canonical_version(module, info["Version"]):
        raise OriginError(f"the upstream resolved {module} to {info['Version'][:80]!r}: not a version")
    return data


async def _small(response: Any, reactor: Any, idle: float, limit: int = MAX_SMALL) -> bytes:
    if isinstance(response.length, int) and response.length > limit:
        await _discard(response)
        raise OriginError(f"the upstream answer is over {limit} bytes")
    body = _Collect(limit)
    response.deliverBody(body)
    body.done.addTimeout(idle, reactor)  # the canceller closes the upstream connection: nothing lingers
    try:
        return await body.done
    except defer.TimeoutError:
        raise OriginTimeout(f"the upstream answer stalled for {idle:g}s") from None


class _Collect(Protocol):
    """A small answer, whole, up to ``limit`` bytes; cancelling ``done`` drops the connection at once."""

    def __init__(self, limit: int = MAX_SMALL) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred(lambda d: self.transport.stopProducing() if self.transport else None)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.done.errback(OriginError(f"the upstream answer is over {self.limit} bytes"))
            self.transport.stopProducing()
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        if self.done.called:
            return
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(OriginError(f"the upstream broke off its answer: {reason.getErrorMessage()}"))


class _Drop(Protocol):
    """Refuse a body without reading it: the connection is closed, not drained."""

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self.transport.stopProducing()


async def _discard(response: Any) -> None:
    response.deliverBody(_Drop())


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
