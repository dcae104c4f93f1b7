"""
HTTP caching of protocol answers, so that a CDN or any cache in front absorbs hits.

A version's ``.info``, ``.mod`` and ``.zip`` never change: they are fresh
for a year and ``immutable``, with a strong ``ETag`` and a ``Last-Modified``
that are the same on every node holding the version (both derive from what
is stored, never from when or where it was stored).  Lists, ``@latest`` and
queries change: they are fresh for ``ListCacheTTL``.  Errors are ``no-store``,
except a plain "not found", which a cache may keep for a minute.  The values
are computed once per answer: the hit path replays them as remembered bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import datetime

import attrs
from twisted.web.http import datetimeToString, stringToDatetime
from twisted.web.iweb import IRequest

#: A stored version never changes: a year, the longest RFC 9111 suggests.
YEAR = 31536000
#: Errors, redirects, and answers that depend on a request header a cache would not key on.
NO_STORE = b"no-store"
#: Seconds a cache may keep a plain 404 or 410 (proxy.golang.org sends 1800, goproxy 60 to 600).
NOT_FOUND_MAX_AGE = 60


def max_age(seconds: int, shared: bool = True, immutable: bool = False) -> bytes:
    """
    ``Cache-Control`` for an answer fresh for ``seconds``.  ``shared`` False
    (basic auth is on): without ``public``, a shared cache must not give an
    answer to a request with credentials to anyone else (RFC 9111 3.5).
    """
    value = b"public, max-age=%d" % seconds if shared else b"max-age=%d" % seconds
    return value + b", immutable" if immutable else value


IMMUTABLE = max_age(YEAR, immutable=True)


@attrs.frozen
class Validators:
    """The caching headers of one answer, and what conditional requests are judged against."""

    cache_control: bytes
    #: A strong entity tag, quoted; ``b""``: none.
    etag: bytes = b""
    #: Whole seconds since the epoch; None: no ``Last-Modified``.
    modified: int | None = None
    #: A zip: ``Range`` requests are honoured.
    ranges: bool = False

    @property
    def last_modified(self) -> bytes:
        return datetimeToString(self.modified) if self.modified is not None else b""

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [(b"Cache-Control", self.cache_control)]
        if self.etag:
            out.append((b"ETag", self.etag))
        if self.modified is not None:
            out.append((b"Last-Modified", self.last_modified))
        if self.ranges:
            out.append((b"Accept-Ranges", b"bytes"))
        return out

    def lines(self) -> bytes:
        """The header lines, as the hit path sends them after a remembered answer's others."""
        return b"".join(b"%s: %s\r\n" % pair for pair in self.headers())

    def apply(self, request: IRequest) -> None:
        for name, value in self.headers():
            request.setHeader(name, value)

    def not_modified(self, request: IRequest) -> bool:
        """
        Whether a GET or HEAD's preconditions say the client's copy is current
        (RFC 9110 13.2.2): ``If-None-Match`` by weak comparison, else
        ``If-Modified-Since`` against ``Last-Modified``.
        """
        if request.method not in (b"GET", b"HEAD"):
            return False
        none_match = request.getHeader(b"if-none-match")
        if none_match is not None:
            return bool(self.etag) and _matches(none_match, self.etag, weak=True)
        since = request.getHeader(b"if-modified-since")
        if since is None or self.modified is None:
            return False
        try:
            return self.modified <= stringToDatetime(since)
        except (ValueError, IndexError):
            return False  # not an HTTP-date: ignored, as the RFC says

    def range_applies(self, request: IRequest) -> bool:
        """``If-Range`` (absent, or naming this very representation by strong ETag or exact date)."""
        condition = request.getHeader(b"if-range")
        if condition is None:
            return True
        condition = condition.strip()
        if condition.startswith((b'"', b"W/")):
            return bool(self.etag) and _matches(condition, self.etag, weak=False)
        return self.modified is not None and condition == self.last_modified


_TAG = re.compile(rb'\s*(W/)?("[^"]*")\s*(?:,|$)')


def _matches(header: bytes, etag: bytes, weak: bool) -> bool:
    """Whether a list of entity tags (or ``*``) names ``etag``; a weak tag only by weak comparison."""
    if header.strip() == b"*":
        return True
    for m in _TAG.finditer(header):
        if m.group(2) == etag and (weak or not m.group(1)):
            return True
    return False


def content_etag(data: bytes) -> bytes:
    """A strong tag for a small answer: its own hash."""
    return b'"%s"' % hashlib.sha256(data).hexdigest()[:32].encode()


def zip_etag(info: bytes, size: int) -> bytes:
    """
    A strong tag for a zip without reading it: the hash of the version's
    ``.info`` (its version and commit time, and for upstream fills its VCS
    origin) and the zip's size.  The zip is made from that commit, so another
    zip under the same version (deleted and fetched again from a moved tag)
    comes with another ``.info``, hence another tag.
    """
    return b'"z%s"' % hashlib.sha256(b"zip\n%s\n%d" % (info, size)).hexdigest()[:31].encode()


def version_time(info: bytes | None) -> int | None:
    """The ``Time`` of a version's ``.info`` in whole seconds, never later than now; None if it has none (or before 1970)."""
    if info is None:
        return None
    try:
        value = json.loads(info)["Time"]
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if moment.tzinfo is None or moment.year < 1970:
        return None
    return min(int(moment.timestamp()), int(time.time()))
