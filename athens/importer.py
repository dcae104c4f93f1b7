"""
Import a Go module download cache into storage: how an air-gapped site seeds its proxy.

``$GOMODCACHE/cache/download/<escaped module>/@v/<escaped version>.{info,mod,zip}``
is the layout the go command fills.  Every version is checked (path,
version, ``.info``, zip rules, and the ``.ziphash`` the go command recorded)
before it is saved; a bad one is skipped with its reason.  Versions the go
command fetched only go.mod of (much of a module graph) are stored
go.mod-only: a seeded cache then serves ``go mod tidy`` and builds offline.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Callable, Iterator

import attrs
from twisted.internet.threads import deferToThread

from athens.modzip import MAX_GO_MOD, InvalidZip, check_zip
from athens.module import InvalidInput, ModuleVersion, check_path, check_version, unescape
from athens.storage.disk import FileBlob
from athens.storage.interface import IStorage, ModChanged


@attrs.frozen
class Candidate:
    """One version found in the cache, still encoded as on disk."""

    escaped_module: str
    escaped_version: str
    directory: str  # the @v directory

    def file(self, ext: str) -> str:
        return os.path.join(self.directory, f"{self.escaped_version}.{ext}")


@attrs.define
class Report:
    imported: list[ModuleVersion] = attrs.field(factory=list)
    #: Versions stored go.mod-only (the cache has no zip of them).
    mod_only: list[ModuleVersion] = attrs.field(factory=list)
    present: list[ModuleVersion] = attrs.field(factory=list)
    #: (what, reason): versions refused as invalid.
    refused: list[tuple[str, str]] = attrs.field(factory=list)
    #: Versions the cache holds too little of to store anything (a .info alone, say).
    incomplete: Counter[str] = attrs.field(factory=Counter)

    def summary(self) -> str:
        lines = [
            f"imported {len(self.imported)}, go.mod only {len(self.mod_only)}, already stored {len(self.present)}, "
            f"refused {len(self.refused)}, incomplete in the cache {sum(self.incomplete.values())}"
        ]
        lines += [f"  refused {what}: {why}" for what, why in self.refused]
        lines += [f"  {n} without {what}" for what, n in sorted(self.incomplete.items())]
        return "\n".join(lines)


def download_dir(cache: str) -> str:
    """Accept ``$GOMODCACHE``, ``$GOMODCACHE/cache`` or ``.../cache/download``."""
    for candidate in (os.path.join(cache, "cache", "download"), os.path.join(cache, "download"), cache):
        if os.path.isdir(candidate) and os.path.basename(candidate.rstrip(os.sep)) == "download":
            return candidate
    raise FileNotFoundError(f"no Go module download cache (cache/download) under {cache}")


def scan(root: str) -> Iterator[Candidate]:
    """Every version with a ``.info`` or a ``.mod`` under ``root``, in a stable order. ``sumdb`` is skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if os.path.basename(dirpath) != "@v":
            if dirpath == root and "sumdb" in dirnames:
                dirnames.remove("sumdb")
            continue
        dirnames[:] = []
        module = os.path.relpath(os.path.dirname(dirpath), root).replace(os.sep, "/")
        versions = {name.rsplit(".", 1)[0] for name in filenames if name.endswith((".info", ".mod"))}
        for version in sorted(versions):
            yield Candidate(module, version, dirpath)


class Refused(Exception):
    pass


class Incomplete(Exception):
    pass


@attrs.frozen
class Prepared:
    """A checked version; ``zip`` is None for a go.mod-only one."""

    mv: ModuleVersion
    info: bytes | None
    mod: bytes
    zip: str | None


def _read_info(c: Candidate, version: str) -> bytes | None:
    if not os.path.isfile(c.file("info")):
        return None
    with open(c.file("info"), "rb") as f:
        info = f.read(1 << 20)
    try:
        meta = json.loads(info)
    except ValueError:
        raise Refused("the .info file is not JSON") from None
    if not isinstance(meta, dict) or meta.get("Version") != version or not isinstance(meta.get("Time", ""), str):
        raise Refused(f"the .info file does not describe {version}")
    return info


def _prepare(c: Candidate) -> Prepared:
    """Validate one candidate (blocking: runs in a thread)."""
    try:
        module = unescape(c.escaped_module, "path")
        version = unescape(c.escaped_version, "version")
        check_path(module)
        check_version(module, version)
    except InvalidInput as e:
        raise Refused(str(e)) from None
    if not os.path.isfile(c.file("mod")):
        raise Incomplete(".mod")
    with open(c.file("mod"), "rb") as f:
        mod = f.read(MAX_GO_MOD + 1)
    if len(mod) > MAX_GO_MOD:
        raise Refused(f"the .mod file is over {MAX_GO_MOD} bytes")
    try:
        mod.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("the .mod file is not UTF-8") from None
    info = _read_info(c, version)
    mv = ModuleVersion(module, version)
    if not os.path.isfile(c.file("zip")):
        return Prepared(mv, info, mod, None)
    if info is None:
        raise Incomplete(".info")
    try:
        h1 = check_zip(c.file("zip"), module, version, mod)
    except InvalidZip as e:
        raise Refused(f"invalid zip: {e}") from None
    ziphash = c.file("ziphash")
    if os.path.isfile(ziphash):
        with open(ziphash) as f:
            recorded = f.read().strip()
        if recorded != h1:
            raise Refused(f"zip hash {h1} differs from the recorded {recorded}")
    return Prepared(mv, info, mod, c.file("zip"))


async def import_cache(
    storage: IStorage,
    cache: str,
    progress: Callable[[int, int, Report, str], None] = lambda done, total, report, current: None,
) -> Report:
    root = download_dir(cache)
    candidates = await deferToThread(lambda: list(scan(root)))
    report = Report()
    for done, c in enumerate(candidates):
        what = f"{c.escaped_module}@{c.escaped_version}"
        progress(done, len(candidates), report, what)
        try:
            p = await deferToThread(_prepare, c)
        except Refused as e:
            report.refused.append((what, str(e)))
            continue
        except Incomplete as e:
            report.incomplete[str(e)] += 1
            continue
        if p.zip is None:
            stored = await storage.save_mod(p.mv.path, p.mv.version, p.mod, p.info)
            (report.mod_only if stored else report.present).append(p.mv)
            continue
        assert p.info is not None
        f = await deferToThread(open, p.zip, "rb")
        blob = FileBlob(f, os.fstat(f.fileno()).st_size)
        try:
            stored = await storage.save(p.mv.path, p.mv.version, p.info, p.mod, blob.chunks())
        except ModChanged as e:
            report.refused.append((what, str(e)))
            continue
        finally:
            blob.close()
        (report.imported if stored else report.present).append(p.mv)
    progress(len(candidates), len(candidates), report, "")
    return report
