"""
``/vuln/``: the copy of the vulnerability database, in the layout govulncheck reads.

``govulncheck -db https://proxy/vuln`` first asks ``HEAD index/modules.json.gz``
(200 tells it the layout), then ``GET index/db.json.gz``,
``index/modules.json.gz`` and ``ID/<id>.json.gz``, and inflates each body
itself: a ``.json.gz`` is sent as the gzip file it is (``application/gzip``,
no ``Content-Encoding``, which Go's HTTP client would undo first).  The
``.json`` form is sent inflated, or gzipped with ``Content-Encoding: gzip`` to
a client that accepts it.  ``vulndb.zip`` is the whole database in one file
(what another proxy copies).  Without a copy yet: 503.
"""

from __future__ import annotations

import re

from twisted.web.iweb import IRequest

from athens.vulndb.database import VulnDatabase
from athens.web.responses import JSON, ZIP, body, text

GZIP = b"application/gzip"
_PATH = re.compile(r"(index/(?:db|modules|vulns)|ID/[A-Za-z0-9][A-Za-z0-9._-]{0,99})\.json(\.gz)?")


def accepts_gzip(request: IRequest) -> bool:
    """``Accept-Encoding`` names gzip (or ``*``), and not with ``q=0``."""
    header = (request.getHeader(b"accept-encoding") or b"").decode("latin-1").lower()
    for item in header.split(","):
        coding, *params = item.split(";")
        if coding.strip() not in ("gzip", "x-gzip", "*"):
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def serve(request: IRequest, database: VulnDatabase, path: str) -> bytes:
    """Answer ``/vuln/<path>`` from the copy in service."""
    snapshot = database.snapshot
    m = _PATH.fullmatch(path)
    if path != "vulndb.zip" and m is None:
        return text(request, f"not found: {path!r} is not a file of the vulnerability database", 404)
    if snapshot is None:
        return text(request, "no copy of the vulnerability database yet (see VulnDBURL, athens-admin vulndb import)",
                    503)
    if m is None:
        return body(request, ZIP, snapshot.archive)
    endpoint, gz = m.group(1), bool(m.group(2))
    data = snapshot.gz.get(endpoint)
    if data is None:
        return text(request, f"not found: {endpoint} is not in the vulnerability database", 404)
    if gz:
        return body(request, GZIP, data)
    request.setHeader(b"vary", b"Accept-Encoding")
    if accepts_gzip(request):
        request.setHeader(b"content-encoding", b"gzip")
        return body(request, JSON, data)
    return body(request, JSON, snapshot.json(endpoint) or b"")
