"""
One copy of the vulnerability database, checked whole before it is used.

A snapshot is built from the database's files (:data:`athens.vulndb.archive.Tree`)
and refused whole if anything in it is wrong: an index or entry that is not
the schema, an id that names no entry, an entry under another id's name.  It
holds what serving needs and nothing more: each endpoint gzipped (govulncheck
asks for ``.json.gz``; ``.json`` is inflated on demand), ``vulndb.zip`` (what
storage keeps, other proxies copy, and the digest is taken of), and the
advisories by module (what the policy asks).  Building one is CPU work: do it
off the reactor thread.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import datetime
from typing import Any, Mapping

import attrs

from athens.vulndb.archive import ID, INDEXES, Tree, gunzip, read_archive, write_archive
from athens.vulndb.errors import InvalidDatabase
from athens.vulndb.osv import Advisories, parse_advisory, timestamp


@attrs.frozen
class Snapshot:
    #: ``index/db.json``'s ``modified``, as written there, and parsed.
    modified: str
    modified_at: datetime
    #: The whole database as ``vulndb.zip``.
    archive: bytes = attrs.field(repr=False)
    #: SHA-256 of :attr:`archive`, hex: the same database has the same digest on every node.
    digest: str
    #: Endpoint (``index/modules``, ``ID/GO-2024-1234``) -> its JSON, gzipped.
    gz: Mapping[str, bytes] = attrs.field(repr=False)
    advisories: Advisories = attrs.field(repr=False)
    #: Entry id -> its ``modified`` in ``index/vulns.json`` (a copy fetches only the entries that changed).
    entry_modified: Mapping[str, str] = attrs.field(repr=False)

    @property
    def entries(self) -> int:
        return len(self.entry_modified)

    def json(self, endpoint: str) -> bytes | None:
        """An endpoint's JSON, inflated; None if the database has no such endpoint."""
        data = self.gz.get(endpoint)
        return None if data is None else gunzip(data)


def _load(tree: Tree, endpoint: str) -> Any:
    data = tree.get(endpoint)
    if data is None:
        raise InvalidDatabase(f"{endpoint}.json is missing")
    try:
        return json.loads(data)
    except ValueError as e:  # (UnicodeDecodeError included)
        raise InvalidDatabase(f"{endpoint}.json is not JSON: {e}") from None


def _records(value: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidDatabase(f"{what}: expected a list of objects")
    return value


def _id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not ID.fullmatch(value):
        raise InvalidDatabase(f"{what}: {str(value)[:40]!r} is not an id")
    return value


def check_db(value: Any) -> tuple[str, datetime]:
    """``index/db.json``: its ``modified``, as written and parsed."""
    if not isinstance(value, dict):
        raise InvalidDatabase("index/db.json: expected an object")
    return value.get("modified"), timestamp(value.get("modified"), "index/db.json modified")


def vulns_index(value: Any) -> dict[str, str]:
    """``index/vulns.json``: entry id -> its ``modified``."""
    found = {}
    for record in _records(value, "index/vulns.json"):
        vid = _id(record.get("id"), "index/vulns.json id")
        timestamp(record.get("modified"), f"index/vulns.json {vid} modified")
        found[vid] = record["modified"]
    return found


def build(tree: Tree, archive: bytes | None = None) -> Snapshot:
    """Check every file and build the snapshot; ``archive``: the tree's own ``vulndb.zip``, if known."""
    modified, modified_at = check_db(_load(tree, "index/db"))
    entry_modified = vulns_index(_load(tree, "index/vulns"))
    referenced = set(entry_modified)
    for record in _records(_load(tree, "index/modules"), "index/modules.json"):
        if not isinstance(record.get("path"), str):
            raise InvalidDatabase("index/modules.json: a module without a path")
        for vuln in _records(record.get("vulns") or [], f"index/modules.json {record['path'][:80]}"):
            referenced.add(_id(vuln.get("id"), "index/modules.json id"))
    advisories = []
    entries = sorted(k.removeprefix("ID/") for k in tree if k.startswith("ID/"))
    for vid in entries:
        advisories.append(parse_advisory(_load(tree, "ID/" + vid), vid))
    missing = referenced - set(entries)
    if missing:
        raise InvalidDatabase(f"the indexes name entries that are not there: {', '.join(sorted(missing)[:5])}")
    for vid in entries:  # an entry the index does not list is still served; date it by the database
        entry_modified.setdefault(vid, modified)
    files = {k: tree[k] for k in (*INDEXES, *("ID/" + v for v in entries))}
    archive = archive if archive is not None else write_archive(files)
    return Snapshot(
        modified=modified, modified_at=modified_at, archive=archive, digest=hashlib.sha256(archive).hexdigest(),
        gz={k: gzip.compress(v, compresslevel=6, mtime=0) for k, v in files.items()},
        advisories=Advisories.of(advisories), entry_modified=entry_modified,
    )


def from_archive(data: bytes, canonical: bool = False) -> Snapshot:
    """A snapshot of a zip or tar; ``canonical``: ``data`` is this proxy's own ``vulndb.zip`` (kept as it is)."""
    return build(read_archive(data), data if canonical else None)
