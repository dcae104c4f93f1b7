"""The service tree twistd runs: listen, serve, and close storage last."""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING, Any

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredSemaphore, TimeoutError, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.components import Componentized

from athens import __version__
from athens.config import Config, ConfigError, port_to_endpoint
from athens.fetch.credentials import prepare_home
from athens.fetch.chain import ChainFetcher, GoproxyError, PerModuleFetcher, goproxy_of, parse_goproxy
from athens.fetch.gocmd import GoFetcher
from athens.fetch.interface import IFetcher
from athens.fetch.toolchains import ToolchainShelf, default_directory
from athens.fetch.upstream import Pace, UpstreamFetcher, make_pool
from athens.filter import Action, FilterError, load_filter
from athens.listcache import ListCache
from athens.origin import Origin
from athens.policy import PolicyError, load_policy
from athens.singleflight.interface import ILock
from athens.singleflight.redis import connect_sentinel, redis_lock
from athens.stash import Stash
from athens.storage.redis import connect as connect_redis
from athens.logs import LEVELS, make_observer
from athens.metrics import Metrics
from athens.storage.cached import CachedStorage
from athens.storage.interface import IStorage, StorageError
from athens.sumdb import (ChecksumVerifier, OwnSumDBResource, SumDBProxy, TileCache, build_own_sumdb, sumdb_name,
                          verifier_key)
from athens.vulndb.service import VulnDBService
from athens.web.accesslog import AccessLog
from athens.web.answers import LIST_REPLAY
from athens.web.app import make_site
from athens.web.ops import DEFAULT_ROBOTS
from athens.tracing import TraceSettings
from athens.tracing import start as start_tracing
from athens.web.reloadtls import ReloadableTLS, TLSFilesError
from athens.web.status import ClientSettings, StatusPage
from athens.web.validator import ValidatorHook
from athens.workers import AdoptedPort, WorkerSupervisor

if TYPE_CHECKING:
    from athens.tracing.otel import Tracing

log = Logger()


def build_origin(config: Config, storage: IStorage, reactor: Any, metrics: Metrics | None = None,
                 tracing: Tracing | None = None) -> Origin:
    """The fetcher, stash, list cache and policies a cache miss uses, from the configuration."""
    try:
        policy = load_policy(config.download_mode, config.download_url)
    except PolicyError as e:
        raise ConfigError(f"DownloadMode: {e}") from None
    try:
        filter_rules = load_filter(config.filter_file)
    except FilterError as e:
        raise ConfigError(f"FilterFile: {e}") from None
    if filter_rules is not None and not config.global_endpoint and any(
        r.action is Action.DIRECT for r in filter_rules.rules
    ):
        raise ConfigError("GlobalEndpoint: the filter file has D rules but no GlobalEndpoint is set")
    environ = dict(os.environ)
    home = prepare_home(config, environ)
    goproxy = goproxy_of(config.go_env)
    go = GoFetcher(
        reactor,
        go_binary=config.go_binary,
        # The go command is the "direct" entry: it always fetches from the VCS itself.
        env_vars=tuple(e for e in config.go_env if e.partition("=")[0].strip() != "GOPROXY") + ("GOPROXY=direct",),
        workers=config.go_get_workers,
        timeout=config.stash_timeout,
        work_dir=config.go_get_dir,
        home=home,
        no_sum_patterns=config.private_patterns,
        base_env=environ,
        toolchains=shelf if (shelf := ToolchainShelf(default_directory(config.go_get_dir))).prepare() else None,
    )
    pool = make_pool(reactor)
    if tracing is not None:  # a span for each fetch, and for each request sent (with its traceparent)
        pool.egress = tracing.agent(pool.egress)
        go = tracing.fetcher(go, "direct")

    def upstream(url: str) -> IFetcher:
        fetcher = UpstreamFetcher(url, reactor, pool, timeout=min(config.timeout, 60),
                                  pace=Pace(deadline=config.timeout), work_dir=config.go_get_dir,
                                  slots=DeferredSemaphore(config.protocol_workers))
        return fetcher if tracing is None else tracing.fetcher(fetcher, url)

    try:
        chain = go if goproxy.strip() == "direct" else ChainFetcher(parse_goproxy(goproxy, upstream, lambda: go))
    except GoproxyError as e:
        raise ConfigError(f"GoBinaryEnvVars: {e}") from None
    fetcher = PerModuleFetcher(chain, policy.fill_url, upstream) if policy.rules else chain
    lists = ListCache(fetcher, reactor, ttl=config.list_cache_ttl, negative_ttl=min(15, config.list_cache_ttl))
    upstream_db = None
    if config.sum_dbs:
        name = sumdb_name(config.sum_dbs[0])
        key = verifier_key(name, config.sum_db_keys)
        if key is not None:
            upstream_db = ChecksumVerifier(config.sum_dbs[0], key, pool, reactor, config.private_patterns)
        elif config.verify_checksums:  # a check without the key would prove nothing: refuse rather than pretend
            raise ConfigError(f"VerifyChecksums: no key is known for the checksum database {name}; add its "
                              f"verifier key (name+hash+key) to SumDBKeys, or set VerifyChecksums = false")
    metrics = metrics or Metrics()
    lock = build_lock(config, reactor)
    own = build_own_sumdb(config, lock, upstream_db, metrics)
    stash = Stash(fetcher, storage, lock, upstream_db if config.verify_checksums else None, metrics, own=own)
    return Origin(fetcher, stash, lists, policy, filter_rules, config.network_mode, config.global_endpoint,
                  http_pool=pool)


def build_lock(config: Config, reactor: Any) -> ILock | None:
    """The lock that makes several nodes fetch a version once (``SingleFlightType``)."""
    if config.single_flight_type == "memory":
        return None
    wait = config.stash_timeout + config.lock_ttl
    if config.single_flight_type == "etcd":
        from athens.singleflight.etcd import TTL, etcd_lock

        try:
            return etcd_lock(config.etcd_endpoints, reactor, wait=config.stash_timeout + TTL,
                             timeout=config.lock_timeout)
        except ValueError as e:
            raise ConfigError(f"SingleFlight.Etcd.Endpoints: {e}") from None
    if config.single_flight_type == "redis-sentinel":
        redis = connect_sentinel(config.sentinel_endpoints, config.sentinel_master, config.sentinel_password,
                                 config.redis_password, config.lock_timeout, config.sentinel_db)
    else:
        try:
            redis = connect_redis(config.redis_endpoint, config.redis_password, timeout=config.lock_timeout)
        except ValueError as e:
            raise ConfigError(f"SingleFlight.Redis.Endpoint: {e}") from None
    return redis_lock(redis, reactor, ttl=config.lock_ttl, wait=wait, prefix=config.redis_key_prefix,
                      retries=config.lock_max_retries)


def prefetch_endpoint(config: Config) -> bool:
    """``POST /admin/prefetch`` makes the proxy fetch what a body names: never without credentials."""
    if config.prefetch_endpoint and basic_auth(config) is None:
        raise ConfigError("PrefetchEndpoint: needs BasicAuthUser and BasicAuthPass (the endpoint makes the proxy "
                          "fetch whatever it is sent)")
    return config.prefetch_endpoint


def basic_auth(config: Config) -> tuple[str, str] | None:
    """On only when both are set, as in Athens."""
    if config.basic_auth_user and config.basic_auth_pass:
        return config.basic_auth_user, config.basic_auth_pass
    return None


def read_robots(path: str) -> bytes:
    """``RobotsFile`` if it exists (Athens' default names a robots.txt beside it), else: crawl nothing."""
    if path and os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read(1 << 16)
    return DEFAULT_ROBOTS


class AthensService(MultiService):
    """Owns the listening port and the storage; stops listening before it closes the store."""

    def __init__(self, config: Config, storage: IStorage, endpoint: str, reactor: Any,
                 origin: Origin | None = None, adopt: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.storage = storage
        self.endpoint = endpoint
        self.reactor = reactor
        self.metrics = Metrics(exported=config.stats_exporter == "prometheus")
        self.trace_settings = TraceSettings.from_config(config)
        #: None unless TraceExporter = "otlp" (then OpenTelemetry is imported, and not before).
        self.tracing = start_tracing(self.trace_settings, reactor)
        served = storage if self.tracing is None else self.tracing.storage(storage)  # a span an operation
        self.origin = origin if origin is not None else build_origin(config, served, reactor, self.metrics,
                                                                     self.tracing)
        tiles = TileCache(os.path.join(config.disk_root, ".athens-sumdb") if storage.name == "disk" else "")
        own = self.origin.stash.own
        self.sumdb = SumDBProxy(config.sum_dbs, self.origin.http_pool or make_pool(reactor), reactor,
                                config.private_patterns, tiles,
                                own=OwnSumDBResource(own, storage, self.origin) if own is not None else None)
        # Lines go through twisted.logger until our own observer is known to be the one in use (setServiceParent).
        self.access_log = AccessLog(enabled=LEVELS[config.log_level] <= LogLevel.info, json=config.log_format == "json",
                                    clock=reactor)
        #: A Prometheus multiprocess directory this daemon made (several workers), removed at the stop.
        self.own_metrics_dir = ""
        #: One of the daemon's worker processes: it logs nothing the daemon itself says.
        self.is_worker = False
        self.cached = CachedStorage(served, reactor.seconds)
        self.vulndb = VulnDBService(config, storage, reactor, self.origin.http_pool or make_pool(reactor),
                                    self.metrics)
        # The status page counts the store itself (the LRU in front would hide the backend's own count).
        home = StatusPage(storage, reactor, self.metrics,
                          ClientSettings.from_config(config, workers=bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")),
                                                     own=self.origin.stash.own),
                          config.home_template_path, fills=lambda: self.origin.stash.recent)
        self.site = make_site(self.cached, reactor, self.origin, config.redirect_code,
                              self.sumdb, config.path_prefix, read_robots(config.robots_file), basic_auth(config),
                              self.metrics, config.fill_after_client_leaves, self._validator(reactor),
                              idle_timeout=config.client_idle_timeout, access_log=self.access_log,
                              list_ttl=min(LIST_REPLAY, config.list_cache_ttl), force_ssl=config.force_ssl,
                              list_max_age=config.list_cache_ttl, index_enabled=config.index_type != "none",
                              vulndb=self.vulndb.database, vuln_policy=self.vulndb.policy,
                              admin_prefetch=prefetch_endpoint(config), home=home, tracing=self.tracing)
        self.vulndb.setServiceParent(self)
        self.flushing = LoopingCall(lambda: ensureDeferred(self._tick()))
        self.flushing.clock = reactor
        self._deletions: str | None = None
        self.tls: ReloadableTLS | None = None
        # ``adopt``: (descriptor, family) of a socket shared by several worker processes.
        if adopt is not None:
            self.listener = AdoptedPort(*adopt, self.site, reactor)
        elif config.tls_cert_file and config.tls_key_file and endpoint == config.listen_endpoint():
            try:  # TLS from the configuration's files: read again on SIGHUP
                self.tls = ReloadableTLS(config.tls_cert_file, config.tls_key_file)
            except TLSFilesError as e:
                raise ConfigError(f"TLSCertFile, TLSKeyFile: {e}") from None
            self.listener = strports.service(port_to_endpoint(config.port),
                                             TLSMemoryBIOFactory(self.tls, False, self.site))
        else:
            self.listener = strports.service(endpoint, self.site)
        self.listener.setServiceParent(self)

    async def _tick(self) -> None:
        """Every second: the hit path's counts into the metrics; every cached answer dropped after a delete anywhere."""
        self.metrics.flush()
        self.vulndb.measure()
        try:
            token = await self.storage.deletions().addTimeout(5, self.reactor)
        except (StorageError, TimeoutError):
            return  # the store is down: nothing is served from it, and it is asked again in a second
        if self._deletions is not None and token != self._deletions:
            log.info("a version was deleted from the store: cached answers dropped")
            self.cached.clear()
            if self.site.hits is not None:
                self.site.hits.answers.clear()
        self._deletions = token

    def _validator(self, reactor: Any) -> ValidatorHook | None:
        if not self.config.validator_hook:
            return None
        return ValidatorHook(self.config.validator_hook, self.origin.http_pool or make_pool(reactor), reactor)

    def setServiceParent(self, parent: Any) -> None:
        # twistd asks the application for its log observer once makeService
        # is done: give it ours, so LogLevel and LogFormat apply (--logger wins).
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver, None) is None:
            parent.setComponent(ILogObserver, make_observer(self.config.log_level, self.config.log_format))
            self.access_log.stream = sys.stdout  # our observer's stream: access lines are written in batches
        super().setServiceParent(parent)

    def startService(self) -> None:
        self.vulndb.refreshing = not self.is_worker  # workers follow the store; the first process copies
        super().startService()
        self.flushing.start(1.0, now=True)
        if self.tls is not None:
            self.tls.reload_on_sighup(self.reactor)
        if self.is_worker:
            log.debug("worker serving on {endpoint}", endpoint=self.endpoint)
            return  # the daemon itself says it all, once
        for note in self.config.notes:
            log.info("{note}", note=note)
        for warning in self.config.warnings + tuple(self.trace_settings.problems()):
            log.warn("{warning}", warning=warning)
        config = self.config
        where = f" in {config.disk_root}" if self.storage.name == "disk" else ""
        verify = (f"checked against {config.sum_dbs[0]}" if config.verify_checksums and config.sum_dbs
                  else "not checked against a checksum database")
        own = self.origin.stash.own
        if own is not None:
            log.info("the organisation's checksum database {name} is served at /sumdb/{name} (its log kept in "
                     "{store} storage); clients set GOSUMDB=\"{vkey} <this proxy's URL>{prefix}/sumdb/{name}\"",
                     name=own.name, store=own.log.store.name, vkey=own.log.signer.verifier().text(),
                     prefix=config.path_prefix)
        log.info(
            "athens-py {version} serving {storage} storage{where} on {endpoint}; origins: GOPROXY={goproxy}; "
            "upstream modules {verify}",
            version=__version__, storage=self.storage.name, where=where, endpoint=self.endpoint,
            goproxy=goproxy_of(config.go_env), verify=verify,
            root=config.disk_root if self.storage.name == "disk" else None,
        )
        log.info("vulnerability database at /vuln/: {source}; VulnPolicy {policy}",
                 source=f"copied from {config.vulndb_url} (checked every {config.vulndb_refresh}s)"
                 if config.vulndb_url else "no upstream (VulnDBURL off): loaded with athens-admin vulndb import",
                 policy=config.vuln_policy)
        if self.tracing is not None:
            settings = self.trace_settings
            log.info("tracing: spans exported over OTLP/HTTP to {where}, {fraction:.0%} of new traces sampled",
                     where=settings.endpoint() or "the OTEL_EXPORTER_OTLP_* endpoint (default localhost:4318)",
                     fraction=settings.fraction)

    def stopService(self) -> Deferred[None]:
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """In order: stop accepting, let requests in flight finish (up to ShutdownTimeout), close pools, storage."""
        await self.listener.stopService()
        workers = [s for s in self if isinstance(s, WorkerSupervisor)]
        stopping_workers = [w.stopService() for w in workers]  # each drains its own requests meanwhile
        if self.site.in_flight:
            log.info("draining {n} requests in flight (up to {t}s)", n=self.site.in_flight, t=self.config.shutdown_timeout)
            drained = self.site.drained()
            drained.addTimeout(self.config.shutdown_timeout, self.reactor)
            try:
                await drained
            except Exception:
                log.warn("{n} requests still in flight after {t}s; stopping anyway", n=self.site.in_flight,
                         t=self.config.shutdown_timeout)
        if len(self.origin.stash.flights):
            # A fill goes on after its client has its answer (stream-through, async modes): let it be stored.
            log.info("waiting for {n} fills in flight (up to {t}s)", n=len(self.origin.stash.flights),
                     t=self.config.shutdown_timeout)
            settled = self.origin.stash.flights.settled()
            settled.addTimeout(self.config.shutdown_timeout, self.reactor)
            try:
                await settled
            except TimeoutError:
                log.warn("fills still running after {t}s: abandoned, nothing of them stored",
                         t=self.config.shutdown_timeout)
                self.origin.stash.flights.cancel_all()
        closed = self.site.close_connections()  # flushes what was answered, then closes
        closed.addTimeout(5, self.reactor)
        try:
            await closed
        except Exception:
            pass
        for stopped in stopping_workers:
            await stopped
        await super().stopService()
        if self.flushing.running:
            self.flushing.stop()
        self.metrics.flush()
        self.access_log.flush()  # nothing is lost at a clean stop
        if self.origin.http_pool is not None:
            await self.origin.http_pool.closeCachedConnections()
        if self.origin.stash.lock is not None:
            await self.origin.stash.lock.close()
        await self.storage.close()
        if self.origin.stash.own is not None:
            await self.origin.stash.own.log.store.close()
        if self.tracing is not None:  # the last spans go out (the export has its own timeout: 10 s)
            await self.tracing.shutdown()
        if self.own_metrics_dir:  # every worker has ended: nobody counts into it any more
            shutil.rmtree(self.own_metrics_dir, ignore_errors=True)
