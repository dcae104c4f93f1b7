"""
The access log: one line a request, written in batches.

Formatting a line through twisted.logger's publisher, filter and observer
chain costs more than answering a cache hit.  When our own observer is the
one in use (``LogFormat``, ``LogLevel``), lines are formatted here exactly as
it would format them and written together every ``interval`` seconds (and at
a clean stop); under ``twistd --logger`` they go through twisted.logger as
events, one by one.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import IO, Any, Callable, NamedTuple

import attrs
from twisted.logger import Logger
from twisted.python._tzhelper import FixedOffsetTimeZone

access = Logger(namespace="athens.access")

#: The line's wording; the text form of the log shows it after the time, system and request id.
FORMAT = '{client} "{method} {uri}" {code} {size} {duration_ms}ms {cache} "{user_agent}"'
BROKEN = " broken: {broken}"


class Line(NamedTuple):
    """What the log says of one request (a tuple: the hit path makes one per answer)."""

    client: str
    method: str
    uri: str
    code: int
    size: int
    duration_ms: float
    request_id: str
    #: ``hit`` (answered from the cache), ``miss`` (filled from the origin), ``-`` (neither applies).
    cache: str = "-"
    user_agent: str = "-"
    module: str = ""
    version: str = ""
    #: Why the answer broke off ("" when it went out whole).
    broken: str = ""

    def fields(self) -> dict[str, Any]:
        values = self._asdict()
        if not self.broken:
            del values["broken"]
        return values

    def format(self) -> str:
        """The wording, in twisted.logger's format syntax (one source for both ways of writing it)."""
        return FORMAT + BROKEN if self.broken else FORMAT

    def message(self) -> str:
        """:data:`FORMAT` filled in (an f-string: a third of the cost; a test holds the two to the same text)."""
        text = (f'{self.client} "{self.method} {self.uri}" {self.code} {self.size} {self.duration_ms}ms {self.cache} '
                f'"{self.user_agent}"')
        return f"{text} broken: {self.broken}" if self.broken else text


@attrs.define
class AccessLog:
    """Collects lines; ``stream`` None sends each one through twisted.logger at once instead."""

    stream: IO[str] | None = None
    json: bool = False
    #: False when ``LogLevel`` is above info: nothing is formatted at all.
    enabled: bool = True
    interval: float = 0.1
    clock: Any = None
    _pending: list[tuple[float, Line]] = attrs.field(factory=list)
    _flush_call: Any = None
    _second: int = -1
    _stamp: str = ""

    def record(self, line: Line) -> None:
        if not self.enabled:
            return
        if self.stream is None:
            access.info(line.format(), **line.fields())
            return
        self._pending.append((time.time(), line))
        if self._flush_call is None and self.clock is not None:
            self._flush_call = self.clock.callLater(self.interval, self.flush)
        elif len(self._pending) >= 4096 or self.clock is None:
            self.flush()

    def flush(self) -> None:
        """Write what is pending (also at a clean stop, so nothing is lost)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        pending, self._pending = self._pending, []
        if not pending or self.stream is None:
            return
        render: Callable[[float, Line], str] = self._json if self.json else self._text
        self.stream.write("".join(render(when, line) for when, line in pending))
        self.stream.flush()

    def _text(self, when: float, line: Line) -> str:
        # As twisted.logger's textFileLogObserver with our request id prefix (athens.logs) writes it.
        second = int(when)
        if second != self._second:
            tz = FixedOffsetTimeZone.fromLocalTimeStamp(when)
            self._second, self._stamp = second, datetime.fromtimestamp(when, tz).strftime("%Y-%m-%dT%H:%M:%S%z")
        return f"{self._stamp} [athens.access#info] [{line.request_id}] {line.message()}\n"

    @staticmethod
    def _json(when: float, line: Line) -> str:
        # As athens.logs.JSONLineObserver writes it.
        record = {
            "time": datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds"),
            "level": "info",
            "namespace": "athens.access",
            "msg": line.message(),
            **line.fields(),
        }
        return json.dumps(record) + "\n"
