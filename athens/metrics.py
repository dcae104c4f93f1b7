"""
Prometheus metrics, on a registry of their own (one per daemon; tests get fresh ones).

What an operator watches: requests by endpoint and status, cache hits and
misses, fetches from the origin (count, outcome, duration, in flight),
bytes served, storage errors, records added to the organisation's checksum
database, versions refused because a checksum database holds other hashes,
and the vulnerability database (its age, size, refreshes, and the zips its
policy warned about or refused).
"""

from __future__ import annotations

import os
import time
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ENDPOINTS = ("list", "info", "mod", "zip", "latest")


def endpoint_of(path: bytes) -> str:
    """A small, fixed set of labels: never the module path itself."""
    text = path.decode("ascii", "replace")
    if "/sumdb/" in text or text.startswith("/sumdb"):
        return "sumdb"
    if text.endswith("/@v/list"):
        return "list"
    if text.endswith("/@latest"):
        return "latest"
    for ext in ("info", "mod", "zip"):
        if "/@v/" in text and text.endswith("." + ext):
            return ext
    if "/vuln/" in text:
        return "vuln"
    last = text.rstrip("/").rsplit("/", 1)[-1]
    return last if last in ("healthz", "readyz", "version", "catalog", "metrics", "robots.txt") else "other"


@attrs.frozen
class Totals:
    """Counters since start (summed over workers)."""

    #: Lookups of .info, .mod and .zip answered from storage, and those that were not.
    hits: int
    misses: int
    #: Fetches from the origin: stored, not found there, failed (unreachable, broken, too slow, refused).
    stored: int
    not_found: int
    failed: int

    @property
    def hit_ratio(self) -> float | None:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else None


@attrs.define
class Metrics:
    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)
    requests: Any = None
    cache: Any = None
    fetches: Any = None
    fetch_seconds: Any = None
    fetches_in_flight: Any = None
    bytes_served: Any = None
    storage_errors: Any = None
    sumdb_records: Any = None
    checksum_refusals: Any = None
    vulndb_age: Any = None
    vulndb_entries: Any = None
    vulndb_refreshes: Any = None
    vuln_policy: Any = None
    #: ``StatsExporter = "prometheus"`` (Athens' default); off: ``/metrics`` answers 404.
    exported: bool = True
    #: Counts from the hit path, added to the counters in one go (a labelled inc costs a hit too much).
    _tally: dict[tuple[str, int], list[int]] = attrs.field(factory=dict)
    _hits: int = 0

    def __attrs_post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("athens_requests", "HTTP requests answered", ["endpoint", "code"], registry=r)
        self.cache = Counter("athens_cache", "Lookups of .info, .mod and .zip in storage", ["result"], registry=r)
        self.fetches = Counter("athens_fetches", "Fetches of module versions from the origin", ["outcome"],
                               registry=r)
        self.fetch_seconds = Histogram("athens_fetch_seconds", "Time to fetch, check and store a version",
                                       registry=r, buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
        self.fetches_in_flight = Gauge("athens_fetches_in_flight", "Fetches from the origin running now", registry=r,
                                       multiprocess_mode="livesum")
        self.bytes_served = Counter("athens_served_bytes", "Response body bytes sent", ["endpoint"], registry=r)
        self.storage_errors = Counter("athens_storage_errors", "Requests that failed on storage", registry=r)
        self.sumdb_records = Counter("athens_sumdb_records", "Records this node added to the organisation's "
                                     "checksum database", ["kind"], registry=r)
        self.checksum_refusals = Counter("athens_checksum_refusals", "Versions refused because their hashes "
                                         "differ from a checksum database's", ["database"], registry=r)
        self.vulndb_age = Gauge("athens_vulndb_age_seconds", "Seconds since the vulnerability database copy was "
                                "last known current (+Inf: no copy)", registry=r, multiprocess_mode="livemax")
        self.vulndb_age.set(float("inf"))
        self.vulndb_entries = Gauge("athens_vulndb_entries", "Entries in the vulnerability database copy in service",
                                    registry=r, multiprocess_mode="livemin")
        self.vulndb_refreshes = Counter("athens_vulndb_refreshes", "Refreshes of the vulnerability database from its "
                                        "upstream", ["outcome"], registry=r)
        self.vuln_policy = Counter("athens_vuln_policy", "Zips of versions with known vulnerabilities, served (warn) "
                                   "or refused (deny)", ["action"], registry=r)

    def request(self, path: bytes, code: int, size: int) -> None:
        endpoint = endpoint_of(path)
        self.requests.labels(endpoint, str(code)).inc()
        self.bytes_served.labels(endpoint).inc(size)

    def served_hit(self, endpoint: str, code: int, size: int) -> None:
        """A request the hit path answered: counted now, added to the counters at the next :meth:`flush`."""
        counts = self._tally.get((endpoint, code))
        if counts is None:
            counts = self._tally[(endpoint, code)] = [0, 0]
        counts[0] += 1
        counts[1] += size
        if endpoint in ("info", "mod", "zip"):  # a lookup of a version in storage, as the full path counts them
            self._hits += 1

    def flush(self) -> None:
        """Add the hit path's counts to the counters (every second, and before every scrape)."""
        tally, self._tally = self._tally, {}
        hits, self._hits = self._hits, 0
        for (endpoint, code), (count, size) in tally.items():
            self.requests.labels(endpoint, str(code)).inc(count)
            self.bytes_served.labels(endpoint).inc(size)
        if hits:
            self.cache.labels("hit").inc(hits)

    def _summed(self) -> CollectorRegistry:
        """This process's registry; with several workers (PROMETHEUS_MULTIPROC_DIR), one that sums all of theirs."""
        self.flush()
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry

    def exposition(self) -> tuple[bytes, bytes]:
        """This process's metrics; with several workers (PROMETHEUS_MULTIPROC_DIR), all of theirs summed."""
        return CONTENT_TYPE_LATEST.encode(), generate_latest(self._summed())

    def totals(self) -> Totals:
        """Lookups and origin fetches since start, every worker's summed: the status page's figures."""
        found: dict[tuple[str, str], float] = {}
        for family in self._summed().collect():
            for sample in family.samples:
                if sample.name == "athens_cache_total":
                    found[("cache", sample.labels.get("result", ""))] = sample.value
                elif sample.name == "athens_fetches_total":
                    found[("fetch", sample.labels.get("outcome", ""))] = sample.value
        count = lambda kind, label: int(found.get((kind, label), 0))  # noqa: E731
        return Totals(hits=count("cache", "hit"), misses=count("cache", "miss"), stored=count("fetch", "stored"),
                      not_found=count("fetch", "not_found"), failed=count("fetch", "error"))

    def fetch_started(self) -> float:
        self.fetches_in_flight.inc()
        return time.monotonic()

    def fetch_ended(self, started: float, outcome: str) -> None:
        self.fetches_in_flight.dec()
        self.fetches.labels(outcome).inc()
        self.fetch_seconds.observe(time.monotonic() - started)
