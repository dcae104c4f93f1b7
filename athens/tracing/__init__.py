"""
OpenTelemetry tracing under Athens' names (``TraceExporter = "otlp"``,
``TraceExporterURL``, ``TraceSamplingFraction``), exported over OTLP/HTTP.

This module is all that loads while tracing is off: it reads the settings
and says what is wrong with them.  :func:`start` imports the OpenTelemetry
SDK (the ``athens-py[otel]`` extra) only when ``TraceExporter`` asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

if TYPE_CHECKING:
    from athens.tracing.otel import Tracing

#: What Athens once exported to and now refuses (it logs why and runs without tracing, as athens-py does).
RETIRED_EXPORTERS = ("jaeger", "datadog", "stackdriver")


@attrs.frozen
class TraceSettings:
    #: ``otlp``, or empty: off.
    exporter: str = ""
    #: The collector's OTLP/HTTP URL; empty: ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT``, else localhost:4318.
    url: str = ""
    #: Of the traces that start here, the fraction sampled (a client's ``traceparent`` decides for its own).
    fraction: float = 1.0

    @classmethod
    def from_config(cls, config: Any) -> "TraceSettings":
        return cls(config.trace_exporter.strip().lower(), config.trace_exporter_url, config.trace_sampling_fraction)

    @property
    def enabled(self) -> bool:
        return self.exporter == "otlp"

    def endpoint(self) -> str | None:
        """The URL spans are posted to: ``/v1/traces`` is added to a URL without a path, as the SDK does."""
        if not self.url:
            return None
        if urlsplit(self.url).path in ("", "/"):
            return self.url.rstrip("/") + "/v1/traces"
        return self.url

    def problems(self) -> list[str]:
        """Warnings for the start-up log (tracing stays off, or goes on, either way the daemon runs)."""
        if self.exporter in RETIRED_EXPORTERS:
            return [f"TraceExporter: {self.exporter!r} is no longer supported (nor by Athens): traces are exported "
                    f"with OTLP only (TraceExporter = \"otlp\"); tracing is off"]
        if self.exporter and not self.enabled:
            return [f"TraceExporter: {self.exporter!r} is not an exporter (only \"otlp\" is): tracing is off"]
        if self.enabled and urlsplit(self.url).port == 4317:
            return [f"TraceExporterURL: {self.url} is OTLP/gRPC's port (Athens exports over gRPC); athens-py "
                    f"exports OTLP over HTTP, the collector's port 4318 by default"]
        return []


def start(settings: TraceSettings, reactor: Any) -> "Tracing | None":
    """A tracer provider exporting to the collector, or None when tracing is off."""
    if not settings.enabled:
        return None
    try:
        from athens.tracing.otel import Tracing
    except ImportError as e:
        from athens.config import ConfigError

        raise ConfigError(f"TraceExporter: \"otlp\" needs the OpenTelemetry packages (pip install "
                          f"'athens-py[otel]'): {e}") from None
    return Tracing.start(settings, reactor)
