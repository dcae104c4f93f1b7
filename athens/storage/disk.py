"""
Disk storage in Athens' own layout, written atomically.

``<root>/<module>/<version>/`` holds ``go.mod``, ``source.zip`` and
``<version>.info``, exactly as Athens' disk storage does, so an existing
Athens cache is served unchanged.  Unlike Athens, a version is written into
``<root>/.athens-tmp/`` first, fsynced, and renamed into place: a reader (or a
crash) sees the whole version or nothing.  A go.mod-only version is a
directory with ``go.mod`` (and the ``.info``) but no ``source.zip``; a save
completes it by linking the zip in last, so it is whole at one step.  Every
file operation runs in the reactor's thread pool.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from typing import IO, AsyncIterable, AsyncIterator

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from athens.module import ModuleVersion, is_valid_semver
from athens.storage.interface import (CatalogPage, IndexLine, IStorage, ModChanged, NotFound, StorageError, index_of,
                                     page, sized)
from athens.storage.summary import IStorageSummary, Summary

CHUNK = 256 << 10
TMP_DIR = ".athens-tmp"
#: Rewritten with a new token at every delete (by this daemon or athens-admin): caches poll it.
DELETIONS_FILE = ".athens-deletions"
#: Leftovers of a crash older than this are removed at start (younger ones may be another worker's).
STALE_TMP_SECONDS = 3600


def _version_files(version: str) -> tuple[str, str, str]:
    return ("go.mod", "source.zip", version + ".info")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Read once at import (reading it means setting it, which is not safe once threads run).
_UMASK = _umask()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@attrs.define
class FileBlob:
    """A Blob over an open file: the handle pins the content even if the version is deleted meanwhile."""

    _file: IO[bytes]
    size: int
    chunk_size: int = CHUNK

    def chunks(self) -> AsyncIterator[bytes]:
        return self.chunks_from(0)

    async def chunks_from(self, offset: int) -> AsyncIterator[bytes]:
        """The content from ``offset`` on (a byte range: nothing before it is read)."""
        left = self.size - offset  # stop at the size announced: no extra read for EOF, no bytes beyond it
        try:
            if offset:
                await deferToThread(self._file.seek, offset)
            while left > 0:
                chunk = await deferToThread(self._file.read, min(self.chunk_size, left))
                if not chunk:
                    raise StorageError(f"{self._file.name} is shorter than its {self.size} bytes")
                left -= len(chunk)
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def path(self) -> str:
        """The file that holds exactly this zip (the hit path sends it with sendfile)."""
        return str(self._file.name)


@implementer(IStorage, IStorageSummary)
@attrs.define
class DiskStorage:
    root: str = attrs.field(converter=lambda p: os.path.abspath(os.fspath(p)))
    name = "disk"

    def __attrs_post_init__(self) -> None:
        os.makedirs(os.path.join(self.root, TMP_DIR), exist_ok=True)
        self._remove_stale_tmp()

    # -- paths (module and version were validated by athens.module) --

    def _module_dir(self, module: str) -> str:
        path = os.path.normpath(os.path.join(self.root, module))
        if not path.startswith(self.root + os.sep) or os.path.basename(path) == TMP_DIR:
            raise StorageError(f"refusing module path outside the storage root: {module!r}")
        return path

    def _version_dir(self, module: str, version: str) -> str:
        if not is_valid_semver(version) or os.sep in version:
            raise NotFound(f"{module}@{version}: not found")
        return os.path.join(self._module_dir(module), version)

    def _complete(self, vdir: str) -> bool:
        version = os.path.basename(vdir)
        return all(os.path.isfile(os.path.join(vdir, f)) for f in _version_files(version))

    @staticmethod
    def _mod_only(vdir: str) -> bool:
        """go.mod without a zip: a go.mod-only version (a zip without the rest is a crashed writer's)."""
        return os.path.isfile(os.path.join(vdir, "go.mod")) and not os.path.lexists(os.path.join(vdir, "source.zip"))

    def _read(self, module: str, version: str, name: str) -> bytes:
        try:
            with open(os.path.join(self._version_dir(module, version), name), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{module}@{version}: not found") from None

    # -- IStorage --

    def list(self, module: str) -> Deferred[list[str]]:
        def versions() -> list[str]:
            mdir = self._module_dir(module)
            try:
                names = os.listdir(mdir)
            except (FileNotFoundError, NotADirectoryError):
                return []
            return [n for n in names if is_valid_semver(n) and self._complete(os.path.join(mdir, n))]

        return deferToThread(versions)

    def info(self, module: str, version: str) -> Deferred[bytes]:
        return deferToThread(self._read, module, version, version + ".info")

    def go_mod(self, module: str, version: str) -> Deferred[bytes]:
        return deferToThread(self._read, module, version, "go.mod")

    def zip(self, module: str, version: str) -> Deferred[FileBlob]:
        def open_zip() -> FileBlob:
            try:
                f = open(os.path.join(self._version_dir(module, version), "source.zip"), "rb")
            except (FileNotFoundError, NotADirectoryError):
                raise NotFound(f"{module}@{version}: not found") from None
            return FileBlob(f, os.fstat(f.fileno()).st_size)

        return deferToThread(open_zip)

    def exists(self, module: str, version: str) -> Deferred[bool]:
        def check() -> bool:
            try:
                return self._complete(self._version_dir(module, version))
            except NotFound:
                return False

        return deferToThread(check)

    def save(self, module: str, version: str, info: bytes, mod: bytes, zip: AsyncIterable[bytes]) -> Deferred[bool]:
        return ensureDeferred(self._save(module, version, info, mod, zip))

    async def _save(self, module: str, version: str, info: bytes, mod: bytes, zip: AsyncIterable[bytes]) -> bool:
        target = self._version_dir(module, version)
        if await deferToThread(self._complete, target):
            return False
        if await deferToThread(self._mod_only, target):
            return await self._complete_mod_only(module, version, target, info, mod, zip)
        tmp = await deferToThread(tempfile.mkdtemp, prefix="save-", dir=os.path.join(self.root, TMP_DIR))
        try:
            # mkdtemp makes 0700; a version directory gets what the umask allows (0755 by default, as in
            # Athens), so that a backup job or nginx can read the store.
            await deferToThread(os.chmod, tmp, 0o777 & ~_UMASK)
            await deferToThread(self._write_small, tmp, version, info, mod)
            await self._write_zip(os.path.join(tmp, "source.zip"), zip)
            return await deferToThread(self._publish, tmp, target)
        finally:
            await deferToThread(shutil.rmtree, tmp, True)

    @staticmethod
    async def _write_zip(path: str, zip: AsyncIterable[bytes]) -> None:
        f = await deferToThread(open, path, "wb")
        try:
            async for chunk in sized(zip):
                await deferToThread(f.write, chunk)
            await deferToThread(lambda: (f.flush(), os.fsync(f.fileno())))
        finally:
            f.close()

    async def _complete_mod_only(self, module: str, version: str, target: str, info: bytes, mod: bytes,
                                 zip: AsyncIterable[bytes]) -> bool:
        """The zip goes in last, by link(): the version is whole at that step, and only one writer's link wins."""
        if await deferToThread(self._read, module, version, "go.mod") != mod:
            raise ModChanged(module, version)
        tmp = await deferToThread(tempfile.mkdtemp, prefix="complete-", dir=os.path.join(self.root, TMP_DIR))
        try:
            await self._write_zip(os.path.join(tmp, "source.zip"), zip)
            await deferToThread(self._add_file, tmp, target, version + ".info", info)
            return await deferToThread(self._link_new, os.path.join(tmp, "source.zip"), target, "source.zip")
        finally:
            await deferToThread(shutil.rmtree, tmp, True)

    def _add_file(self, tmp: str, target: str, name: str, data: bytes) -> bool:
        """Put ``name`` into ``target`` unless it is there; True if added."""
        if os.path.lexists(os.path.join(target, name)):
            return False
        _write_file(os.path.join(tmp, name), data)
        return self._link_new(os.path.join(tmp, name), target, name)

    @staticmethod
    def _link_new(source: str, target: str, name: str) -> bool:
        try:
            os.link(source, os.path.join(target, name))
        except FileExistsError:
            return False
        except FileNotFoundError:  # the version was deleted meanwhile
            raise StorageError(f"{target}: deleted while it was saved") from None
        _fsync_dir(target)
        return True

    def save_mod(self, module: str, version: str, mod: bytes, info: bytes | None) -> Deferred[bool]:
        def store() -> bool:
            target = self._version_dir(module, version)
            if os.path.isdir(target):
                if info is None or not self._mod_only(target):
                    return False
                tmp = tempfile.mkdtemp(prefix="info-", dir=os.path.join(self.root, TMP_DIR))
                try:
                    return self._add_file(tmp, target, version + ".info", info)
                finally:
                    shutil.rmtree(tmp, True)
            tmp = tempfile.mkdtemp(prefix="mod-", dir=os.path.join(self.root, TMP_DIR))
            try:
                os.chmod(tmp, 0o777 & ~_UMASK)
                _write_file(os.path.join(tmp, "go.mod"), mod)
                if info is not None:
                    _write_file(os.path.join(tmp, version + ".info"), info)
                return self._publish(tmp, target, replace=False)  # False: another writer was first
            finally:
                shutil.rmtree(tmp, True)

        return deferToThread(store)

    @staticmethod
    def _write_small(tmp: str, version: str, info: bytes, mod: bytes) -> None:
        _write_file(os.path.join(tmp, "go.mod"), mod)
        _write_file(os.path.join(tmp, version + ".info"), info)

    def _publish(self, tmp: str, target: str, replace: bool = True) -> bool:
        """
        Rename the finished version into place; False if a complete one is
        already there (or, without ``replace``, anything at all).
        """
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        _fsync_dir(tmp)
        try:
            os.rename(tmp, target)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if not replace or self._complete(target):
                return False
            # A partial directory from a non-atomic writer (Athens, or a crash
            # of one): move it aside and put the whole version in its place.
            self._discard(target)
            os.rename(tmp, target)
        _fsync_dir(parent)
        return True

    def _discard(self, path: str) -> None:
        trash = tempfile.mkdtemp(prefix="del-", dir=os.path.join(self.root, TMP_DIR))
        os.rename(path, os.path.join(trash, "v"))
        shutil.rmtree(trash, ignore_errors=True)

    def delete(self, module: str, version: str) -> Deferred[None]:
        def remove() -> None:
            target = self._version_dir(module, version)
            if not self._complete(target) and not self._mod_only(target):
                raise NotFound(f"{module}@{version}: not found")
            self._discard(target)  # one rename: readers see all of it or none
            self._note_deletion()

        return deferToThread(remove)

    def _note_deletion(self) -> None:
        fd, tmp = tempfile.mkstemp(prefix="deletions-", dir=os.path.join(self.root, TMP_DIR))
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(8).hex())
        os.replace(tmp, os.path.join(self.root, DELETIONS_FILE))

    def deletions(self) -> Deferred[str]:
        def read() -> str:
            try:
                with open(os.path.join(self.root, DELETIONS_FILE)) as f:
                    return f.read()
            except FileNotFoundError:
                return ""

        return deferToThread(read)

    def catalog(self, token: str, limit: int) -> Deferred[CatalogPage]:
        return deferToThread(lambda: page(self._walk(), token, limit))

    def _walk(self) -> list[ModuleVersion]:
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            if dirpath == self.root:  # our own directories (.athens-tmp, .athens-sumdb) hold no modules
                dirnames[:] = [d for d in dirnames if not d.startswith(".athens-")]
            version = os.path.basename(dirpath)
            if is_valid_semver(version) and all(f in filenames for f in _version_files(version)):
                module = os.path.relpath(os.path.dirname(dirpath), self.root).replace(os.sep, "/")
                found.append(ModuleVersion(module, version))
        return found

    def index(self, since: float, limit: int) -> Deferred[list[IndexLine]]:
        """
        A version's save is its ``source.zip``'s mtime (written once, before
        the version is published; Athens' own disk layout has no other record).
        Every call walks the store.
        """

        def saved() -> list[IndexLine]:
            lines = []
            for mv in self._walk():
                try:
                    mtime = os.stat(os.path.join(self.root, mv.path, mv.version, "source.zip")).st_mtime
                except FileNotFoundError:
                    continue  # deleted meanwhile
                lines.append(IndexLine(mv.path, mv.version, mtime))
            return index_of(lines, since, limit)

        return deferToThread(saved)

    def summary(self) -> Deferred[Summary]:
        """One walk: whole versions counted as the catalog lists them, and every file's size but half-written ones."""

        def walk() -> Summary:
            modules, versions, size = set(), 0, 0
            for dirpath, dirnames, filenames in os.walk(self.root):
                if dirpath == self.root:
                    dirnames[:] = [d for d in dirnames if d != TMP_DIR]
                for name in filenames:
                    try:
                        size += os.lstat(os.path.join(dirpath, name)).st_size
                    except FileNotFoundError:
                        pass  # deleted meanwhile
                version = os.path.basename(dirpath)
                ours = os.path.relpath(dirpath, self.root).startswith(".athens-")  # checksum tiles: size only
                if not ours and is_valid_semver(version) and all(f in filenames for f in _version_files(version)):
                    modules.add(os.path.dirname(dirpath))
                    versions += 1
            return Summary(len(modules), versions, size, "files under the root")

        return deferToThread(walk)

    def touch(self, module: str, version: str) -> Deferred[None]:
        """The version directory's mtime is its last use (a rename leaves it at the save)."""

        def utime() -> None:
            try:
                target = self._version_dir(module, version)
                if self._complete(target):
                    os.utime(target)
            except (NotFound, FileNotFoundError):
                pass

        return deferToThread(utime)

    def last_used(self, module: str, version: str) -> Deferred[float]:
        def mtime() -> float:
            target = self._version_dir(module, version)
            if not self._complete(target):
                raise NotFound(f"{module}@{version}: not found")
            return os.stat(target).st_mtime

        return deferToThread(mtime)

    def ping(self) -> Deferred[None]:
        def check() -> None:
            if not os.path.isdir(self.root) or not os.access(self.root, os.W_OK | os.X_OK):
                raise StorageError(f"storage root {self.root} is not a writable directory")

        return deferToThread(check)

    def close(self) -> Deferred[None]:
        return succeed(None)

    def _remove_stale_tmp(self) -> None:
        tmp_root = os.path.join(self.root, TMP_DIR)
        cutoff = time.time() - STALE_TMP_SECONDS
        for entry in os.scandir(tmp_root):
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                shutil.rmtree(entry.path, ignore_errors=True)
