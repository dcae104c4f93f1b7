"""
Spans around the proxy's collaborators, put in place only when tracing is on:
each storage operation, each fetch from an origin, and each HTTP request the
proxy sends (with the W3C ``traceparent`` of its span, so an upstream proxy
that traces continues the trace).
"""

from __future__ import annotations

from typing import Any, AsyncIterable, Callable, TypeVar

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.components import proxyForInterface
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface import implementer

from athens.fetch.chain import small_of
from athens.fetch.interface import Fetched, IFetcher, Listing, NoSmallFetch, OnZip, OriginNotFound
from athens.storage.interface import Blob, CatalogPage, IndexLine, IStorage, NotFound
from athens.tracing.otel import Tracing

T = TypeVar("T")

#: Failures that are answers, not errors: the span says so without an error status.
_EXPECTED = (NotFound, OriginNotFound)


def _traced(tracing: Tracing, name: str, call: Callable[[], Deferred[T]], kind: SpanKind = SpanKind.INTERNAL,
            **attributes: Any) -> Deferred[T]:
    """
    Run ``call`` inside a span that ends when its Deferred does (a failure marks it, a cancel too).  The span
    is current while ``call`` starts: the coroutines it starts keep it, so what they do nests under it.
    """
    span = tracing.span(name, kind, {k: v for k, v in attributes.items() if v is not None})
    token = context.attach(trace.set_span_in_context(span))
    try:
        d = call()
    except BaseException as e:
        _failed(span, e)
        span.end()
        raise
    finally:
        context.detach(token)

    def ended(result: Any) -> Any:
        if isinstance(result, Failure):
            _failed(span, result.value)
        span.end()
        return result

    return d.addBoth(ended)


def _failed(span: Any, error: BaseException) -> None:
    if isinstance(error, _EXPECTED):
        span.set_attribute("athens.found", False)
        return
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))


#: Athens names its disk storage's spans "fs.<Op>"; other backends go by their own names.
_SPAN_PREFIX = {"disk": "fs"}


class TracedStorage(proxyForInterface(IStorage, "inner")):  # type: ignore[misc]
    """A span for each read and write of a version (the polls, touches and pings are left out: they are noise)."""

    def __init__(self, inner: IStorage, tracing: Tracing) -> None:
        super().__init__(inner)
        self.tracing = tracing
        self.prefix = _SPAN_PREFIX.get(inner.name, inner.name)

    def _op(self, op: str, call: Callable[[], Deferred[T]], module: str | None = None,
            version: str | None = None) -> Deferred[T]:
        return _traced(self.tracing, f"{self.prefix}.{op}", call, **{
            "athens.storage": self.inner.name, "athens.module": module, "athens.version": version})

    def list(self, module: str) -> Deferred[list[str]]:
        return self._op("List", lambda: self.inner.list(module), module)

    def info(self, module: str, version: str) -> Deferred[bytes]:
        return self._op("Info", lambda: self.inner.info(module, version), module, version)

    def go_mod(self, module: str, version: str) -> Deferred[bytes]:
        return self._op("GoMod", lambda: self.inner.go_mod(module, version), module, version)

    def zip(self, module: str, version: str) -> Deferred[Blob]:
        return self._op("Zip", lambda: self.inner.zip(module, version), module, version)

    def exists(self, module: str, version: str) -> Deferred[bool]:
        return self._op("Exists", lambda: self.inner.exists(module, version), module, version)

    def save(self, module: str, version: str, info: bytes, mod: bytes, zip: AsyncIterable[bytes]) -> Deferred[bool]:
        return self._op("Save", lambda: self.inner.save(module, version, info, mod, zip), module, version)

    def save_mod(self, module: str, version: str, mod: bytes, info: bytes | None) -> Deferred[bool]:
        return self._op("SaveMod", lambda: self.inner.save_mod(module, version, mod, info), module, version)

    def delete(self, module: str, version: str) -> Deferred[None]:
        return self._op("Delete", lambda: self.inner.delete(module, version), module, version)

    def catalog(self, token: str, limit: int) -> Deferred[CatalogPage]:
        return self._op("Catalog", lambda: self.inner.catalog(token, limit))

    def index(self, since: float, limit: int) -> Deferred[list[IndexLine]]:
        return self._op("Index", lambda: self.inner.index(since, limit))


@implementer(IFetcher)
class TracedFetcher:
    """A span for each fetch from one origin: the go command (Athens' names) or an upstream proxy."""

    def __init__(self, inner: IFetcher, tracing: Tracing, origin: str) -> None:
        self.inner, self.tracing, self.origin = inner, tracing, origin
        direct = origin == "direct"
        self.names = {
            "download": "goGetFetcher.Fetch" if direct else "upstream.Fetch",
            "query": "goGetFetcher.Query" if direct else "upstream.Query",
            "listing": "goVCSLister.List" if direct else "upstream.List",
            "small": "upstream.Small",
        }

    def _op(self, kind: str, call: Callable[[], Deferred[T]], module: str, version: str | None) -> Deferred[T]:
        return _traced(self.tracing, self.names[kind], call, **{
            "athens.origin": self.origin, "athens.module": module, "athens.version": version})

    def download(self, module: str, version: str, on_zip: OnZip | None = None) -> Deferred[Fetched]:
        return self._op("download", lambda: self.inner.download(module, version, on_zip), module, version)

    def query(self, module: str, query: str) -> Deferred[bytes]:
        return self._op("query", lambda: self.inner.query(module, query), module, query)

    def listing(self, module: str) -> Deferred[Listing]:
        return self._op("listing", lambda: self.inner.listing(module), module, None)

    def small(self, module: str, version: str, kind: str) -> Deferred[bytes]:
        if getattr(self.inner, "small", None) is None:
            raise NoSmallFetch(kind)  # the go command fetches whole versions only: no span for asking
        return self._op("small", lambda: small_of(self.inner, module, version, kind), module, version)


@implementer(IAgent)
class TracingAgent:
    """A client span for each request sent, its context in the ``traceparent`` header; it ends with the body."""

    def __init__(self, inner: IAgent, tracing: Tracing) -> None:
        self.inner, self.tracing = inner, tracing

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None,
                bodyProducer: Any = None) -> Deferred[Any]:  # noqa: N803 - Twisted's name
        url = uri.decode("ascii", "replace")
        span = self.tracing.span(method.decode("ascii", "replace"), SpanKind.CLIENT, {
            "http.request.method": method.decode("ascii", "replace"), "url.full": url.split("?", 1)[0]})
        headers = headers.copy() if headers is not None else Headers()
        token = context.attach(trace.set_span_in_context(span))
        try:
            self.tracing.inject(headers)
        finally:
            context.detach(token)
        try:
            d = self.inner.request(method, uri, headers, bodyProducer)
        except BaseException as e:
            _failed(span, e)
            span.end()
            raise

        def answered(response: Any) -> Any:
            span.set_attribute("http.response.status_code", response.code)
            if response.code >= 500:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {response.code}"))
            deliver = response.deliverBody
            response.deliverBody = lambda protocol: deliver(_BodyEnd(protocol, span))
            return response

        def failed(failure: Failure) -> Failure:
            _failed(span, failure.value)
            span.end()
            return failure

        return d.addCallbacks(answered, failed)


class _BodyEnd(Protocol):
    """Passes a response body on, and ends the request's span when it is over (whole, broken or dropped)."""

    def __init__(self, inner: Protocol, span: Any) -> None:
        self.inner, self.span = inner, span

    def makeConnection(self, transport: Any) -> None:  # noqa: N802 - Twisted's name
        self.transport = transport
        self.inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        from twisted.web.client import ResponseDone

        if not reason.check(ResponseDone):
            self.span.set_status(Status(StatusCode.ERROR, reason.getErrorMessage()[:500]))
        self.span.end()
        self.inner.connectionLost(reason)
