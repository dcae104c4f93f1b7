"""
``POST /admin/prefetch``: ``athens-admin prefetch`` for operators who have
only HTTP (a CI job warming the proxy it is about to use).

Off unless ``PrefetchEndpoint = true``, and then only with basic auth on
(the daemon refuses to start otherwise): it makes the proxy fetch whatever
the body names.  The body is a go.sum, a go.mod or a list; the answer, once
every version is done, is the JSON summary, 200 when nothing failed, else 502.
"""

from __future__ import annotations

import json

import attrs
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from athens.origin import Origin
from athens.prefetch import JOBS, prefetch
from athens.wanted import read_wanted, sniff
from athens.web.responses import JSON, body, text

log = Logger()
#: Where it answers (under PathPrefix).
PATH = b"/admin/prefetch"
#: The largest body it reads: a go.sum of tens of thousands of lines.
MAX_BODY = 16 << 20
MAX_JOBS = 64


@attrs.define
class PrefetchEndpoint:
    origin: Origin

    async def handle(self, request: IRequest) -> bytes:
        data = await deferToThread(request.content.read, MAX_BODY + 1)
        if len(data) > MAX_BODY:
            return text(request, f"request body too large: at most {MAX_BODY} bytes", 413)
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError:
            return text(request, "bad request: the body is not UTF-8", 400)
        kind = _arg(request, b"format") or sniff("", content)
        jobs = _arg(request, b"jobs") or str(JOBS)
        if not jobs.isdigit() or not 0 < int(jobs) <= MAX_JOBS:
            return text(request, f"bad request: jobs must be 1 to {MAX_JOBS}", 400)
        try:
            wanted, errors = read_wanted("body", content, kind)
        except ValueError as e:
            return text(request, f"bad request: format: {e}", 400)
        if not wanted:
            return text(request, f"bad request: the body names no module version ({'; '.join(errors[:3]) or 'empty'})",
                        400)
        log.info("prefetch of {n} versions asked for", n=len(wanted))
        report = await prefetch(self.origin, wanted, int(jobs))
        report.unreadable += errors
        log.info("prefetch: {summary}", summary=report.summary().splitlines()[0])
        return body(request, JSON, json.dumps(report.as_json()).encode() + b"\n", 502 if report.failed else 200)


def _arg(request: IRequest, name: bytes) -> str:
    values = request.args.get(name) or [b""]
    return values[0].decode("utf-8", "replace")
