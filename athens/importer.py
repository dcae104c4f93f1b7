"""
Import a Go module download cache into storage: how an air-gapped site seeds its proxy.

``$GOMODCACHE/cache/download/<escaped module>/@v/<escaped version>.{info,mod,zip}``
is the layout the go command fills.  Every version is checked (path,
version, ``.info``, zip rules, and the ``.ziphash`` the go command recorded)
before it is saved; a bad one is skipped with its reason.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Callable, Iterator

import attrs
from twisted.internet.threads import deferToThread

from athens.modzip import InvalidZip, check_zip
from athens.module import InvalidInput, ModuleVersion, check_path, check_version, unescape
from athens.storage.disk import FileBlob
from athens.storage.interface import IStorage


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
    present: list[ModuleVersion] = attrs.field(factory=list)
    #: (what, reason): versions refused as invalid.
    refused: list[tuple[str, str]] = attrs.field(factory=list)
    #: Versions the cache holds only partly (go fetched just go.mod for MVS, say).
    incomplete: Counter[str] = attrs.field(factory=Counter)

    def summary(self) -> str:
        lines = [
            f"imported {len(self.imported)}, already stored {len(self.present)}, "
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
    """Every ``.info`` under ``root``, in a stable order. ``sumdb`` and lock files are skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if os.path.basename(dirpath) != "@v":
            if dirpath == root and "sumdb" in dirnames:
                dirnames.remove("sumdb")
            continue
        dirnames[:] = []
        module = os.path.relpath(os.path.dirname(dirpath), root).replace(os.sep, "/")
        for name in sorted(filenames):
            if name.endswith(".info"):
                yield Candidate(module, name[: -len(".info")], dirpath)


class Refused(Exception):
    pass


class Incomplete(Exception):
    pass


def _prepare(c: Candidate) -> tuple[ModuleVersion, bytes, bytes]:
    """Validate one candidate (blocking: runs in a thread)."""
    try:
        module = unescape(c.escaped_module, "path")
        version = unescape(c.escaped_version, "version")
        check_path(module)
        check_version(module, version)
    except InvalidInput as e:
        raise Refused(str(e)) from None
    for ext in ("mod", "zip"):
        if not os.path.isfile(c.file(ext)):
            raise Incomplete(f".{ext}")
    with open(c.file("info"), "rb") as f:
        info = f.read(1 << 20)
    with open(c.file("mod"), "rb") as f:
        mod = f.read()
    try:
        meta = json.loads(info)
    except ValueError:
        raise Refused("the .info file is not JSON") from None
    if not isinstance(meta, dict) or meta.get("Version") != version or not isinstance(meta.get("Time", ""), str):
        raise Refused(f"the .info file does not describe {version}")
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
    return ModuleVersion(module, version), info, mod


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
            mv, info, mod = await deferToThread(_prepare, c)
        except Refused as e:
            report.refused.append((what, str(e)))
            continue
        except Incomplete as e:
            report.incomplete[str(e)] += 1
            continue
        f = await deferToThread(open, c.file("zip"), "rb")
        blob = FileBlob(f, os.fstat(f.fileno()).st_size)
        try:
            stored = await storage.save(mv.path, mv.version, info, mod, blob.chunks())
        finally:
            blob.close()
        (report.imported if stored else report.present).append(mv)
    progress(len(candidates), len(candidates), report, "")
    return report
