"""
golang.org/x/mod/sumdb as the reference: its test files (vectors) and its code (tests/sumdbjudge).

``./run-tests`` downloads the x/mod that tests/sumdbjudge/go.mod pins into ``.gomodcache``;
everything here is offline, and a missing module cache is a failure, not a skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.gotool import go_binary, offline_build_env, run

REPO = Path(__file__).resolve().parents[2]
MODCACHE = REPO / ".gomodcache"
JUDGE = REPO / "tests" / "sumdbjudge"


def version() -> str:
    return re.search(r"golang\.org/x/mod (v\S+)", (JUDGE / "go.mod").read_text()).group(1)  # type: ignore[union-attr]


def root() -> Path:
    """The x/mod module directory in the module cache."""
    found = MODCACHE / f"golang.org/x/mod@{version()}"
    if not (found / "sumdb" / "tlog" / "tlog.go").is_file():
        raise AssertionError(f"{found} is missing: ./run-tests downloads golang.org/x/mod into {MODCACHE}")
    return found


def source(relative: str) -> str:
    return (root() / relative).read_text()


_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\", '"': b'"', "'": b"'", "a": b"\a", "b": b"\b",
            "f": b"\f", "v": b"\v"}
_LITERAL = r'"(?:[^"\\\n]|\\.)*"'


def go_bytes(literal: str) -> bytes:
    """The bytes of a Go interpreted string literal (``\\xNN`` is a byte, ``\\uNNNN`` a UTF-8 rune)."""
    out, i, body = bytearray(), 0, literal[1:-1]
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
        elif body[i + 1] == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        elif body[i + 1] in "uU":
            width = 4 if body[i + 1] == "u" else 8
            out += chr(int(body[i + 2 : i + 2 + width], 16)).encode()
            i += 2 + width
        else:
            out += _ESCAPES[body[i + 1]]
            i += 2
    return bytes(out)


def assigned(relative: str, name: str) -> list[bytes]:
    """Every value given to ``name`` in a Go file: ``name := "..." + "..."`` (concatenations joined), in order."""
    pattern = re.compile(rf"\b{re.escape(name)}\s*:?=\s*(?:\[\]byte\()?((?:{_LITERAL}\s*\+?\s*)+)")
    return [b"".join(go_bytes(s) for s in re.findall(_LITERAL, m.group(1)))
            for m in pattern.finditer(source(relative))]


def literals(text: str) -> list[bytes]:
    """Every Go string literal in a piece of Go source."""
    return [go_bytes(s) for s in re.findall(_LITERAL, text)]


def build_judge(work: Path) -> Path:
    """Build tests/sumdbjudge against the cached x/mod, offline (its build cache persists in .gomodcache)."""
    root()
    src = work / "sumdbjudge"
    shutil.copytree(JUDGE, src)
    env = offline_build_env(work, MODCACHE, MODCACHE / ".gocache")
    binary = work / "sumdbjudge-bin"
    run([go_binary(), "build", "-o", str(binary), "."], src, env)
    return binary


def judge(binary: Path, request: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run([str(binary)], input=json.dumps(request), capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"sumdbjudge failed: {result.stderr}")
    return json.loads(result.stdout)  # type: ignore[no-any-return]
