"""Reading the database from a zip or a tar, checking it whole, and the bytes served from it."""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import pytest

from athens.vulndb.archive import MAX_FILE, read_archive, write_archive
from athens.vulndb.errors import InvalidDatabase
from athens.vulndb.snapshot import build, from_archive
from tests.test_importer import make_zip
from tests.vulndata import entry, tar_of, tree

M = "github.com/athens-vuln/lib"


def files():
    return tree([entry("GO-2024-0001", M), entry("GO-2024-0002", M + "/v2", [{"introduced": "2.0.0"}],
                                                 aliases=["CVE-2024-1"])])


def test_every_form_of_one_database_gives_one_snapshot():
    """vulndb.zip, a zip of a mirror under a directory (.json.gz only), tars plain and compressed: same digest."""
    t = files()
    reference = build(t)
    mirror = make_zip({f"vuln.go.dev/{k}.json.gz": gzip.compress(v) for k, v in t.items()}
                    | {"vuln.go.dev/github.com/legacy.json": b"[]", "vuln.go.dev/index.json": b"{}"})
    for data in (write_archive(t), mirror, tar_of(t), tar_of(t, gz=True, mode="w"), tar_of(t, mode="w:xz")):
        snapshot = from_archive(data)
        assert snapshot.digest == reference.digest
        assert snapshot.entries == 2 and snapshot.modified == "2024-03-01T00:00:00Z"
    assert reference.archive == write_archive(t)  # deterministic: nodes that copy one database agree
    names = zipfile.ZipFile(io.BytesIO(reference.archive)).namelist()
    assert names == ["index/db.json", "index/modules.json", "index/vulns.json", "ID/GO-2024-0001.json",
                     "ID/GO-2024-0002.json"]


def test_what_is_served_is_the_upstream_bytes():
    t = files()
    snapshot = build(t)
    for endpoint, data in t.items():
        assert gzip.decompress(snapshot.gz[endpoint]) == data
        assert snapshot.json(endpoint) == data
    assert snapshot.json("ID/GO-2099-0001") is None
    assert [f.id for f in snapshot.advisories.affecting(M + "/v2", "v2.1.0")] == ["GO-2024-0002"]


def test_plain_json_wins_over_its_gz_twin():
    t = files()
    other = json.dumps({"modified": "2030-01-01T00:00:00Z"}).encode()
    data = make_zip({**{k + ".json": v for k, v in t.items()}, "index/db.json.gz": gzip.compress(other)})
    assert read_archive(data)["index/db"] == t["index/db"]


def broken(change) -> dict[str, bytes]:
    t = {k: json.loads(v) for k, v in files().items()}
    change(t)
    return {k: json.dumps(v).encode() for k, v in t.items() if v is not None}


@pytest.mark.parametrize("change, error", [
    (lambda t: t.update({"index/db": None}), "index/db.json is missing"),
    (lambda t: t.update({"index/vulns": None}), "index/vulns.json is missing"),
    (lambda t: t.update({"index/db": {"modified": 5}}), "expected a string"),
    (lambda t: t.update({"index/modules": {"path": M}}), "expected a list of objects"),
    (lambda t: t["index/modules"][0]["vulns"].append({"id": "GO-2024-9999"}), "not there: GO-2024-9999"),
    (lambda t: t["index/vulns"].append({"id": "../../etc", "modified": "2024-01-01T00:00:00Z"}), "not an id"),
    (lambda t: t["ID/GO-2024-0001"].update(id="GO-2024-0002"), "its id is"),
])
def test_a_database_with_anything_wrong_is_refused_whole(change, error):
    with pytest.raises(InvalidDatabase, match=error):
        build(broken(change))


def test_not_json_is_refused():
    t = files() | {"ID/GO-2024-0001": b"{not json"}
    with pytest.raises(InvalidDatabase, match="ID/GO-2024-0001.json is not JSON"):
        build(t)


@pytest.mark.parametrize("data, error", [
    (b"not an archive at all", "neither a zip nor a tar"),
    (make_zip({"README": b"hello"}), "no index/db.json"),
    (make_zip({"a/index/db.json": b"{}", "b/index/db.json": b"{}"}), "several databases"),
    (make_zip({"index/db.json.gz": b"not gzip"}), "not gzip"),
    (make_zip({"index/db.json.gz": gzip.compress(b"x" * 100)[:-12]}), "cut short"),
])
def test_unreadable_archives_are_refused(data, error):
    with pytest.raises(InvalidDatabase, match=error):
        read_archive(data)


def test_sizes_are_bounded_whatever_the_archive_declares():
    """A gzip bomb inside, and a member larger than the limit: refused without inflating it all."""
    bomb = gzip.compress(b"\0" * (MAX_FILE + 1))
    with pytest.raises(InvalidDatabase, match="larger than"):
        read_archive(make_zip({"index/db.json.gz": bomb}))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("index/modules.json", b" " * (MAX_FILE + 1))
    with pytest.raises(InvalidDatabase, match="larger than"):
        read_archive(out.getvalue())
