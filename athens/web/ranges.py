"""
Byte ranges of a zip (RFC 9110 14), so that a large download can resume.

One range is served (206); a request for several is answered whole (200),
which the RFC allows; a range that starts past the end is 416.  A blob that
can start mid-way (a file: ``chunks_from``) is read from there; any other is
read from the start and the bytes before the range are dropped.
"""

from __future__ import annotations

import re
from typing import Any, AsyncIterator

import attrs

_ONE = re.compile(rb"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class Unsatisfiable(Exception):
    """The range asks for nothing the representation has (416)."""


@attrs.frozen
class Window:
    """Bytes ``start`` to ``end`` inclusive, of ``size``."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> bytes:
        return b"bytes %d-%d/%d" % (self.start, self.end, self.size)


def requested(header: bytes | None, size: int) -> Window | None:
    """
    The one range ``header`` asks of ``size`` bytes; None for the whole
    (no header, several ranges, another unit, or a malformed one: all ignored,
    as the RFC allows).  Raises :class:`Unsatisfiable`.
    """
    if header is None or len(header) > 200:
        return None
    m = _ONE.match(header)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable()
        return Window(max(size - suffix, 0), size - 1, size)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise Unsatisfiable()
    return Window(start, min(int(last), size - 1) if last else size - 1, size)


async def window_of(blob: Any, window: Window) -> AsyncIterator[bytes]:
    """The bytes of ``window`` from a Blob."""
    start = getattr(blob, "chunks_from", None)
    source = start(window.start) if start is not None else blob.chunks()
    skip = 0 if start is not None else window.start
    left = window.length
    try:
        async for chunk in source:
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk, skip = chunk[skip:], 0
            if len(chunk) >= left:
                yield chunk[:left]
                return
            left -= len(chunk)
            yield chunk
    finally:
        close = getattr(source, "aclose", None)  # (an async generator: stopped early, it releases what it holds)
        if close is not None:
            await close()
