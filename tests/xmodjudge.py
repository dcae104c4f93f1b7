"""
golang.org/x/mod as a judge: the Go program in tests/xmod, built offline against the x/mod that
``./run-tests`` put in ``.gomodcache``, answers what x/mod decides about any input we give it,
and x/mod's own test files (read from the same module cache) give the vectors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Sequence

import attrs

from tests.gotool import go_binary, offline_build_env, run

REPO = Path(__file__).resolve().parents[1]
#: Filled by ./run-tests (`go mod download` of the version tests/xmod/go.mod pins).
MODCACHE = REPO / ".gomodcache"
SOURCE = Path(__file__).parent / "xmod"


def to_go(text: str) -> str:
    """A Python string as the bytes of a Go string (surrogates stand for bytes that are not UTF-8), hex."""
    return text.encode("utf-8", "surrogateescape").hex()


def from_go(hexed: str) -> str:
    return bytes.fromhex(hexed).decode("utf-8", "surrogateescape")


@attrs.frozen
class Verdict:
    """x/mod's answer: accepted or not, the result (an escaped path, a hash...), and its error text."""

    ok: bool
    out: str
    err: str


@attrs.frozen
class XMod:
    """The built judge and the x/mod module directory it was built from."""

    binary: Path
    root: Path
    version: str

    def judge(self, requests: Iterable[tuple[str, Sequence[str]]]) -> list[Verdict]:
        """One verdict per ``(op, args)``, in order, from one run of the judge."""
        lines = [json.dumps({"op": op, "args": [to_go(a) for a in args]}) for op, args in requests]
        result = subprocess.run(
            [str(self.binary), "judge"], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            raise AssertionError(f"xmodjudge failed: {result.stderr}")
        verdicts = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(verdicts) == len(lines), result.stderr
        return [Verdict(v["ok"], from_go(v["out"]), v["err"]) for v in verdicts]

    def strings(self, *files: str) -> tuple[list[str], list[list[str]]]:
        """The string literals of x/mod's files (relative to its root), and those of each table row."""
        out = subprocess.run(
            [str(self.binary), "strings", *(str(self.root / f) for f in files)],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
        found = json.loads(out)
        return [from_go(s) for s in found["strings"]], [[from_go(s) for s in row] for row in found["groups"]]

    def letters(self) -> dict[int, int]:
        """Every letter above ASCII (Go's unicode.IsLetter) with the rune x/mod's collision check folds it to."""
        out = subprocess.run([str(self.binary), "letters"], capture_output=True, text=True, timeout=120, check=True)
        return {int(r, 16): int(f, 16) for r, f in (line.split() for line in out.stdout.splitlines())}


def build(work: Path) -> XMod:
    """Build the judge in ``work`` without a network; a missing module cache is an error, not a skip."""
    if not (MODCACHE / "cache" / "download" / "golang.org" / "x" / "mod").is_dir():
        raise AssertionError(f"{MODCACHE} has no golang.org/x/mod: ./run-tests downloads it")
    src = work / "src"
    shutil.copytree(SOURCE, src)
    env = offline_build_env(work, MODCACHE, work / "gocache")
    binary = work / "xmodjudge"
    run([go_binary(), "build", "-o", str(binary), "."], src, env)
    module = json.loads(run([go_binary(), "list", "-m", "-json", "golang.org/x/mod"], src, env).stdout)
    return XMod(binary, Path(module["Dir"]), module["Version"])
