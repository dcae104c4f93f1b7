"""
The home page: a status page (how to point the go command here, what the
cache holds, how it has served since start, the last fills), from a Go
``html/template``: athens-py's own (``status.html``) or the operator's
``HomeTemplatePath``, as in Athens.

Nothing here reads the whole store for a page view: the store's count is
cached (:class:`athens.storage.summary.SummaryCache`) and recounted in the
background at most every few minutes, when the page is viewed.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Callable, Iterable

import attrs
from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from athens import __version__
from athens.metrics import Metrics
from athens.stash import Fill
from athens.storage.interface import IStorage
from athens.storage.summary import SummaryCache
from athens.web.gotemplate import Template, TemplateError, parse
from athens.web.responses import body, text

log = Logger()

#: athens-py's own page (read when the module is imported: never on the reactor's time).
DEFAULT_TEMPLATE = parse(resources.files("athens.web").joinpath("status.html").read_text("utf-8"))
#: Athens' default ``HomeTemplatePath``: a host that ran Athens keeps its page.
ATHENS_TEMPLATE_PATH = "/var/lib/athens/home.html"
HTML = b"text/html; charset=utf-8"
#: Our page loads nothing and runs nothing; an operator's template may, so it gets no such policy.
OWN_PAGE_POLICY = b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"


@attrs.frozen
class ClientSettings:
    """What the go command needs to use this proxy, from the configuration."""

    path_prefix: str = ""
    #: ``NoSumPatterns``: shown as ``GONOSUMDB``.
    no_sum_patterns: tuple[str, ...] = ()
    #: Checksum databases this proxy carries, by the names the go command uses.
    sumdbs: tuple[str, ...] = ("sum.golang.org",)
    #: What ``GOSUMDB`` must be (``name+hash+key``); empty when the go command's default is right.
    gosumdb: str = ""
    basic_auth: bool = False
    #: Several worker processes serve the port (fills are listed per process).
    workers: bool = False
    #: The organisation's checksum database this proxy runs (``OwnSumDB.Name``) and its verifier key, if any:
    #: then GOSUMDB names it, at this proxy's URL, and no module needs GONOSUMDB.
    own_sumdb: str = ""
    own_sumdb_key: str = ""

    @classmethod
    def from_config(cls, config: Any, workers: bool = False, own: Any = None) -> "ClientSettings":
        """``own``: the :class:`athens.sumdb.OwnSumDB` the proxy runs, if any."""
        from athens.sumdb import sumdb_name, verifier_key

        names = tuple(sumdb_name(url) for url in config.sum_dbs)
        gosumdb = ""
        if names and names[0] != "sum.golang.org":
            # The go command must trust the database the proxy carries; its key is GOSUMDB's value.
            key = next((k for k in config.sum_db_keys if k.split("+", 1)[0] == names[0]), "")
            gosumdb = key or (names[0] if verifier_key(names[0], ()) else "")
        return cls(config.path_prefix, config.no_sum_patterns, names, gosumdb,
                   bool(config.basic_auth_user and config.basic_auth_pass), workers,
                   own.name if own is not None else "", own.log.signer.verifier().text() if own is not None else "")


@attrs.define
class StatusPage:
    """``/``: renders the template with what the proxy knows; the store's count comes from a cache."""

    storage: IStorage
    #: Times the first count's wait; None: no limit (tests without a reactor).
    clock: IReactorTime | None = None
    metrics: Metrics = attrs.field(factory=Metrics)
    client: ClientSettings = ClientSettings()
    #: ``HomeTemplatePath``: used when the file exists (read at every view, so edits show at once).
    template_path: str = ""
    #: The last fills, newest first (the stash's).
    fills: Callable[[], Iterable[Fill]] = lambda: ()
    #: How long the first view waits for the first count before it shows "counting".
    first_count_wait: float = 2.0
    recount_every: float = 300.0
    started: float = attrs.field(factory=time.time)
    summaries: SummaryCache = attrs.field(default=None)
    #: The operator's template as last read, and parsed: parsed again only when the file changes.
    _parsed: tuple[str, Template] | None = None

    def __attrs_post_init__(self) -> None:
        if self.summaries is None:
            self.summaries = SummaryCache.of(self.storage, self.clock.seconds if self.clock else time.time,
                                             self.recount_every)

    async def render(self, request: IRequest) -> bytes:
        own = None
        if self.template_path:
            try:
                source = await deferToThread(_read, self.template_path)
            except OSError as e:  # as Athens: said in the log, and the built-in page shown
                log.warn("HomeTemplatePath {path}: {error}", path=self.template_path, error=str(e))
                source = None
            if source is not None:
                try:
                    own = self._template(source)
                except TemplateError as e:
                    log.error("HomeTemplatePath {path}: {error}", path=self.template_path, error=str(e))
                    return text(request, f"home template {self.template_path}: {e}", 500)
        await self._counted()
        data = self.data(request)
        try:
            page = (own or DEFAULT_TEMPLATE).render(data)
        except TemplateError as e:
            log.error("HomeTemplatePath {path}: {error}", path=self.template_path, error=str(e))
            return text(request, f"home template {self.template_path}: {e}", 500)
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if own is None:
            request.setHeader(b"content-security-policy", OWN_PAGE_POLICY)
        return body(request, HTML, page.encode("utf-8"))

    def _template(self, source: str) -> Template:
        if self._parsed is None or self._parsed[0] != source:
            self._parsed = (source, parse(source))
        return self._parsed[1]

    async def _counted(self) -> None:
        """Start a count if the last is old; the very first view waits a little for it."""
        cache = self.summaries
        cache.refresh()
        if cache.last is None and not cache.error:
            settled = cache.settled()
            if self.clock is not None:
                settled.addTimeout(self.first_count_wait, self.clock)
            try:
                await settled
            except (TimeoutError, CancelledError):
                pass  # shown as "counting"

    def data(self, request: IRequest) -> dict[str, Any]:
        """The template's variables (Athens': ``Host``, ``NoSumPatterns``; the rest are athens-py's)."""
        host = _host(request)
        url = host + self.client.path_prefix
        goproxy = url
        if self.client.basic_auth:
            scheme, _, rest = url.partition("://")
            goproxy = f"{scheme}://USER:PASSWORD@{rest}"
        own = self.client.own_sumdb
        cache = self.summaries
        now = cache.now()
        summary = cache.last
        totals = self.metrics.totals()
        ratio = totals.hit_ratio
        links = {name: f"{self.client.path_prefix}/{path}" for name, path in (
            ("Catalog", "catalog"), ("Index", "index"), ("Metrics", "metrics"), ("Version", "version"),
            ("Ready", "readyz"), ("Health", "healthz"))}
        if not self.metrics.exported:  # StatsExporter = "": no /metrics to link to
            links["Metrics"] = ""
        return {
            "Host": host,
            "NoSumPatterns": ",".join(self.client.no_sum_patterns),
            "URL": url,
            "GOPROXY": goproxy + ",direct",
            "GONOSUMDB": "" if own else ",".join(self.client.no_sum_patterns),
            "GOSUMDB": f"{self.client.own_sumdb_key} {url}/sumdb/{own}" if own else self.client.gosumdb,
            "OwnSumDB": own,
            "SumDBs": list(self.client.sumdbs),
            "BasicAuth": self.client.basic_auth,
            "Version": __version__,
            "Uptime": duration(time.time() - self.started),
            "Storage": self.storage.name,
            "Counted": summary is not None,
            "Modules": f"{summary.modules:,}" if summary else "",
            "Versions": f"{summary.versions:,}" if summary else "",
            "Size": size(summary.size) if summary and summary.size is not None else "",
            "SizeOf": summary.size_of if summary and summary.size is not None else "",
            "CountedAgo": duration(now - cache.counted_at) if summary else "",
            "CountError": cache.error,
            "RecountEvery": duration(cache.max_age),
            "Hits": f"{totals.hits:,}",
            "Misses": f"{totals.misses:,}",
            "HitRatio": f"{ratio:.1%}" if ratio is not None else "",
            "Stored": f"{totals.stored:,}",
            "NotFound": f"{totals.not_found:,}",
            "OriginFailures": f"{totals.failed:,}",
            "OriginFailed": totals.failed > 0,
            "Workers": self.client.workers,
            "Fills": [{
                "Path": fill.module,
                "Version": fill.version,
                "At": datetime.fromtimestamp(fill.at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                "Ago": duration(time.time() - fill.at),
                "Took": duration(fill.seconds),
            } for fill in self.fills()],
            "Links": links,
        }


def _host(request: IRequest) -> str:
    """Athens' ``Host``: the request's Host header with the scheme the client used (or says it used)."""
    host = (request.getHeader(b"host") or b"").decode("ascii", "replace")
    if not host:
        address = request.getHost()
        host = f"{getattr(address, 'host', 'localhost')}:{getattr(address, 'port', 80)}"
    forwarded = (request.getHeader(b"x-forwarded-proto") or b"").strip().lower()
    scheme = "https" if request.isSecure() or forwarded == b"https" else "http"
    return f"{scheme}://{host}"


def _read(path: str) -> str | None:
    """The template file, or None when there is none (then athens-py's own page is shown, as Athens does)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(1 << 20)
    except (FileNotFoundError, NotADirectoryError):
        return None


def size(n: int) -> str:
    """Bytes for people: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``5 min``, ``3 h 2 min``, ``2 d 3 h``."""
    if seconds < 10:
        return f"{max(seconds, 0):.1f} s"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
