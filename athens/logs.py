"""Structured logs through twisted.logger, as plain text or one JSON object a line."""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

LEVELS = {name: LogLevel.levelWithName(name) for name in ("debug", "info", "warn", "error", "critical")}


def make_observer(level: str = "info", fmt: str = "plain", stream: IO[str] | None = None) -> ILogObserver:
    """An observer for ``LogLevel``/``LogFormat``; writes to stdout (journald and containers read it)."""
    stream = sys.stdout if stream is None else stream
    inner = jsonFileLogObserver(stream) if fmt == "json" else textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
    return FilteringLogObserver(inner, [predicate])
