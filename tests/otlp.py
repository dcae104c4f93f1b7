"""
A real OTLP/HTTP receiver on loopback: it decodes the protobuf export
requests an OpenTelemetry exporter posts to ``/v1/traces`` (the wire format
a collector reads) and keeps the spans for the test to look at.  It runs in
a thread of its own, so a test may block on the daemon while spans arrive.
"""

from __future__ import annotations

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import attrs
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@attrs.frozen
class Span:
    name: str
    trace_id: str
    span_id: str
    #: "" for a root span.
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    #: 0 unset, 1 ok, 2 error.
    status: int
    service: str
    start_ns: int
    end_ns: int


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@attrs.define
class OTLPReceiver:
    server: ThreadingHTTPServer
    spans: list[Span] = attrs.field(factory=list)
    #: Export requests refused because they were not OTLP protobuf (a test fails on any).
    bad_requests: list[str] = attrs.field(factory=list)
    changed: threading.Condition = attrs.field(factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    found.append(Span(s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.kind,
                                      {a.key: _value(a.value) for a in s.attributes}, s.status.code,
                                      resource.get("service.name", ""), s.start_time_unix_nano, s.end_time_unix_nano))
        with self.changed:
            self.spans.extend(found)
            self.changed.notify_all()

    def wait_for(self, what: str, condition: Callable[[list[Span]], Any], timeout: float = 30) -> Any:
        """Block until ``condition(spans)`` is true (returns it), or fail saying ``what`` never came."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                result = condition(list(self.spans))
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    names = sorted({s.name for s in self.spans})
                    raise AssertionError(f"{what}: not received within {timeout}s (spans so far: {names})")
                self.changed.wait(left)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_receiver() -> OTLPReceiver:
    receiver: OTLPReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                receiver.bad_requests.append(f"{self.path} {self.headers.get('Content-Type')}")
                self.send_error(415)
                return
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            receiver.received(request)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = OTLPReceiver(server)
    threading.Thread(target=server.serve_forever, daemon=True, name="otlp-receiver").start()
    return receiver
