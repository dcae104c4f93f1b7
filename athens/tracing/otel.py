"""
The OpenTelemetry side of tracing: a tracer provider that exports over
OTLP/HTTP in batches (from the SDK's own thread), and the spans of the web
layer: one a request on the full path, continuing the client's W3C
``traceparent``, and one a hit answered by the hit path.

Twisted runs each coroutine in a copy of the context it started in, so a
span made current while a request is received is the parent of every span
started while it is handled (storage, fetches, upstream requests), however
many turns of the reactor that takes.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Mapping

import attrs
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from athens import __version__
from athens.logs import current_request_id
from athens.metrics import endpoint_of
from athens.tracing import TraceSettings

log = Logger()

#: Athens' service name and instrumentation scope (dashboards made for Athens find the same names).
SERVICE = "proxy"
SCOPE = "github.com/gomods/athens"
#: Athens names the span of every request after its handler: "proxy".
REQUEST_SPAN = "proxy"


class _Headers:
    """The propagators' getter and setter over twisted.web's ``Headers``."""

    @staticmethod
    def get(carrier: Any, key: str) -> list[str] | None:
        values = carrier.getRawHeaders(key)
        return [v.decode("latin-1") if isinstance(v, bytes) else v for v in values] if values else None

    @staticmethod
    def keys(carrier: Any) -> list[str]:
        return [name.decode("latin-1").lower() for name, _ in carrier.getAllRawHeaders()]

    @staticmethod
    def set(carrier: Any, key: str, value: str) -> None:
        carrier.setRawHeaders(key, [value])


@attrs.define
class Tracing:
    """One daemon's tracer and propagator, and the spans of its requests."""

    provider: TracerProvider
    tracer: trace.Tracer
    propagator: CompositePropagator
    reactor: Any

    @classmethod
    def start(cls, settings: TraceSettings, reactor: Any) -> "Tracing":
        attributes: dict[str, Any] = {"service.version": __version__, "telemetry.distro.name": "athens-py"}
        if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get(
                "OTEL_RESOURCE_ATTRIBUTES", ""):
            attributes["service.name"] = SERVICE
        provider = TracerProvider(resource=Resource.create(attributes),
                                  sampler=ParentBased(TraceIdRatioBased(settings.fraction)))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint())))
        _log_through_twisted(reactor)
        propagator = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
        return cls(provider, provider.get_tracer(SCOPE, __version__), propagator, reactor)

    def span(self, name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None,
             parent: otel_context.Context | None = None, start_time: int | None = None) -> trace.Span:
        """A span under the current one (or ``parent``), carrying the request id of the request it serves."""
        span = self.tracer.start_span(name, parent, kind, attributes, start_time=start_time)
        request_id = current_request_id.get()
        if request_id is not None and span.is_recording():
            span.set_attribute("athens.request_id", request_id)
        return span

    def inject(self, headers: Any) -> None:
        """Put the current trace context in outgoing ``headers`` (twisted.web ``Headers``)."""
        self.propagator.inject(headers, setter=_Headers)

    # -- requests on the full path --

    def request_started(self, request: Any) -> object:
        """The request's span, made current until :meth:`request_handed_off`; returns the token for it."""
        parent = self.propagator.extract(request.requestHeaders, getter=_Headers)
        span = self.span(REQUEST_SPAN, SpanKind.SERVER, _request_attributes(request), parent=parent)
        span.set_attribute("athens.request_id", request.request_id)
        request.span = span
        return otel_context.attach(trace.set_span_in_context(span, parent))

    @staticmethod
    def request_handed_off(token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]

    @staticmethod
    def request_ended(request: Any) -> None:
        span = getattr(request, "span", None)
        if span is None:
            return
        request.span = None
        if span.is_recording():
            code = int(request.code)
            span.set_attributes({
                "http.response.status_code": code,
                "http.response.body.size": int(request.sentLength),
                "athens.cache": getattr(request, "cache", "-"),
            })
            for key, value in (("athens.module", getattr(request, "module", "")),
                               ("athens.version", getattr(request, "module_version", ""))):
                if value:
                    span.set_attribute(key, value)
            broken = getattr(request, "broken", None)
            if code >= 500 or broken:
                span.set_status(Status(StatusCode.ERROR, broken or f"HTTP {code}"))
        span.end()

    # -- hits --

    def hit(self, method: bytes, target: bytes, request_id: str, arrived: float, size: int, module: str,
            version: str, broken: str) -> None:
        """A span for a request the hit path answered (a root: requests with a ``traceparent`` go the full path)."""
        elapsed = time.monotonic() - arrived
        started = time.time_ns() - int(elapsed * 1e9)
        path = target.split(b"?", 1)[0]
        span = self.tracer.start_span(REQUEST_SPAN, None, SpanKind.SERVER, {
            "http.request.method": method.decode("ascii", "replace"),
            "url.path": path.decode("ascii", "replace"),
            "http.route": endpoint_of(path),
            "http.response.status_code": 200,
            "http.response.body.size": size,
            "athens.cache": "hit",
            "athens.request_id": request_id,
        }, start_time=started)
        if module:
            span.set_attributes({"athens.module": module, "athens.version": version})
        if broken:
            span.set_status(Status(StatusCode.ERROR, broken))
        span.end()

    # -- the collaborators' spans (athens.tracing.wrappers) --

    def storage(self, storage: Any) -> Any:
        from athens.tracing.wrappers import TracedStorage

        return TracedStorage(storage, self)

    def fetcher(self, fetcher: Any, origin: str) -> Any:
        """``origin``: an upstream's URL, or ``direct`` (the go command)."""
        from athens.tracing.wrappers import TracedFetcher

        return TracedFetcher(fetcher, self, origin)

    def agent(self, agent: Any) -> Any:
        from athens.tracing.wrappers import TracingAgent

        return TracingAgent(agent, self)

    def shutdown(self) -> Deferred[None]:
        """Export what is left and stop (in a thread: the export is a blocking HTTP request)."""
        return deferToThread(self.provider.shutdown)


def _request_attributes(request: Any) -> dict[str, Any]:
    path = request.path
    attributes: dict[str, Any] = {
        "http.request.method": request.method.decode("ascii", "replace"),
        "url.path": path.decode("utf-8", "replace"),
        "http.route": endpoint_of(path),
        "url.scheme": "https" if request.isSecure() else "http",
    }
    address = request.getClientAddress()
    if getattr(address, "host", None):
        attributes["client.address"] = address.host
    agent = request.getHeader(b"user-agent")
    if agent:
        attributes["user_agent.original"] = agent.decode("ascii", "replace")[:256]
    return attributes


class _ToTwisted(logging.Handler):
    """The SDK's own warnings (a collector that refuses or cannot be reached) go to our log, from the reactor thread."""

    def __init__(self, reactor: Any) -> None:
        super().__init__(logging.WARNING)
        self.reactor = reactor

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.reactor.callFromThread(log.warn, "tracing: {message}", message=message)


def _log_through_twisted(reactor: Any) -> None:
    logger = logging.getLogger("opentelemetry")
    if not any(isinstance(h, _ToTwisted) for h in logger.handlers):
        logger.addHandler(_ToTwisted(reactor))
        logger.propagate = False
