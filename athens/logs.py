"""
Structured logs through twisted.logger: plain text, or one flat JSON object a line.

The JSON form carries ``time``, ``level``, ``namespace``, ``msg`` (the
formatted text) and every scalar field of the event, which is what log
shippers (journald, Loki, ELK) index; Twisted's own JSON format nests
internals that are of no use there.
"""

from __future__ import annotations

import json
import sys
import time
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from zope.interface import implementer

LEVELS = {name: LogLevel.levelWithName(name) for name in ("debug", "info", "warn", "error", "critical")}
_SCALARS = (str, int, float, bool, type(None))


@implementer(ILogObserver)
class JSONLineObserver:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        record: dict[str, Any] = {
            "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc).isoformat(timespec="milliseconds"),
            "level": getattr(event.get("log_level"), "name", "info"),
            "namespace": event.get("log_namespace", "-"),
            "msg": formatEvent(event),
        }
        for key, value in event.items():
            if not key.startswith("log_") and isinstance(value, _SCALARS) and key not in record:
                record[key] = value
        failure = event.get("log_failure")
        if isinstance(failure, Failure):
            record["error"] = failure.getErrorMessage()
            record["traceback"] = failure.getTraceback()
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()


#: The id of the request being handled, for every log line written meanwhile (set by the web site).
current_request_id: ContextVar[str | None] = ContextVar("athens_request_id", default=None)


@implementer(ILogObserver)
class RequestIdObserver:
    """Adds ``request_id`` to events written while a request is handled; plain text shows it first."""

    def __init__(self, inner: ILogObserver, plain: bool) -> None:
        self.inner, self.plain = inner, plain

    def __call__(self, event: dict[str, Any]) -> None:
        request_id = event.get("request_id") or current_request_id.get()
        if request_id and "request_id" not in event:
            event = dict(event, request_id=request_id)
        if request_id and self.plain and "log_format" in event:
            event = dict(event, log_format="[{request_id}] " + (event["log_format"] or ""))
        self.inner(event)


@implementer(ILogFilterPredicate)
class QuietRetries:
    """
    One "Scheduling retry" line a minute per endpoint: a store that is down
    (Redis: ten pooled connections, each retrying) would otherwise fill the log.
    """

    def __init__(self, interval: float = 60.0, clock: Any = time.monotonic) -> None:
        self.interval, self.clock = interval, clock
        self._last: dict[str, float] = {}

    def __call__(self, event: dict[str, Any]) -> PredicateResult:
        if not str(event.get("log_format", "")).startswith("Scheduling retry"):
            return PredicateResult.maybe
        key = str(event.get("endpoint"))
        now = self.clock()
        if now - self._last.get(key, -self.interval) < self.interval:
            return PredicateResult.no
        self._last[key] = now
        return PredicateResult.maybe


def make_observer(level: str = "info", fmt: str = "plain", stream: IO[str] | None = None) -> ILogObserver:
    """An observer for ``LogLevel``/``LogFormat``; writes to stdout (journald and containers read it)."""
    stream = sys.stdout if stream is None else stream
    inner = JSONLineObserver(stream) if fmt == "json" else textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
    return FilteringLogObserver(RequestIdObserver(inner, fmt != "json"), [predicate, QuietRetries()])
