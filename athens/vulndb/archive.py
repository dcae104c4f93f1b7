"""
The vulnerability database as one file: read from a zip or a tar, written as a zip.

What is read: ``vulndb.zip`` as vuln.go.dev publishes it (``index/db.json``,
``index/modules.json``, ``index/vulns.json``, ``ID/<id>.json``), or a zip or
tar (plain, gzip, bzip2, xz) of a copy of that tree, such as ``gendb -out``
writes or a mirror of vuln.go.dev: files may be ``.json`` or ``.json.gz``,
and the tree may sit under one directory.  Everything else in it (the legacy
per-module files, directories) is ignored.  Nothing is ever written to disk
from an archive: names are only matched, and every size is bounded, whatever
the archive declares.

What is written: the same ``vulndb.zip`` layout, with fixed timestamps and
order, so that one database gives the same bytes (and digest) on every node.
"""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
import zlib
from typing import IO, Iterator, Mapping

from athens.vulndb.errors import InvalidDatabase

#: The largest archive accepted (vuln.go.dev's vulndb.zip was about 2 MiB in 2025).
MAX_ARCHIVE = 256 << 20
#: The largest file in it, uncompressed, and all of them together.
MAX_FILE = 64 << 20
MAX_TOTAL = 1 << 30
MAX_FILES = 500_000

INDEXES = ("index/db", "index/modules", "index/vulns")
#: The ids the database may use: ``GO-2024-1234`` and any other OSV id of the same plain kind.
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_ENDPOINT = re.compile(r"(index/(?:db|modules|vulns)|ID/[A-Za-z0-9][A-Za-z0-9._-]{0,99})\.json(\.gz)?")

#: Endpoint (``index/db``, ``ID/GO-2024-1234``) -> its JSON bytes.
Tree = Mapping[str, bytes]


def gunzip(data: bytes, limit: int = MAX_FILE) -> bytes:
    """A gzip member's content, refusing more than ``limit`` bytes of it."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as e:
        raise InvalidDatabase(f"a .gz file is not gzip: {e}") from None
    if len(out) > limit:
        raise InvalidDatabase(f"a file is larger than {limit} bytes uncompressed")
    if not inflater.eof:
        raise InvalidDatabase("a .gz file is cut short")
    return out


def _bounded(f: IO[bytes], limit: int, name: str) -> bytes:
    data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidDatabase(f"{name} is larger than {limit} bytes")
    return data


def _members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular file of a zip or tar, bounded one by one."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                infos = zf.infolist()
                if len(infos) > MAX_FILES:
                    raise InvalidDatabase(f"more than {MAX_FILES} files")
                for info in infos:
                    if not info.is_dir() and _ENDPOINT.search(info.filename):
                        with zf.open(info) as f:
                            yield info.filename, _bounded(f, MAX_FILE, info.filename)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError) as e:
            raise InvalidDatabase(f"a broken zip: {e}") from None
        return
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
            for count, member in enumerate(tf):
                if count > MAX_FILES:
                    raise InvalidDatabase(f"more than {MAX_FILES} files")
                if member.isfile() and _ENDPOINT.search(member.name):
                    f = tf.extractfile(member)
                    if f is not None:
                        yield member.name, _bounded(f, MAX_FILE, member.name)
    except tarfile.ReadError:
        raise InvalidDatabase("neither a zip nor a tar file") from None
    except (tarfile.TarError, zlib.error, EOFError, OSError) as e:
        raise InvalidDatabase(f"a broken tar file: {e}") from None


def read_archive(data: bytes) -> Tree:
    """The database's files in an archive, by endpoint; the tree may sit under one directory."""
    if len(data) > MAX_ARCHIVE:
        raise InvalidDatabase(f"larger than {MAX_ARCHIVE} bytes")
    found: dict[str, tuple[str, bytes, bool]] = {}
    total = 0
    for name, content in _members(data):
        name = name.removeprefix("./")
        m = _ENDPOINT.fullmatch(name.rsplit("/", 2)[-2] + "/" + name.rsplit("/", 1)[-1]) if name.count("/") else None
        if m is None:
            continue
        prefix = name[: len(name) - len(m.group(0))]
        endpoint, gz = m.group(1), bool(m.group(2))
        if gz:
            content = gunzip(content)
        total += len(content)
        if total > MAX_TOTAL:
            raise InvalidDatabase(f"more than {MAX_TOTAL} bytes in all")
        key = prefix + endpoint
        if key not in found or found[key][2]:  # a plain .json wins over its .gz twin
            found[key] = (prefix, content, gz)
    roots = {prefix for key, (prefix, _, _) in found.items() if key == prefix + "index/db"}
    if not roots:
        raise InvalidDatabase("no index/db.json in it: not a Go vulnerability database")
    if len(roots) > 1:
        raise InvalidDatabase(f"several databases in one archive (under {', '.join(sorted(roots))[:200]})")
    root = roots.pop()
    return {key[len(root):]: content for key, (prefix, content, _) in found.items() if prefix == root}


def write_archive(tree: Tree) -> bytes:
    """``vulndb.zip``: the indexes, then every entry by id; the same bytes for the same tree."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for endpoint in [*INDEXES, *sorted(k for k in tree if k not in INDEXES)]:
            info = zipfile.ZipInfo(endpoint + ".json", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, tree[endpoint])
    return out.getvalue()
