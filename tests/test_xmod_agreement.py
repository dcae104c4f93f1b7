"""
Our module path, file path, version and zip rules agree with golang.org/x/mod's, input by input.

Every vector is judged twice: by x/mod itself (tests/xmod, built against the x/mod that
./run-tests downloaded, pinned in tests/xmod/go.mod) and by athens.module / athens.modzip.
The vectors are x/mod's own: every string literal of its module, semver and zip tests and every
txtar archive in zip/testdata, read from the module cache; then zips built byte by byte for what
only reading a zip finds, every Unicode letter, and inputs hypothesis makes.  A disagreement
fails with the input shown.
"""

from __future__ import annotations

import itertools
import os
import unicodedata
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athens import modzip
from athens.module import (
    InvalidInput,
    check_file_path,
    check_path,
    check_path_major,
    check_version,
    compare,
    decode_module,
    decode_version,
    escape,
    is_pseudo_version,
    parse_semver,
    split_path_version,
)
from athens.modzip import InvalidZip, check_zip
from tests import xmodjudge
from tests.zipbytes import Entry, build, deflate
from tests.xmodjudge import Verdict, XMod

TEST_FILES = ("module/module_test.go", "module/pseudo_test.go", "semver/semver_test.go", "zip/zip_test.go")
M, V = "example.com/m", "v1.0.0"
PREFIX = f"{M}@{V}/".encode()


@pytest.fixture(scope="module")
def xmod(tmp_path_factory) -> XMod:
    return xmodjudge.build(tmp_path_factory.mktemp("xmod"))


@pytest.fixture(scope="module")
def vectors(xmod):
    return xmod.strings(*TEST_FILES)


def ours(check: Callable[[], object]) -> Verdict:
    """Our verdict in x/mod's shape."""
    try:
        out = check()
    except (InvalidInput, InvalidZip) as e:
        return Verdict(False, "", str(e))
    return Verdict(True, out if isinstance(out, str) else "", "")


def disagreements(xmod: XMod, cases: list[tuple[str, tuple[str, ...], Callable[[], object]]], compare_out=True):
    """Each case is (x/mod operation, its arguments, our check); returns the ones where the verdicts differ."""
    theirs = xmod.judge((op, args) for op, args, _ in cases)
    found = []
    for (op, args, check), go in zip(cases, theirs):
        us = ours(check)
        if us.ok != go.ok or (compare_out and go.ok and us.out != go.out):
            found.append(f"{op}{args!r}: x/mod {'ok ' + repr(go.out) if go.ok else go.err!r}; "
                         f"ours {'ok ' + repr(us.out) if us.ok else us.err!r}")
    return found


def assert_agree(xmod, cases, compare_out=True):
    found = disagreements(xmod, cases, compare_out)
    assert not found, f"{len(found)} of {len(cases)} disagree:\n" + "\n".join(found[:60])


# --- paths ------------------------------------------------------------------


def _split(path: str) -> str:
    prefix, major = split_path_version(path)
    return prefix + "\x00" + major


def _escaped(path: str) -> str:
    check_path(path)
    return escape(path)


def path_cases(strings):
    cases = []
    for s in strings:
        cases += [
            ("CheckPath", (s,), lambda s=s: check_path(s)),
            ("CheckFilePath", (s,), lambda s=s: check_file_path(s)),
            ("EscapePath", (s,), lambda s=s: _escaped(s)),
            ("UnescapePath", (s,), lambda s=s: decode_module(s)),
            ("SplitPathVersion", (s,), lambda s=s: _split(s)),
        ]
    return cases


def test_paths_agree_on_xmod_vectors(xmod, vectors):
    strings, _ = vectors
    assert len(strings) > 300 and "x.y/z~09" in strings and "-x/z" in strings  # the tables were read
    assert_agree(xmod, path_cases(strings))


def test_escaped_versions_are_a_part_of_xmods(xmod, vectors):
    """Our version queries are narrower than UnescapeVersion on purpose (item 1); never wider, never different."""
    strings, _ = vectors
    accepted = []
    for s in strings:
        try:
            accepted.append((s, decode_version(s)))
        except InvalidInput:
            pass
    assert len(accepted) > 100
    verdicts = xmod.judge([("UnescapeVersion", (s,)) for s, _ in accepted] + [("EscapeVersion", (v,)) for _, v in accepted])
    unescaped, escaped = verdicts[: len(accepted)], verdicts[len(accepted) :]
    wrong = [(s, v, u, e) for (s, v), u, e in zip(accepted, unescaped, escaped)
             if not (u.ok and u.out == v and e.ok and e.out == escape(v))]
    assert not wrong, wrong[:20]


# --- versions ---------------------------------------------------------------


def _semver(v: str) -> str:
    p = parse_semver(v)
    if p is None:
        raise InvalidInput("not a semantic version")
    return "\x00".join([f"v{p.major}.{p.minor}.{p.patch}{p.prerelease}", "v" + p.major, p.prerelease, p.build])


def _check(path: str, version: str) -> None:
    check_path(path)
    check_version(path, version)


def _is_pseudo(v: str) -> None:
    if not is_pseudo_version(v):
        raise InvalidInput("not a pseudo-version")


def version_cases(strings, rows):
    cases = []
    for s in strings:
        cases += [("semver", (s,), lambda s=s: _semver(s)), ("IsPseudoVersion", (s,), lambda s=s: _is_pseudo(s))]
    pairs = {(row[0], row[1]) for row in rows if len(row) >= 2}
    versions = sorted({s for s in strings if s.startswith("v")})
    paths = sorted({s for s in strings if "/" in s and len(s) < 60})
    majors = sorted({"", "/v2", "/v3", ".v0", ".v1", ".v2", ".v1-unstable", "/", "."} | {b for a, b in pairs})
    for path, version in pairs | set(itertools.product(paths, versions)):
        cases.append(("Check", (path, version), lambda p=path, v=version: _check(p, v)))
    for version, major in pairs | set(itertools.product(versions, majors)):
        cases.append(("CheckPathMajor", (version, major), lambda v=version, m=major: check_path_major(v, m)))
    return cases


def test_versions_agree_on_xmod_vectors(xmod, vectors):
    strings, rows = vectors
    assert ["github.com/go-yaml/yaml", "v2.0.0"] in rows and "v1.2.3-pre+meta" in strings
    assert_agree(xmod, version_cases(strings, rows))


def test_version_order_agrees(xmod, vectors):
    strings, _ = vectors
    versions = sorted({s for s in strings if s.startswith("v") and len(s) < 40})
    pairs = list(itertools.product(versions, versions))
    theirs = xmod.judge(("Compare", pair) for pair in pairs)
    wrong = [(a, b, go.out, compare(a, b)) for (a, b), go in zip(pairs, theirs) if int(go.out) != compare(a, b)]
    assert not wrong, wrong[:20]


# --- zips -------------------------------------------------------------------


def parse_txtar(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """golang.org/x/tools/txtar's format: a comment, then ``-- name --`` lines each opening a file."""
    comment, files, name, body = b"", [], None, b""
    for line in data.splitlines(keepends=True):
        bare = line.rstrip(b"\n")
        if bare.startswith(b"-- ") and bare.endswith(b" --") and len(bare) >= 6:
            if name is None:
                comment = body
            else:
                files.append((name, body))
            name, body = bare[3:-3].strip(), b""
        else:
            body += line
    if name is None:
        comment = body
    else:
        files.append((name, body))
    return comment, files


def txtar_zip(txtar: Path, out: Path) -> tuple[str, str]:
    """The zip a zip/testdata archive describes, and its module path and version."""
    comment, files = parse_txtar(txtar.read_bytes())
    keys = {}
    for line in comment.splitlines():
        key, _, value = line.split(b"#", 1)[0].strip().partition(b"=")
        if key:
            keys[key.decode()] = value.strip().decode("utf-8", "surrogateescape")
    path, version = keys.get("path", M), keys.get("version", V)
    # unzip and check_zip archives name the zip's entries; the others name a module's files.
    prefix = b"" if txtar.parent.name in ("unzip", "check_zip") else f"{path}@{version}/".encode("utf-8", "surrogateescape")
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # duplicate names are vectors
        for name, content in files:
            if name != b"want":
                zf.writestr((prefix + name).decode("utf-8", "surrogateescape"), content)
    return path, version


def _unzip(zip_path: Path, path: str, version: str) -> str:
    check_path(path)
    check_version(path, version)
    return check_zip(str(zip_path), path, version)


def zip_case(zip_path: Path, path: str = M, version: str = V):
    return ("zip", (str(zip_path), path, version), lambda: _unzip(zip_path, path, version))


def test_zips_agree_on_xmod_testdata(xmod, tmp_path):
    archives = sorted((xmod.root / "zip" / "testdata").glob("*/*.txt"))
    assert len(archives) > 50
    cases = []
    for i, txtar in enumerate(archives):
        zip_path = tmp_path / f"{i}-{txtar.parent.name}-{txtar.stem}.zip"
        cases.append(zip_case(zip_path, *txtar_zip(txtar, zip_path)))
    assert_agree(xmod, cases)


def _sync_flushed(content: bytes) -> bytes:
    """Raw deflate that stops without its final block (all the data is there)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(content) + c.flush(zlib.Z_SYNC_FLUSH)


def zip_file(tmp_path: Path, name: str, entries: list[Entry]) -> Path:
    path = tmp_path / f"{name}.zip"
    path.write_bytes(build(entries))
    return path


def files(*names: str, content: bytes = b"package m\n") -> list[Entry]:
    return [Entry(PREFIX + n.encode(), content) for n in names]


SIXTEEN_MIB = 16 << 20

#: Zips for what the rules and Go's zip reader decide; each is judged by both.
SPECIAL = {
    # the five cases of issue 14 item 30
    "go_mod_outside_root": files("go.mod", "sub/go.mod"),
    "GO_MOD": files("GO.MOD"),
    "file_and_directory": files("a.go", "a.go/b.go"),
    "leading_dash": files("-x.go", "cmd/-y/main.go"),
    "tilde_digits": files("x~1.go", "FOO~12/a.go"),
    # names
    "utf8_name_without_flag": [Entry(PREFIX + "é.go".encode())],
    "utf8_name_with_flag": [Entry(PREFIX + "é.go".encode(), flags=0x800)],
    "not_utf8_name": [Entry(PREFIX + b"\xff.go")],
    "nul_in_name": [Entry(PREFIX + b"a\x00b.go")],
    "backslash": files("a\\b.go"),
    "prefix_dir_only": [Entry(PREFIX), *files("m.go")],
    "no_slash_after_prefix": [Entry(PREFIX[:-1])],
    "dir_twice": [Entry(PREFIX + b"d/"), Entry(PREFIX + b"d/"), *files("d/x.go")],
    "dir_case_collision": [Entry(PREFIX + b"d/"), *files("D/x.go")],
    "double_slash_dir": [Entry(PREFIX + b"d//")],
    "eszett_and_ss": files("ß.go", "ss.go"),
    "kelvin_and_k": files("\u212a.go", "k.go"),
    "dotted_capital_i": files("İ.go", "i.go"),
    "dotless_i": files("ı.go", "I.go"),
    "sigmas": files("σ.go", "ς.go"),
    "element_255": files("a" * 252 + ".go"),
    "element_256": files("a" * 253 + ".go"),
    "dir_element_256": [Entry(PREFIX + b"a" * 256 + b"/"), *files("m.go")],
    "vendor_and_hg": files("vendor/x/y.go", ".hg_archival.txt", "vendor/modules.txt"),
    # reading
    "stored": [Entry(PREFIX + b"m.go", b"package m\n", method=0)],
    "bzip2": [Entry(PREFIX + b"m.go", b"package m\n", method=12, data=b"BZh9")],
    "stored_size_lies_low": [Entry(PREFIX + b"m.go", b"package m\n", method=0, size=3)],
    "stored_size_lies_high": [Entry(PREFIX + b"m.go", b"package m\n", method=0, size=30)],
    "deflated_size_lies_low": [Entry(PREFIX + b"m.go", b"package m\n" * 40, size=100)],
    "deflated_truncated": [Entry(PREFIX + b"m.go", data=deflate(b"package m\n" * 40)[:-4], content=b"package m\n" * 40)],
    "deflated_without_final_block": [Entry(PREFIX + b"m.go", b"package m\n" * 40, data=_sync_flushed(b"package m\n" * 40))],
    "deflated_more_than_declared": [Entry(PREFIX + b"m.go", b"package m\n" * 40, size=100,
                                          crc=zlib.crc32(b"package m\n" * 10))],  # size and CRC of a prefix
    "deflated_then_junk": [Entry(PREFIX + b"m.go", b"package m\n", data=deflate(b"package m\n") + b"junk")],
    "not_deflate": [Entry(PREFIX + b"m.go", b"package m\n", data=b"\xff" * 10)],
    "bad_crc": [Entry(PREFIX + b"m.go", b"package m\n", crc=1234)],
    "zero_crc": [Entry(PREFIX + b"m.go", b"package m\n", crc=0)],
    "descriptor": [Entry(PREFIX + b"m.go", b"package m\n", flags=8,
                         descriptor=b"PK\x07\x08" + (0x1EC5CAD1).to_bytes(4, "little") + bytes(8))],
    "bad_local_header": [Entry(PREFIX + b"m.go", b"package m\n", signature=b"PK\x09\x09")],
    "dir_with_contents": [Entry(PREFIX + b"d/", b"x")],
    "dir_with_compressed_bytes": [Entry(PREFIX + b"d/", b"", data=b"\x03\x00")],
    "encrypted_flag": [Entry(PREFIX + b"m.go", b"package m\n", flags=1)],
    "declared_too_large": [Entry(PREFIX + b"m.go", b"package m\n", size=modzip.MAX_UNZIPPED + 1)],
    "regular_mode": [Entry(PREFIX + b"m.go", b"package m\n", mode=0o100644)],
    # sizes: go.mod and LICENSE up to 16 MiB
    "go_mod_16_mib": [Entry(PREFIX + b"go.mod", b"\n" * SIXTEEN_MIB)],
    "go_mod_over_16_mib": [Entry(PREFIX + b"go.mod", b"\n" * (SIXTEEN_MIB + 1))],
    "license_over_16_mib": [Entry(PREFIX + b"LICENSE", b"\n" * (SIXTEEN_MIB + 1))],
    "sub_license_over_16_mib": [Entry(PREFIX + b"sub/LICENSE", b"\n" * (SIXTEEN_MIB + 1))],
}


def test_special_zips_agree(xmod, tmp_path):
    assert_agree(xmod, [zip_case(zip_file(tmp_path, name, entries)) for name, entries in SPECIAL.items()])


def test_zip_file_size_limit_agrees(xmod, tmp_path):
    """A zip file over 500 MiB is refused before it is read, whatever it holds (sparse files: nothing is written)."""
    content = build(files("m.go"))
    cases = []
    for name, size in (("at_limit", modzip.MAX_ZIP_FILE), ("over_limit", modzip.MAX_ZIP_FILE + 1)):
        path = tmp_path / f"{name}.zip"
        with open(path, "wb") as f:
            f.seek(size - len(content))
            f.write(content)
        assert os.path.getsize(path) == size
        cases.append(zip_case(path))
    found = xmod.judge([(op, args) for op, args, _ in cases])
    assert [v.ok for v in found] == [True, False], found
    assert_agree(xmod, cases)


def test_symlink_entries_are_refused_where_xmod_extracts_them(xmod, tmp_path):
    """The one deliberate difference in the zip rules (issue 14 item 6): the go command never makes such an entry."""
    path = zip_file(tmp_path, "symlink", [Entry(PREFIX + b"link.go", b"/etc/passwd", mode=0o120777)])
    (go,) = xmod.judge([zip_case(path)[:2]])
    assert go.ok
    with pytest.raises(InvalidZip, match="not a regular file"):
        _unzip(path, M, V)


# --- Unicode ----------------------------------------------------------------


def test_letters_and_case_folding_agree(xmod):
    """
    Every letter Python's Unicode database knows is a file-name letter for x/mod too, and two of
    them collide in a zip for us exactly when they do for x/mod; letters newer than that database
    (x/mod's Go knows a later Unicode) are refused by us, the one difference.
    """
    go = xmod.letters()
    known = {cp for cp in range(0x80, 0x110000) if unicodedata.category(chr(cp)) != "Cn"}
    ours_letters = {cp for cp in known if unicodedata.category(chr(cp)).startswith("L")}
    assert ours_letters == {cp for cp in go if cp in known}
    go_classes, our_classes = {}, {}
    for cp in ours_letters:
        go_classes.setdefault(go[cp], set()).add(cp)
        our_classes.setdefault(modzip._fold(chr(cp)), set()).add(cp)
    theirs = {frozenset(c) for c in go_classes.values()}
    mine = {frozenset(c) for c in our_classes.values()}
    assert theirs == mine, (sorted(map(sorted, theirs - mine))[:10], sorted(map(sorted, mine - theirs))[:10])


# --- generated inputs -------------------------------------------------------

_CHARS = st.sampled_from(
    list("abcxyzABCXYZ0129-._~/!+@#$%&()[]{}^=,' \"*:;<>?\\`|\n\t")
    + ["\x00", "\x7f", "é", "ß", "ü", "\u212a", "ı", "İ", "☺", "\u0345", "\u00b2", "٣", "\udcff", "\u2028"]
)
_ELEMENTS = st.sampled_from(
    ["x.y", "example.com", "gopkg.in", "v0", "v1", "v2", "v2.0", "v02", "yaml.v2", "yaml.v0", "check.v1-unstable",
     "a", "A", "-a", ".a", "a.", "..", ".", "", "con", "COM1.txt", "aux.go", "x~1", "x~", "~1", "go.mod", "GO.MOD",
     "ß", "ss", "é", "_x", "x+y", "x!y"]
)
_NAMES = st.one_of(st.text(_CHARS, max_size=24), st.lists(_ELEMENTS, min_size=1, max_size=5).map("/".join))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(_NAMES, min_size=1, max_size=40))
def test_paths_agree_on_generated_names(xmod, names):
    assert_agree(xmod, path_cases(names))


_VERSIONS = st.one_of(
    st.text(st.sampled_from(list("v0123.-+abcincompatible")), max_size=20),
    st.builds(
        lambda *p: "".join(p),
        st.just("v"), st.sampled_from(["0", "1", "2", "10", "01"]), st.sampled_from(["", ".0", ".2", ".02"]),
        st.sampled_from(["", ".0", ".3"]), st.sampled_from(["", "-pre", "-0", "-01", "-a.1", "-", "-0.20240102030405-abc"]),
        st.sampled_from(["", "+incompatible", "+meta", "+", "\n"]),
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(versions=st.lists(_VERSIONS, min_size=1, max_size=30), paths=st.lists(_NAMES, min_size=1, max_size=5))
def test_versions_agree_on_generated_inputs(xmod, versions, paths):
    assert_agree(xmod, version_cases(versions, [[p, v] for p, v in zip(paths, versions)]))


_ZIP_NAMES = st.lists(
    st.sampled_from(["a", "A", "a.go", "A.GO", "go.mod", "GO.MOD", "Go.Mod", "sub", "LICENSE", "x~1", "-x", "ß", "ss",
                     "\u212a", "k", ".", "..", "", "vendor", ".hg_archival.txt", "é", "con.go"]),
    min_size=1, max_size=3,
).map("/".join)
_ZIPS = st.lists(st.tuples(_ZIP_NAMES, st.booleans()), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(zips=st.lists(_ZIPS, min_size=1, max_size=12))
def test_zips_agree_on_generated_entries(xmod, tmp_path, zips):
    cases = []
    for i, entries in enumerate(zips):
        built = [Entry(PREFIX + name.encode() + (b"/" if is_dir else b""), b"" if is_dir else b"x")
                 for name, is_dir in entries]
        cases.append(zip_case(zip_file(tmp_path, f"gen{i}", built)))
    assert_agree(xmod, cases)
