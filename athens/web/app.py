"""The Klein application: operations routes first, the protocol catch-all last."""

from __future__ import annotations

import base64
from typing import Any

import werkzeug.exceptions
from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from werkzeug.exceptions import MethodNotAllowed
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from athens.metrics import Metrics
from athens.origin import Origin
from athens.storage.interface import IStorage
from athens.sumdb import SumDBProxy
from athens.vulndb import web as vulnweb
from athens.vulndb.database import VulnDatabase
from athens.vulndb.policy import VulnPolicy
from athens.web.accesslog import AccessLog
from athens.web.admin import PATH as PREFETCH_PATH
from athens.web.admin import PrefetchEndpoint
from athens.web.auth import BasicAuth
from athens.web.forcessl import ForceSSL
from athens.web.answers import LIST_REPLAY, Answers
from athens.web.hitpath import HitPath
from athens.web.ops import DEFAULT_ROBOTS, OpsResource
from athens.web.protocol import ProtocolResource
from athens.web.responses import body, text
from athens.web.site import ProxySite
from athens.web.status import ClientSettings, StatusPage
from athens.web.validator import ValidatorHook

GET = ["GET", "HEAD"]
log = Logger()


def make_app(storage: IStorage, clock: IReactorTime | None = None, origin: Origin | None = None,
             redirect_code: int = 301, sumdb: SumDBProxy | None = None, path_prefix: str = "",
             robots: bytes = DEFAULT_ROBOTS, metrics: Metrics | None = None,
             fill_after_client_leaves: bool = True, validator: ValidatorHook | None = None,
             protocol: ProtocolResource | None = None, *, vulndb: VulnDatabase | None = None,
             admin_prefetch: bool = False, index_enabled: bool = True, home: StatusPage | None = None) -> Klein:
    """Routes over ``storage``; with an ``origin``, misses are filled from it."""
    app = Klein()
    metrics = metrics or Metrics()
    ops = OpsResource(storage, clock, robots, details=(vulndb.describe,) if vulndb else (),
                      index_enabled=index_enabled)
    if home is None:
        home = StatusPage(storage, clock, metrics, ClientSettings(path_prefix),
                          fills=lambda: origin.stash.recent if origin is not None else ())
    protocol = protocol or ProtocolResource(storage, origin, redirect_code, metrics, fill_after_client_leaves,
                                            validator)

    app.route("/healthz", methods=GET, endpoint="healthz")(ops.healthz)
    app.route("/readyz", methods=GET, endpoint="readyz")(ops.readyz)
    app.route("/version", methods=GET, endpoint="version")(ops.version)
    app.route("/catalog", methods=GET, endpoint="catalog")(ops.catalog)
    app.route("/index", methods=GET, endpoint="index")(ops.index)
    app.route("/robots.txt", methods=GET, endpoint="robots")(ops.robots_txt)

    @app.route("/metrics", methods=GET, endpoint="metrics")
    def prometheus(request: IRequest) -> bytes:
        if not metrics.exported:
            return text(request, "not found: metrics are off (StatsExporter)", 404)
        content_type, data = metrics.exposition()
        return body(request, content_type, data)

    @app.route("/sumdb/<name>/<path:path>", methods=GET, endpoint="sumdb")
    def checksums(request: IRequest, name: str, path: str):  # type: ignore[no-untyped-def]
        if sumdb is None:
            return text(request, "not found: this proxy does not carry checksum databases", 404)
        return sumdb.handle(request, name, path)

    @app.route("/vuln/<path:path>", methods=GET, endpoint="vuln")
    def vulnerabilities(request: IRequest, path: str) -> bytes:
        if vulndb is None:
            return text(request, "not found: this proxy does not serve a vulnerability database", 404)
        return vulnweb.serve(request, vulndb, path)

    if admin_prefetch and origin is not None:
        app.route(PREFETCH_PATH.decode(), methods=["POST"], endpoint="prefetch")(PrefetchEndpoint(origin).handle)

    @app.route("/<path:path>", methods=GET, endpoint="protocol")
    def proxy(request: IRequest, path: str):  # type: ignore[no-untyped-def]
        return protocol.handle(request, path)

    app.route("/", methods=GET, endpoint="home")(home.render)

    @app.handle_errors(Exception)
    def failed(request: IRequest, failure: Failure) -> bytes:
        if failure.check(MethodNotAllowed):
            return text(request, "method not allowed: this proxy answers GET and HEAD", 405)
        if failure.check(werkzeug.exceptions.NotFound):
            return text(request, "not found", 404)
        log.failure("unhandled error for {uri}", failure, uri=request.uri)
        return text(request, "internal error", 500)

    return app


def make_resource(storage: IStorage, clock: IReactorTime | None = None, origin: Origin | None = None,
                  redirect_code: int = 301, sumdb: SumDBProxy | None = None, path_prefix: str = "",
                  robots: bytes = DEFAULT_ROBOTS, basic_auth: tuple[str, str] | None = None,
                  metrics: Metrics | None = None, fill_after_client_leaves: bool = True,
                  validator: ValidatorHook | None = None, protocol: ProtocolResource | None = None,
                  force_ssl: bool = False, *, vulndb: VulnDatabase | None = None,
                  admin_prefetch: bool = False, index_enabled: bool = True,
                  home: StatusPage | None = None) -> IResource:
    """The whole site; under ``path_prefix`` (``/athens``) when one is set, and nothing outside it."""
    metrics = metrics or Metrics()
    if protocol is None:
        protocol = ProtocolResource(storage, origin, redirect_code, metrics, fill_after_client_leaves, validator,
                                    shared=basic_auth is None)
    resource = make_app(storage, clock, origin, redirect_code, sumdb, path_prefix, robots, metrics,
                        fill_after_client_leaves, validator, protocol, vulndb=vulndb,
                        admin_prefetch=admin_prefetch, index_enabled=index_enabled, home=home).resource()
    if basic_auth is not None:
        resource = BasicAuth(resource, *basic_auth, path_prefix=path_prefix)
    if force_ssl:
        resource = ForceSSL(resource)
    if not path_prefix:
        return resource
    root = parent = OffPrefix("not found: this proxy answers under " + path_prefix)
    segments = path_prefix.strip("/").split("/")
    for segment in segments[:-1]:
        child = OffPrefix("not found: this proxy answers under " + path_prefix)
        parent.putChild(segment.encode(), child)
        parent = child
    parent.putChild(segments[-1].encode(), resource)
    return root


class OffPrefix(Resource):
    """A path segment above the prefix: everything off the prefix is a plain 404."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def getChild(self, path: bytes, request: IRequest) -> IResource:  # noqa: N802 - Twisted's name
        return self

    def render(self, request: IRequest) -> bytes:
        return text(request, self.message, 404)


def make_site(storage: IStorage, clock: IReactorTime | None = None, origin: Origin | None = None,
              redirect_code: int = 301, sumdb: SumDBProxy | None = None, path_prefix: str = "",
              robots: bytes = DEFAULT_ROBOTS, basic_auth: tuple[str, str] | None = None,
              metrics: Metrics | None = None, fill_after_client_leaves: bool = True,
              validator: ValidatorHook | None = None, *, idle_timeout: float = 60.0,
              access_log: AccessLog | None = None, hit_path: bool = True, list_ttl: float = LIST_REPLAY,
              force_ssl: bool = False, vulndb: VulnDatabase | None = None,
              vuln_policy: VulnPolicy | None = None, admin_prefetch: bool = False, list_max_age: int = 60,
              index_enabled: bool = True, home: StatusPage | None = None, tracing: Any = None) -> ProxySite:
    """
    The site of :func:`make_resource`, with the hit path in front unless ``hit_path`` is False; ``vulndb``
    served at ``/vuln/``, ``vuln_policy`` judging zips; ``admin_prefetch``: ``POST /admin/prefetch``.
    ``list_max_age``: how long a cache in front may keep a list or ``@latest`` (``ListCacheTTL``);
    ``index_enabled`` False: ``/index`` answers nothing (``IndexType = "none"``); ``home``: the status page;
    ``tracing``: a span a request (:class:`athens.tracing.otel.Tracing`).
    """
    metrics = metrics or Metrics()
    access_log = access_log or AccessLog()
    answers = Answers() if hit_path else None
    protocol = ProtocolResource(storage, origin, redirect_code, metrics, fill_after_client_leaves, validator,
                                answers=answers, list_ttl=list_ttl, vuln_policy=vuln_policy,
                                list_max_age=list_max_age, shared=basic_auth is None)
    resource = make_resource(storage, clock, origin, redirect_code, sumdb, path_prefix, robots, basic_auth, metrics,
                             fill_after_client_leaves, validator, protocol, force_ssl, vulndb=vulndb,
                             admin_prefetch=admin_prefetch, index_enabled=index_enabled, home=home)
    hits = None
    if answers is not None and vulndb is not None:  # a new database may flag a remembered zip: judge it again
        vulndb.listeners.append(lambda snapshot: answers.clear())
    if answers is not None:
        authorization = None
        if basic_auth is not None:
            authorization = b"Basic " + base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode())
        hits = HitPath(answers, metrics, access_log, authorization, protocol.record_use, https_only=force_ssl,
                       tracing=tracing)
    return ProxySite(resource, metrics, idle_timeout, hits=hits, access_log=access_log, tracing=tracing)
