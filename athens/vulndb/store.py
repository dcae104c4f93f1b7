"""
Where the copy of the vulnerability database is kept: beside the module store.

The copy is one unit, ``vulndb.zip`` (:mod:`athens.vulndb.archive`), and a
small :class:`State` naming it by digest.  Every backend replaces both at
once, or makes the state name the new archive only once that archive is
whole, so a reader (another worker, another node, a restart) sees the old
copy or the new one, never a mix.  :func:`vuln_store` picks the backend that
lives where the configured storage does, without widening ``IStorage``:
the disk root, the Redis or PostgreSQL server, or the object-store bucket.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import Interface, implementer

from athens.storage.interface import IStorage, StorageError

log = Logger()

DISK_DIR = ".athens-vulndb"


@attrs.frozen
class State:
    """What the stored copy is, and how fresh it is known to be."""

    #: SHA-256 of the stored ``vulndb.zip``, hex.
    digest: str
    #: The database's own ``modified`` (``index/db.json``).
    modified: str
    #: When the copy was last known to be current (copied, imported, or the upstream unchanged): epoch seconds.
    checked: float
    #: Where it came from: the upstream URL, or ``import <file>``.
    source: str = ""

    def dumps(self) -> bytes:
        return json.dumps(attrs.asdict(self), sort_keys=True).encode()

    @classmethod
    def loads(cls, data: bytes) -> "State":
        try:
            raw = json.loads(data)
            return cls(str(raw["digest"]), str(raw["modified"]), float(raw["checked"]), str(raw.get("source", "")))
        except (ValueError, KeyError, TypeError) as e:
            raise StorageError(f"the stored vulnerability database state is unreadable: {e}") from None


def digest(archive: bytes) -> str:
    return hashlib.sha256(archive).hexdigest()


class IVulnStore(Interface):
    def state() -> Deferred[State | None]:
        """The stored copy's state (small: polled every few seconds); None when nothing is stored."""

    def load() -> Deferred[tuple[State, bytes] | None]:
        """The state and the archive it names, read consistently; None when nothing is stored."""

    def save(state: State, archive: bytes) -> Deferred[None]:
        """Replace the copy, all at once."""

    def confirm(digest: str, checked: float) -> Deferred[None]:
        """Record that the stored copy (if it is still ``digest``) was known current at ``checked``."""


@implementer(IVulnStore)
@attrs.define
class MemoryVulnStore:
    """In the process: memory storage, and stores that have no place for it."""

    _copy: tuple[State, bytes] | None = None

    def state(self) -> Deferred[State | None]:
        return succeed(self._copy[0] if self._copy else None)

    def load(self) -> Deferred[tuple[State, bytes] | None]:
        return succeed(self._copy)

    def save(self, state: State, archive: bytes) -> Deferred[None]:
        self._copy = (state, archive)
        return succeed(None)

    def confirm(self, digest: str, checked: float) -> Deferred[None]:
        if self._copy and self._copy[0].digest == digest:
            self._copy = (attrs.evolve(self._copy[0], checked=checked), self._copy[1])
        return succeed(None)


@implementer(IVulnStore)
@attrs.define
class DiskVulnStore:
    """
    ``<root>/.athens-vulndb``: ``<digest>.zip`` and ``state.json`` naming it,
    each written to a temporary file, fsynced and renamed.  The archive goes
    first, so the state never names one that is not whole; the previous
    archive is kept for a reader that read the state just before the change.
    Writers (the daemon, ``athens-admin``) take a lock on ``lock``.
    """

    directory: str

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _read_state(self) -> State | None:
        try:
            with open(self._path("state.json"), "rb") as f:
                return State.loads(f.read())
        except FileNotFoundError:
            return None

    def state(self) -> Deferred[State | None]:
        return deferToThread(self._read_state)

    def load(self) -> Deferred[tuple[State, bytes] | None]:
        def read() -> tuple[State, bytes] | None:
            for _ in range(3):  # a save may replace the state between the two reads: read it again
                state = self._read_state()
                if state is None:
                    return None
                try:
                    with open(self._path(state.digest + ".zip"), "rb") as f:
                        return state, f.read()
                except FileNotFoundError:
                    continue
            raise StorageError("the vulnerability database changed three times while it was read")

        return deferToThread(read)

    def _write(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self._path(name))
        except BaseException:
            _unlink(tmp)
            raise

    def _locked(self, work: Callable[[], None]) -> Deferred[None]:
        def run() -> None:
            try:
                os.makedirs(self.directory, exist_ok=True)
                with open(self._path("lock"), "a") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    work()
                    dirfd = os.open(self.directory, os.O_RDONLY)
                    try:
                        os.fsync(dirfd)
                    finally:
                        os.close(dirfd)
            except OSError as e:
                raise StorageError(f"cannot write the vulnerability database in {self.directory}: {e}") from None

        return deferToThread(run)

    def save(self, state: State, archive: bytes) -> Deferred[None]:
        def replace() -> None:
            previous = self._read_state()
            self._write(state.digest + ".zip", archive)
            self._write("state.json", state.dumps())
            keep = {state.digest + ".zip"} | ({previous.digest + ".zip"} if previous else set())
            for name in os.listdir(self.directory):
                if name.endswith(".zip") and name not in keep:
                    _unlink(self._path(name))

        return self._locked(replace)

    def confirm(self, digest: str, checked: float) -> Deferred[None]:
        def update() -> None:
            current = self._read_state()
            if current is not None and current.digest == digest:
                self._write("state.json", attrs.evolve(current, checked=checked).dumps())

        return self._locked(update)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def vuln_store(storage: IStorage) -> IVulnStore:
    """The backend beside ``storage`` (its disk root, Redis, PostgreSQL or bucket); else the process's memory."""
    from athens.vulndb.shared import BucketVulnStore, PostgresVulnStore, RedisVulnStore

    builders: dict[str, Callable[[Any], IVulnStore]] = {
        "memory": lambda s: MemoryVulnStore(),
        "disk": lambda s: DiskVulnStore(os.path.join(s.root, DISK_DIR)),
        "redis": lambda s: RedisVulnStore(s.redis, s.prefix),
        "postgres": lambda s: PostgresVulnStore(s),
    }
    build = builders.get(storage.name)
    if build is not None:
        return build(storage)
    bucket = getattr(storage, "bucket", None)
    if bucket is not None:
        return BucketVulnStore(bucket)
    log.warn("storage {name}: the vulnerability database is kept in this process's memory only", name=storage.name)
    return MemoryVulnStore()
