"""
OpenTelemetry tracing (TraceExporter = "otlp"): a running daemon exports to a real OTLP/HTTP receiver
(tests/otlp.py decodes the protobuf export requests), and an upstream proxy records the traceparent it
gets; spans, their parents, request ids and sampling are checked there.  With tracing off, nothing of
OpenTelemetry is even imported.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import fail, succeed
from twisted.web.http_headers import Headers

from athens import config
from athens.storage.interface import NotFound, StorageUnavailable
from athens.storage.memory import MemoryStorage
from athens.tracing import TraceSettings
from tests.daemon import source_env, start_daemon
from tests.otlp import OTLPReceiver, Span, start_receiver
from tests.test_stash_and_lists import module_zip

M = "example.com/traced"
ZIP = module_zip(M, "v1.0.0")
SERVER, CLIENT = 2, 3  # OTLP span kinds


@pytest.fixture
def receiver():
    receiver = start_receiver()
    yield receiver
    receiver.stop()
    assert not receiver.bad_requests


class Upstream:
    """A GOPROXY directory over HTTP that records the ``traceparent`` of every request."""

    def __init__(self, root: Path) -> None:
        self.asked: list[tuple[str, str | None]] = []
        upstream = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                upstream.asked.append((self.path, self.headers.get("traceparent")))
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def upstream(tmp_path):
    where = tmp_path / "upstream" / M / "@v"
    where.mkdir(parents=True)
    (where / "v1.0.0.info").write_text(json.dumps({"Version": "v1.0.0", "Time": "2024-01-02T03:04:05Z"}))
    (where / "v1.0.0.mod").write_text(f"module {M}\n")
    (where / "v1.0.0.zip").write_bytes(ZIP)
    served = Upstream(tmp_path / "upstream")
    yield served
    served.server.shutdown()
    served.server.server_close()


def traced_daemon(tmp_path: Path, receiver: OTLPReceiver, upstream: Upstream, **env: str):
    return start_daemon(tmp_path / "d", "--storage", "disk", "--storage-root", str(tmp_path / "storage"), env={
        "ATHENS_TRACE_EXPORTER": "otlp",
        "ATHENS_TRACE_EXPORTER_URL": receiver.url,  # (no path: /v1/traces is added)
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # spans go out every 50 ms: the test waits for them, not for the stop
        "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY={upstream.url}",
        "ATHENS_GONOSUM_PATTERNS": "example.com",  # (no checksum database here)
        **env,
    })


def get(url: str, **headers: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
        return r.read(), r.headers["X-Request-Id"]


def in_trace(trace_id: str, *names: str):
    """A condition: the trace has spans of all these names (returns its spans)."""
    def condition(spans: list[Span]) -> list[Span] | None:
        mine = [s for s in spans if s.trace_id == trace_id]
        return mine if set(names) <= {s.name for s in mine} else None
    return condition


def one(spans: list[Span], name: str, **attributes: Any) -> Span:
    found = [s for s in spans if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, (name, attributes, found)
    return found[0]


def test_a_cold_fill_is_one_trace_from_the_client_to_the_upstream(tmp_path, receiver, upstream):
    daemon = traced_daemon(tmp_path, receiver, upstream)
    try:
        trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
        body, request_id = get(f"{daemon.url}/{M}/@v/v1.0.0.zip", traceparent=f"00-{trace_id}-{client_span}-01",
                               **{"X-Request-Id": "fill-1"})
        assert (body, request_id) == (ZIP, "fill-1")
        spans = receiver.wait_for("the fill's trace", in_trace(trace_id, "proxy", "upstream.Fetch", "GET", "fs.Save"))

        request = one(spans, "proxy")
        assert (request.parent_id, request.kind, request.service) == (client_span, SERVER, "proxy")
        assert request.attributes["http.response.status_code"] == 200
        assert request.attributes["http.route"] == "zip" and request.attributes["athens.module"] == M
        fetch = one(spans, "upstream.Fetch")
        assert fetch.parent_id == request.span_id and fetch.attributes["athens.origin"] == upstream.url
        sent = {s.attributes["url.full"].rsplit("/", 1)[1]: s for s in spans if s.name == "GET"}
        assert set(sent) == {"v1.0.0.info", "v1.0.0.mod", "v1.0.0.zip"}
        for file, span in sent.items():
            assert (span.kind, span.parent_id, span.attributes["http.response.status_code"]) == (
                CLIENT, fetch.span_id, 200)
            # What the upstream got: the trace, and the span of that very request as its parent.
            assert (f"/{M}/@v/{file}", f"00-{trace_id}-{span.span_id}-01") in upstream.asked
        saved = one(spans, "fs.Save")
        assert saved.parent_id == request.span_id and saved.attributes["athens.version"] == "v1.0.0"
        assert {s.attributes.get("athens.request_id") for s in spans} == {"fill-1"}
        assert all(s.status != 2 for s in spans)

        # A hit answered by the hit path is a span too (a root); one that continues a trace goes the full path.
        path = f"/{M}/@v/v1.0.0.info"
        get(daemon.url + path)
        _, hit_id = get(daemon.url + path)
        hit = receiver.wait_for("the hit's span", lambda spans: [s for s in spans if s.attributes.get(
            "athens.request_id") == hit_id])[0]
        assert (hit.name, hit.parent_id, hit.attributes["athens.cache"]) == ("proxy", "", "hit")
        assert hit.attributes["url.path"] == path and hit.attributes["athens.version"] == "v1.0.0"
        assert hit.end_ns >= hit.start_ns > 0
        other_trace = secrets.token_hex(16)
        get(daemon.url + path, traceparent=f"00-{other_trace}-{client_span}-01")
        continued = receiver.wait_for("a hit that continues a trace", in_trace(other_trace, "proxy"))
        assert one(continued, "proxy").parent_id == client_span
    finally:
        daemon.stop()


def test_sampling_leaves_new_traces_out_and_follows_the_clients_decision(tmp_path, receiver, upstream):
    daemon = traced_daemon(tmp_path, receiver, upstream, ATHENS_TRACE_SAMPLING_FRACTION="0")
    try:
        unsampled, sampled = secrets.token_hex(16), secrets.token_hex(16)
        get(f"{daemon.url}/{M}/@v/v1.0.0.info")  # a new trace: not sampled at 0
        get(f"{daemon.url}/{M}/@v/v1.0.0.mod", traceparent=f"00-{unsampled}-{secrets.token_hex(8)}-00")
        get(f"{daemon.url}/{M}/@v/v1.0.0.zip", traceparent=f"00-{sampled}-{secrets.token_hex(8)}-01")
        receiver.wait_for("the sampled trace", in_trace(sampled, "proxy", "fs.Save"))
        daemon.stop()  # whatever was left is exported at the stop
        assert {s.trace_id for s in receiver.spans} == {sampled}
        assert "tracing: spans exported over OTLP/HTTP to " + receiver.url + "/v1/traces, 0% of new traces" \
            in daemon.logs()
        # What was not sampled still carried its context upstream (the decision travels with it).
        assert any(tp and tp.startswith(f"00-{unsampled}-") and tp.endswith("-00") for _, tp in upstream.asked)
    finally:
        daemon.stop()


def test_with_tracing_off_opentelemetry_is_never_imported(tmp_path):
    script = (
        "import sys\n"
        "from twisted.internet import reactor\n"
        "from athens.tap import Options, makeService\n"
        "options = Options()\n"
        "options.parseOptions(['--storage', 'memory', '--listen', 'tcp:0:interface=127.0.0.1'])\n"
        "service = makeService(options)\n"
        "service.startService()\n"
        "import athens.web.hitpath, athens.web.status\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry') or m == 'athens.tracing.otel')\n"
        "assert service.tracing is None and not loaded, loaded\n"
        "print('none loaded')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=source_env(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "none loaded" in result.stdout, result.stdout + result.stderr


def test_trace_settings_under_athens_names():
    loaded = config.load(environ={"ATHENS_TRACE_EXPORTER": "OTLP", "ATHENS_TRACE_EXPORTER_URL": "http://c:4318",
                                  "ATHENS_TRACE_SAMPLING_FRACTION": "0.25"})
    settings = TraceSettings.from_config(loaded)
    assert (settings.enabled, settings.endpoint(), settings.fraction) == (True, "http://c:4318/v1/traces", 0.25)
    assert settings.problems() == []
    assert TraceSettings("otlp", "http://c/custom/path").endpoint() == "http://c/custom/path"
    assert TraceSettings("otlp").endpoint() is None  # the SDK's OTEL_EXPORTER_OTLP_* variables then
    assert "OTLP/gRPC's port" in TraceSettings("otlp", "http://localhost:4317").problems()[0]
    for retired in ("jaeger", "datadog", "stackdriver"):
        settings = TraceSettings(retired)
        assert not settings.enabled and "no longer supported" in settings.problems()[0]
    assert "not an exporter" in TraceSettings("oltp").problems()[0]
    assert not TraceSettings().enabled and TraceSettings().problems() == []
    with pytest.raises(config.ConfigError, match="TRACE_SAMPLING_FRACTION"):
        config.load(environ={"ATHENS_TRACE_SAMPLING_FRACTION": "1.5"})


# -- the wrappers alone, on the SDK's in-memory exporter --


@pytest.fixture
def tracing():
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from twisted.internet import reactor

    from athens.tracing.otel import Tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider, provider.get_tracer("test"), CompositePropagator([TraceContextTextMapPropagator()]),
                      reactor)
    return tracing, exporter


@pytest_twisted.ensureDeferred
async def test_storage_spans_mark_failures_but_not_absence(tracing):
    tracing, exported = tracing
    from opentelemetry.trace import StatusCode

    from athens.storage.testing import FaultyStorage

    storage = tracing.storage(FaultyStorage(MemoryStorage(), {"list": StorageUnavailable("redis is down")}))
    with pytest.raises(NotFound):
        await storage.info("example.com/x", "v1.0.0")
    with pytest.raises(StorageUnavailable):
        await storage.list("example.com/x")
    assert await storage.exists("example.com/x", "v1.0.0") is False
    spans = {s.name: s for s in exported.get_finished_spans()}
    assert set(spans) == {"memory.Info", "memory.List", "memory.Exists"}
    assert spans["memory.Info"].attributes["athens.found"] is False
    assert spans["memory.Info"].status.status_code is StatusCode.UNSET
    assert spans["memory.List"].status.status_code is StatusCode.ERROR
    assert spans["memory.List"].events[0].name == "exception"
    assert spans["memory.Exists"].attributes["athens.module"] == "example.com/x"


@pytest_twisted.ensureDeferred
async def test_an_upstream_request_span_ends_with_its_body_and_carries_the_traceparent(tracing):
    tracing, exported = tracing
    from twisted.internet.protocol import Protocol
    from twisted.python.failure import Failure
    from twisted.web.client import ResponseDone

    sent: list[Headers] = []

    class Response:
        code = 200

        def deliverBody(self, protocol):  # noqa: N802 - Twisted's name
            self.protocol = protocol

    response = Response()

    class Agent:
        def request(self, method, uri, headers=None, bodyProducer=None):  # noqa: N803
            sent.append(headers)
            return succeed(response) if b"ok" in uri else fail(ConnectionRefusedError("refused"))

    agent = tracing.agent(Agent())
    got = await agent.request(b"GET", b"http://up/ok", Headers({"User-Agent": ["athens-py"]}))
    assert exported.get_finished_spans() == ()  # the body is still to come
    reader = Protocol()
    got.deliverBody(reader)
    response.protocol.makeConnection(None)
    assert reader.transport is None and exported.get_finished_spans() == ()
    response.protocol.connectionLost(Failure(ResponseDone()))
    (span,) = exported.get_finished_spans()
    assert span.name == "GET" and span.attributes["http.response.status_code"] == 200
    context = span.get_span_context()
    assert sent[0].getRawHeaders("traceparent") == [
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"]
    assert context.trace_flags & 1  # sampled
    assert sent[0].getRawHeaders("user-agent") == ["athens-py"]
    with pytest.raises(ConnectionRefusedError):
        await agent.request(b"GET", b"http://up/down")
    failed = exported.get_finished_spans()[-1]
    assert failed.status.status_code.name == "ERROR"

