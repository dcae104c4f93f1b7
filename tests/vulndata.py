"""
Go vulnerability databases the tests make: OSV entries for modules the tests create, and
the indexes vuln.go.dev publishes beside them, as a tree, a directory, a zip or a tar.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from athens.vulndb.archive import write_archive


def entry(vid: str, module: str, events: Sequence[Mapping[str, str]] = ({"introduced": "0"}, {"fixed": "1.1.0"}),
          symbols: Sequence[str] = ("Hello",), package: str = "", modified: str = "2024-03-01T00:00:00Z",
          aliases: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """One OSV entry as the Go database writes them: ``module`` affected over ``events`` (OSV's bare versions)."""
    return {
        "schema_version": "1.3.1",
        "id": vid,
        "modified": modified,
        "published": modified,
        "aliases": list(aliases),
        "summary": f"A test vulnerability in {module}",
        "details": "Made by the tests.",
        "affected": [{
            "package": {"name": module, "ecosystem": "Go"},
            "ranges": [{"type": "SEMVER", "events": list(events)}],
            "ecosystem_specific": {"imports": [{"path": package or module, "symbols": list(symbols)}]},
        }],
        "database_specific": {"url": f"https://pkg.go.dev/vuln/{vid}"},
        **extra,
    }


def tree(entries: Iterable[Mapping[str, Any]], modified: str | None = None) -> dict[str, bytes]:
    """The database's files by endpoint (``index/db``, ``ID/<id>``), indexes derived from the entries."""
    entries = list(entries)
    modules: dict[str, list[dict[str, str]]] = {}
    for e in entries:
        for affected in e["affected"]:
            fixes = [ev["fixed"] for r in affected["ranges"] for ev in r["events"] if "fixed" in ev]
            vuln = {"id": e["id"], "modified": e["modified"], **({"fixed": fixes[-1]} if fixes else {})}
            modules.setdefault(affected["package"]["name"], []).append(vuln)
    files = {
        "index/db": {"modified": modified or max((e["modified"] for e in entries), default="2024-01-01T00:00:00Z")},
        "index/modules": [{"path": p, "vulns": v} for p, v in sorted(modules.items())],
        "index/vulns": [{"id": e["id"], "modified": e["modified"], "aliases": e.get("aliases", [])}
                        for e in sorted(entries, key=lambda e: e["id"])],
        **{"ID/" + e["id"]: e for e in entries},
    }
    return {k: json.dumps(v).encode() for k, v in files.items()}


def write_dir(files: Mapping[str, bytes], directory: Path, plain: bool = True, zipped: bool = True) -> Path:
    """The tree as a static mirror of vuln.go.dev: ``.json`` and ``.json.gz`` files, and ``vulndb.zip``."""
    for endpoint, data in files.items():
        path = directory / (endpoint + ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        if plain:
            path.write_bytes(data)
        (directory / (endpoint + ".json.gz")).write_bytes(gzip.compress(data))
    if zipped:
        (directory / "vulndb.zip").write_bytes(write_archive(files))
    return directory


def tar_of(files: Mapping[str, bytes], root: str = "vulndb/", gz: bool = False, mode: str = "w:gz") -> bytes:
    """A tar of the tree under ``root``, as ``.json`` (or ``.json.gz``) files."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tf:
        for endpoint, data in files.items():
            content = gzip.compress(data) if gz else data
            info = tarfile.TarInfo(root + endpoint + (".json.gz" if gz else ".json"))
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return out.getvalue()
