"""
Warm the store for CI: every version a build needs (from go.sum, go.mod or
a list, :mod:`athens.wanted`), fetched through the origin the daemon uses,
several at once.

A whole version goes through the stash (single-flight, the lock across
nodes, the zip rules, the checksum database); a go.sum ``/go.mod`` line is
stored go.mod-only where the origin hands out go.mod alone (an upstream
proxy), else whole.  What is stored must then match go.sum's hashes: a
version that does not is reported (the store is left as it is: the go
command refuses it too).  The filter file and the download modes apply as
they do to clients: excluded modules and modes that never fill are skipped.
"""

from __future__ import annotations

from enum import Enum
from typing import Callable, Sequence

import attrs
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.logger import Logger

from athens.sumdb import go_mod_hash
from athens.fetch.interface import NoSmallFetch, OriginError
from athens.filter import Action
from athens.maintenance import verify_version
from athens.modzip import InvalidZip
from athens.module import ModuleVersion
from athens.origin import Origin
from athens.storage.interface import NotFound, StorageError
from athens.wanted import Wanted

log = Logger()
#: Versions fetched at once unless told otherwise.
JOBS = 8


class Result(str, Enum):
    STORED = "stored"
    MOD_ONLY = "go.mod-only"
    PRESENT = "already there"
    SKIPPED = "skipped"
    FAILED = "failed"


@attrs.frozen
class Outcome:
    wanted: Wanted
    result: Result
    detail: str = ""

    def line(self) -> str:
        return f"{self.result.value} {self.wanted}" + (f": {self.detail}" if self.detail else "")


@attrs.define
class Report:
    outcomes: list[Outcome] = attrs.field(factory=list)
    #: Lines of the input that name no version (file:line: why): failures too.
    unreadable: list[str] = attrs.field(factory=list)

    def count(self, result: Result) -> int:
        return sum(1 for o in self.outcomes if o.result is result)

    @property
    def failed(self) -> int:
        return self.count(Result.FAILED) + len(self.unreadable)

    def summary(self) -> str:
        n = len(self.outcomes)
        head = (f"{n} version{'' if n == 1 else 's'}: {self.count(Result.STORED)} stored, "
                f"{self.count(Result.MOD_ONLY)} stored go.mod-only, {self.count(Result.PRESENT)} already there, "
                f"{self.count(Result.SKIPPED)} skipped, {self.failed} failed")
        notes = [f"  {o.line()}" for o in self.outcomes if o.result in (Result.FAILED, Result.SKIPPED)]
        return "\n".join([head, *notes, *(f"  unreadable {u}" for u in self.unreadable)])

    def as_json(self) -> dict[str, object]:
        return {
            "versions": len(self.outcomes),
            **{r.name.lower(): self.count(r) for r in Result},
            "failures": [{"module": o.wanted.module, "version": o.wanted.version, "error": o.detail}
                         for o in self.outcomes if o.result is Result.FAILED]
                        + [{"line": u} for u in self.unreadable],
            "skips": [{"module": o.wanted.module, "version": o.wanted.version, "why": o.detail}
                      for o in self.outcomes if o.result is Result.SKIPPED],
        }


Progress = Callable[[int, int, Outcome], None]


async def prefetch(origin: Origin, wanted: Sequence[Wanted], jobs: int = JOBS,
                   progress: Progress | None = None, verify_present: bool = False) -> Report:
    """
    Have every version of ``wanted`` in the store; ``progress(done, total, outcome)`` after each.
    Zips already stored are checked against go.sum only with ``verify_present`` (it reads them all).
    """
    report = Report()
    slots = DeferredSemaphore(max(1, jobs))

    async def one(item: Wanted) -> None:
        await slots.acquire()
        try:
            outcome = await _have(origin, item, verify_present)
        finally:
            slots.release()
        report.outcomes.append(outcome)
        if outcome.result is Result.FAILED:
            log.warn("prefetch: {line}", line=outcome.line())
        if progress is not None:
            progress(len(report.outcomes), len(wanted), outcome)

    await gatherResults([Deferred.fromCoroutine(one(item)) for item in wanted])
    return report


async def _have(origin: Origin, item: Wanted, verify_present: bool) -> Outcome:
    skip = _skipped(origin, item)
    if skip:
        return Outcome(item, Result.SKIPPED, skip)
    storage = origin.stash.storage
    try:
        if await storage.exists(item.module, item.version):
            return await _checked(origin, item, Result.PRESENT, zip_too=verify_present)
        if not item.whole:
            if await _has_mod(origin, item):
                return await _checked(origin, item, Result.PRESENT, zip_too=False)
            try:
                mod, _ = await origin.store_mod(item.module, item.version)
                return _mod_matches(item, mod, Result.MOD_ONLY)
            except NoSmallFetch:
                pass  # the go command hands out whole versions only
        await origin.stash.stash(item.module, item.version)
        return await _checked(origin, item, Result.STORED)
    except (OriginError, StorageError) as e:
        return Outcome(item, Result.FAILED, str(e) or type(e).__name__)


def _skipped(origin: Origin, item: Wanted) -> str:
    if origin.filter is not None and origin.filter.action(item.module, item.version) is not Action.INCLUDE:
        return "the filter file does not let it be cached"
    mode, _ = origin.policy.for_module(item.module)
    if not mode.fills:
        return f"download mode {mode.value} never fills the cache"
    return ""


async def _has_mod(origin: Origin, item: Wanted) -> bool:
    try:
        await origin.stash.storage.go_mod(item.module, item.version)
        return True
    except NotFound:
        return False


async def _checked(origin: Origin, item: Wanted, result: Result, zip_too: bool = True) -> Outcome:
    """What is stored against go.sum's hashes (the zip's only when the whole version is stored)."""
    storage = origin.stash.storage
    if zip_too and item.zip_hash and await storage.exists(item.module, item.version):
        try:
            zip_hash = await verify_version(storage, ModuleVersion(item.module, item.version))
        except (InvalidZip, ValueError) as e:
            return Outcome(item, Result.FAILED, f"the stored version is broken: {e}")
        if zip_hash != item.zip_hash:
            return Outcome(item, Result.FAILED, f"the stored zip is {zip_hash}, go.sum says {item.zip_hash}")
    return _mod_matches(item, await storage.go_mod(item.module, item.version), result)


def _mod_matches(item: Wanted, mod: bytes, result: Result) -> Outcome:
    if item.mod_hash and go_mod_hash(mod) != item.mod_hash:
        return Outcome(item, Result.FAILED, f"the stored go.mod is {go_mod_hash(mod)}, go.sum says {item.mod_hash}")
    return Outcome(item, result)
