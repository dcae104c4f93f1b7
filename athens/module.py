"""
Module paths, versions and file paths as the ``go`` command defines them.

Pure functions, no I/O.  Everything a client sends passes through here
before it may reach storage, so the rules are strict: they follow
``golang.org/x/mod/module`` and ``golang.org/x/mod/semver`` and add length
limits, so that a path can never name a file outside the storage root.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cmp_to_key
from typing import Iterable
from urllib.parse import quote

import attrs

#: Longest module path accepted (bytes); far above any real one, below PATH_MAX.
MAX_PATH_LENGTH = 1024
#: Longest path element (bytes): NAME_MAX on every common file system.
MAX_ELEMENT_LENGTH = 255
#: Longest version or version query accepted.
MAX_VERSION_LENGTH = 200


class InvalidInput(ValueError):
    """A module path, version or file path that breaks the rules; the text is for the client."""


@attrs.frozen
class ModuleVersion:
    """A module at one version, decoded (upper case as upper case)."""

    path: str
    version: str

    def __str__(self) -> str:
        return f"{self.path}@{self.version}"


# --- case encoding ---------------------------------------------------------


def escape(text: str) -> str:
    """Case-encode: ``A`` becomes ``!a``. The caller has checked ``text``."""
    if not any("A" <= c <= "Z" for c in text):
        return text
    return "".join("!" + c.lower() if "A" <= c <= "Z" else c for c in text)


def unescape(text: str, what: str = "path") -> str:
    """Undo case-encoding; a ``!`` not before ``a``-``z`` or a bare capital is invalid."""
    if "!" not in text:
        if any("A" <= c <= "Z" for c in text):
            raise InvalidInput(f"invalid escaped module {what} {text!r}: upper-case letter must be written !x")
        return text
    out: list[str] = []
    bang = False
    for c in text:
        if bang:
            if not "a" <= c <= "z":
                raise InvalidInput(f"invalid escaped module {what} {text!r}: '!' must precede a lower-case letter")
            out.append(c.upper())
            bang = False
        elif c == "!":
            bang = True
        elif "A" <= c <= "Z":
            raise InvalidInput(f"invalid escaped module {what} {text!r}: upper-case letter must be written !x")
        else:
            out.append(c)
    if bang:
        raise InvalidInput(f"invalid escaped module {what} {text!r}: trailing '!'")
    return "".join(out)


# --- paths -----------------------------------------------------------------
# golang.org/x/mod/module's checkPath and checkElem, kind by kind: module paths (CheckPath) and
# file paths inside a module zip (CheckFilePath).  tests/test_xmod_agreement.py holds them to
# x/mod's own test vectors and code.

_MODULE, _FILE = "module path", "file path"
_MOD_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
_FIRST_ELEM_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
_FILE_NAME_ASCII = frozenset("!#$%&()+,-.=@[]^_{}~ ")
#: A file path element of ASCII letters, digits and ``_FILE_NAME_ASCII`` only (every rune fine).
_PLAIN_FILE_ELEMENT = re.compile(r"[A-Za-z0-9!#$%&()+,\-.=@\[\]^_{}~ ]+").fullmatch
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)


def _file_char_ok(c: str) -> bool:
    """x/mod's fileNameOK: the ASCII letters, digits and ``_FILE_NAME_ASCII``, or any Unicode letter."""
    if c.isascii():
        return c.isalnum() or c in _FILE_NAME_ASCII
    return unicodedata.category(c).startswith("L")


def _check_element(elem: str, kind: str, path: str) -> None:
    if elem == "":
        raise InvalidInput(f"malformed {kind} {path!r}: empty path element")
    if elem.count(".") == len(elem):
        raise InvalidInput(f"malformed {kind} {path!r}: invalid path element {elem!r}")
    if elem[0] == "." and kind == _MODULE:
        raise InvalidInput(f"malformed {kind} {path!r}: leading dot in path element")
    if elem[-1] == ".":
        raise InvalidInput(f"malformed {kind} {path!r}: trailing dot in path element")
    if kind == _MODULE or not _PLAIN_FILE_ELEMENT(elem):  # (most file names: no rune to look at one by one)
        ok = (lambda c: c in _MOD_PATH_CHARS) if kind == _MODULE else _file_char_ok
        for c in elem:
            if not ok(c):
                raise InvalidInput(f"malformed {kind} {path!r}: invalid char {c!r}")
    short = elem.split(".", 1)[0]
    if short.upper() in _RESERVED:
        raise InvalidInput(f"malformed {kind} {path!r}: {short!r} disallowed as path element component on Windows")
    # Windows short names (FOO~1) only matter for paths the go command creates directories from
    # the module path; a file in a module may be called x~1 (x/mod checks this for module paths only).
    suffix = short[short.rfind("~") + 1 :] if "~" in short else ""
    if kind == _MODULE and suffix.isascii() and suffix.isdigit():
        raise InvalidInput(f"malformed {kind} {path!r}: trailing tilde and digits in path element")


def _check_path_common(path: str, kind: str) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"malformed {kind}: invalid UTF-8") from None
    if path == "":
        raise InvalidInput(f"malformed {kind}: empty string")
    if path[0] == "-" and kind == _MODULE:
        raise InvalidInput(f"malformed {kind} {path!r}: leading dash")
    if "//" in path:
        raise InvalidInput(f"malformed {kind} {path!r}: double slash")
    if path[-1] == "/":
        raise InvalidInput(f"malformed {kind} {path!r}: trailing slash")
    for elem in path.split("/"):
        _check_element(elem, kind, path)


def check_path(path: str) -> None:
    """
    Validate a decoded module path: ``module.CheckPath``, and the storage limits (a path longer
    than ``MAX_PATH_LENGTH`` or with an element longer than ``MAX_ELEMENT_LENGTH`` bytes would
    not fit in a file system; x/mod has no such limit).
    """
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_LENGTH:
        raise InvalidInput(f"malformed module path: longer than {MAX_PATH_LENGTH} bytes")
    _check_path_common(path, _MODULE)
    first = path.split("/", 1)[0]
    if "." not in first:
        raise InvalidInput(f"malformed module path {path!r}: missing dot in first path element")
    for c in first:
        if c not in _FIRST_ELEM_CHARS:
            raise InvalidInput(f"malformed module path {path!r}: invalid char {c!r} in first path element")
    split_path_version(path)
    if any(len(elem) > MAX_ELEMENT_LENGTH for elem in path.split("/")):
        raise InvalidInput(f"malformed module path {path!r}: path element longer than {MAX_ELEMENT_LENGTH} bytes")


def check_file_path(path: str) -> None:
    """Validate a file path inside a module zip: exactly ``module.CheckFilePath``."""
    _check_path_common(path, _FILE)


def split_path_version(path: str) -> tuple[str, str]:
    """Split ``a/b/v2`` into (``a/b``, ``/v2``); raise if the major suffix is malformed."""
    if path.startswith("gopkg.in/"):
        return _split_gopkg_in(path)
    i = len(path)
    dot = False
    while i > 0 and path[i - 1] in "0123456789.":
        dot = dot or path[i - 1] == "."
        i -= 1
    if i <= 1 or i == len(path) or path[i - 1] != "v" or path[i - 2] != "/":
        return path, ""
    prefix, major = path[: i - 2], path[i - 2 :]
    if dot or len(major) <= 2 or major[2] == "0" or major == "/v1":
        raise InvalidInput(f"malformed module path {path!r}: invalid version suffix {major!r}")
    return prefix, major


def _split_gopkg_in(path: str) -> tuple[str, str]:
    i = len(path) - (len("-unstable") if path.endswith("-unstable") else 0)
    while i > 0 and path[i - 1] in "0123456789":
        i -= 1
    bad = InvalidInput(f"malformed module path {path!r}: invalid gopkg.in version suffix")
    if i <= 1 or path[i - 1] != "v" or path[i - 2] != ".":
        raise bad
    prefix, major = path[: i - 2], path[i - 2 :]
    if len(major) <= 2 or (major[2] == "0" and major != ".v0"):
        raise bad
    return prefix, major


# --- semantic versions ------------------------------------------------------


@attrs.frozen
class Semver:
    major: str
    minor: str
    patch: str
    short: str
    prerelease: str
    build: str


_NUM = r"(0|[1-9][0-9]*)"
_IDENT = r"[0-9A-Za-z-]+"
_SEMVER = re.compile(
    rf"v{_NUM}(?:\.{_NUM}(?:\.{_NUM})?)?"
    rf"(-{_IDENT}(?:\.{_IDENT})*)?"
    rf"(\+{_IDENT}(?:\.{_IDENT})*)?"
)


def parse_semver(v: str) -> Semver | None:
    m = _SEMVER.fullmatch(v)
    if not m:
        return None
    major, minor, patch, pre, build = m.groups()
    if pre:
        for ident in pre[1:].split("."):
            if ident.isdigit() and len(ident) > 1 and ident[0] == "0":
                return None
    if minor is None:
        short, minor, patch = ".0.0", "0", "0"
    elif patch is None:
        short, patch = ".0", "0"
    else:
        short = ""
    if short and (pre or build):
        return None  # v1-pre and v1.2+meta are not valid in Go's semver
    return Semver(major, minor, patch, short, pre or "", build or "")


def is_valid_semver(v: str) -> bool:
    return parse_semver(v) is not None


def canonical(v: str) -> str:
    """``v1.2`` -> ``v1.2.0``; build metadata dropped; ``""`` if invalid."""
    p = parse_semver(v)
    if p is None:
        return ""
    return f"v{p.major}.{p.minor}.{p.patch}{p.prerelease}"


def _cmp_int(a: str, b: str) -> int:
    return (len(a) > len(b)) - (len(a) < len(b)) or (a > b) - (a < b)


def _cmp_pre(x: str, y: str) -> int:
    if x == y:
        return 0
    if x == "":
        return 1
    if y == "":
        return -1
    xs, ys = x[1:].split("."), y[1:].split(".")
    for a, b in zip(xs, ys):
        if a == b:
            continue
        an, bn = a.isdigit(), b.isdigit()
        if an and bn:
            return _cmp_int(a, b)
        if an != bn:
            return -1 if an else 1
        return -1 if a < b else 1
    return (len(xs) > len(ys)) - (len(xs) < len(ys))


def compare(v: str, w: str) -> int:
    """Semver order; an invalid version sorts below every valid one."""
    pv, pw = parse_semver(v), parse_semver(w)
    if pv is None or pw is None:
        return 0 if pv is pw else (-1 if pv is None else 1)
    for a, b in ((pv.major, pw.major), (pv.minor, pw.minor), (pv.patch, pw.patch)):
        c = _cmp_int(a, b)
        if c:
            return c
    return _cmp_pre(pv.prerelease, pw.prerelease)


def sort_versions(versions: Iterable[str]) -> list[str]:
    return sorted(versions, key=cmp_to_key(lambda a, b: compare(a, b) or ((a > b) - (a < b))))


_PSEUDO = re.compile(r"v[0-9]+\.(0\.0-|[0-9]+\.[0-9]+-([^+]*\.)?0\.)[0-9]{14}-[A-Za-z0-9]+(\+[0-9A-Za-z-]+)?")


def is_pseudo_version(v: str) -> bool:
    return v.count("-") >= 2 and is_valid_semver(v) and bool(_PSEUDO.fullmatch(v))


def check_version(path: str, version: str) -> None:
    """
    A version that may be stored for ``path``: its own ``module.CanonicalVersion`` and accepted by
    ``module.Check`` (what ``zip.Unzip`` asks of a version), within ``MAX_VERSION_LENGTH``.
    """
    if len(version) > MAX_VERSION_LENGTH:
        raise InvalidInput(f"invalid version: longer than {MAX_VERSION_LENGTH} characters")
    p = parse_semver(version)
    if p is None:
        raise InvalidInput(f"invalid version {version!r}: not a semantic version")
    if p.build not in ("", "+incompatible") or p.short:
        want = canonical(version) + ("+incompatible" if p.build == "+incompatible" else "")
        raise InvalidInput(f"invalid version {version!r}: not a canonical version (want {want!r})")
    check_path_major(version, split_path_version(path)[1])


def check_path_major(version: str, path_major: str) -> None:
    """``module.CheckPathMajor``: whether a valid ``version`` fits a path's major suffix (``/v2``, ``.v1``, ``""``)."""
    if path_major.startswith(".v"):
        path_major = path_major.removesuffix("-unstable")
    if version.startswith("v0.0.0-") and path_major == ".v1":
        return
    p = parse_semver(version)
    major = "v" + p.major if p else ""
    if path_major == "":
        if major in ("v0", "v1") or (p and p.build == "+incompatible"):
            return
        want = "v0 or v1"
    elif path_major[0] in "/.":
        if major == path_major[1:]:
            return
        want = path_major[1:]
    else:
        want = path_major
    raise InvalidInput(f"invalid version {version!r}: should be {want}, not {major}")


def is_canonical_version(path: str, version: str) -> bool:
    """Whether ``version`` may be stored for ``path`` (see :func:`check_version`), as a yes or no."""
    try:
        check_version(path, version)
    except InvalidInput:
        return False
    return True


#: What a version query may hold: semver (``v1.2.3-rc.1+incompatible``), branch names, commit
#: hashes.  Narrower than a file-path element on purpose: no ``%``, ``/`` or ``\\`` can reach an
#: upstream that decodes or normalises paths a second time.
_QUERY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")


def check_query(query: str) -> None:
    """A version query (``master``, ``abc1234``, ``v1.2``): safe to log and to pass on, never a path."""
    if not query or len(query) > MAX_VERSION_LENGTH:
        raise InvalidInput("invalid version: empty or too long")
    if not _QUERY.fullmatch(query) or query.endswith("."):
        raise InvalidInput(f"invalid version {query[:80]!r}: a version query holds letters, digits and . _ + ~ -")


# --- protocol request paths ------------------------------------------------


def decode_module(escaped: str) -> str:
    """A module path from the URL (already percent-decoded), validated."""
    if len(escaped) > MAX_PATH_LENGTH * 2:
        raise InvalidInput("malformed module path: too long")
    path = unescape(escaped, "path")
    check_path(path)
    return path


def decode_version(escaped: str) -> str:
    """A version or version query from the URL, validated as a query."""
    version = unescape(escaped, "version")
    check_query(version)
    return version


#: Kept as they are in a URL path; everything else is percent-encoded.
_URL_SAFE = "/!-._~+"


def request_path(module: str, kind: str, version: str = "") -> str:
    """
    The protocol path (``/<module>/@v/<version>.<kind>``, ``/@v/list``, ``/@latest``) of a
    validated module and version, case-encoded then percent-encoded: the one place
    where every URL sent to an upstream or in a redirect is built.
    """
    base = "/" + quote(escape(module), safe=_URL_SAFE)
    if kind == "list":
        return base + "/@v/list"
    if kind == "latest":
        return base + "/@latest"
    if kind not in ("info", "mod", "zip"):
        raise ValueError(f"not a protocol file: {kind!r}")
    return f"{base}/@v/{quote(escape(version), safe=_URL_SAFE.replace('/', ''))}.{kind}"
