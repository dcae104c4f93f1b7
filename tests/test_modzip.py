"""
The module zip rules on their own (no go command): the cases where they used to disagree with
golang.org/x/mod (issue 14 item 30); tests/test_xmod_agreement.py holds them to x/mod itself.
"""

from __future__ import annotations

import zipfile

import attrs
import pytest

from athens.module import InvalidInput, check_file_path, decode_version, parse_semver
from athens.modzip import InvalidZip, check_zip
from tests.zipbytes import Entry, build

M, V = "example.com/m", "v1.0.0"
PREFIX = f"{M}@{V}/"


def make_zip(tmp_path, *names: str, content: bytes = b"package m\n") -> str:
    path = tmp_path / "m.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.writestr(PREFIX + name, b"" if name.endswith("/") else content)
    return str(path)


@pytest.mark.parametrize(
    "names, reason",
    [
        (["go.mod", "sub/go.mod"], "go.mod file not in module root directory"),
        (["sub/GO.MOD"], "go.mod file not in module root directory"),
        (["GO.MOD"], "go.mod files must have lowercase names"),
        (["a.go", "a.go/b.go"], "is both a file and a directory"),
        (["a.go/b.go", "a.go"], "is both a file and a directory"),
        (["x//"], "not clean"),
    ],
)
def test_zips_the_go_command_refuses_to_extract(tmp_path, names, reason):
    with pytest.raises(InvalidZip, match=reason):
        check_zip(make_zip(tmp_path, *names), M, V)


@pytest.mark.parametrize("name", ["-x.go", "cmd/-tool/main.go", "x~1.go", "FOO~12/a.go", "go.mod/a.go", "ß.go"])
def test_file_names_the_go_command_accepts(tmp_path, name):
    check_file_path(name)
    assert check_zip(make_zip(tmp_path, name, "ss.go"), M, V).startswith("h1:")


def test_unicode_case_collisions_follow_simple_folding(tmp_path):
    with pytest.raises(InvalidZip, match="collision"):
        check_zip(make_zip(tmp_path, "\u212a.go", "k.go"), M, V)  # KELVIN SIGN folds to k
    assert check_zip(make_zip(tmp_path, "İ.go", "i.go"), M, V)  # only a full folding joins them


def test_a_zip_over_500_mib_is_refused_unread(tmp_path):
    content = build([Entry(PREFIX.encode() + b"m.go", b"package m\n")])
    path = tmp_path / "big.zip"
    with open(path, "wb") as f:
        f.seek((500 << 20) + 1 - len(content))  # sparse: a valid zip at the end of a file one byte too large
        f.write(content)
    with pytest.raises(InvalidZip, match="too large"):
        check_zip(str(path), M, V)


@pytest.mark.parametrize(
    "entry, reason",
    [
        (Entry(b"m.go", b"package m\n", method=12, data=b"BZh9"), "unsupported compression"),
        (Entry(b"m.go", b"package m\n", data=b"\xff" * 10), "corrupt deflated data"),
        (Entry(b"m.go", b"package m\n", method=0, size=3), "more data than the declared size"),
        (Entry(b"m.go", b"package m\n", size=30), "less data than the declared size"),
        (Entry(b"m.go", b"package m\n", crc=1), "checksum"),
        (Entry(b"\xff.go"), "invalid UTF-8"),
    ],
)
def test_entries_go_cannot_read_are_refused(tmp_path, entry, reason):
    path = tmp_path / "m.zip"
    path.write_bytes(build([attrs.evolve(entry, name=PREFIX.encode() + entry.name)]))
    with pytest.raises(InvalidZip, match=reason):
        check_zip(str(path), M, V)


def test_a_utf8_name_without_the_utf8_flag_is_read_as_go_reads_it(tmp_path):
    path = tmp_path / "m.zip"
    path.write_bytes(build([Entry(PREFIX.encode() + "é.go".encode())]))  # zipfile alone would see cp437 "├⌐.go"
    assert check_zip(str(path), M, V).startswith("h1:")


@pytest.mark.parametrize("version", ["v1.0.0\n", "master\n"])
def test_a_trailing_newline_is_not_part_of_a_version(version):
    assert parse_semver(version) is None
    with pytest.raises(InvalidInput):
        decode_version(version)
