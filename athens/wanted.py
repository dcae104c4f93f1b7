"""
The module versions a build needs, read from what a project already has:
``go.sum`` (zips, and ``/go.mod`` lines for versions whose go.mod alone is
read), ``go.mod`` (its requirements, after its replacements), or a list
(``path version`` or ``path@version`` a line, as ``go list -m all`` prints).

Every line is checked with the go command's rules; a bad one is reported
with its file and line number and the rest still count.
"""

from __future__ import annotations

import os
import re

import attrs

from athens.module import InvalidInput, check_path, check_version

#: A go.sum line: path, version (``/go.mod`` for go.mod alone), ``h1:`` hash.
_SUM = re.compile(r"^(\S+) (\S+?)(/go\.mod)? (h1:[A-Za-z0-9+/=]+)$")


@attrs.frozen
class Wanted:
    """One version to have in the store: whole (its zip too) or its go.mod alone."""

    module: str
    version: str
    whole: bool
    #: go.sum's hashes, when it names them: what is stored must match.
    zip_hash: str = ""
    mod_hash: str = ""

    def __str__(self) -> str:
        return f"{self.module}@{self.version}"


def read_wanted(name: str, text: str, kind: str = "") -> tuple[list[Wanted], list[str]]:
    """
    The versions ``text`` names (``name`` is for messages and tells the kind:
    go.sum, go.mod, or a list; ``kind`` overrides), and one message a bad line.
    """
    kind = kind or sniff(name, text)
    if kind not in ("go.sum", "go.mod", "list"):
        raise ValueError(f"{kind!r} is not go.sum, go.mod or list")
    found: dict[tuple[str, str], Wanted] = {}
    errors: list[str] = []
    lines = text.splitlines()
    entries = _sum_entries(lines) if kind == "go.sum" else _mod_entries(lines) if kind == "go.mod" else \
        _list_entries(lines)
    for number, entry in entries:
        if isinstance(entry, str):
            errors.append(f"{name}:{number}: {entry}")
            continue
        try:
            check_path(entry.module)
            check_version(entry.module, entry.version)
        except InvalidInput as e:
            errors.append(f"{name}:{number}: {e}")
            continue
        key = (entry.module, entry.version)
        before = found.get(key)
        found[key] = entry if before is None else Wanted(
            entry.module, entry.version, before.whole or entry.whole,
            before.zip_hash or entry.zip_hash, before.mod_hash or entry.mod_hash)
    return list(found.values()), errors


def sniff(name: str, text: str) -> str:
    """By the file's name, else by its first lines."""
    base = os.path.basename(name)
    if base.endswith("go.sum"):
        return "go.sum"
    if base.endswith("go.mod"):
        return "go.mod"
    for line in text.splitlines()[:20]:
        if _SUM.match(line.strip()):
            return "go.sum"
        if re.match(r"^\s*(module|require|go)\s", line):
            return "go.mod"
    return "list"


Entries = list[tuple[int, "Wanted | str"]]


def _sum_entries(lines: list[str]) -> Entries:
    entries: Entries = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        m = _SUM.match(line)
        if m is None:
            entries.append((number, f"not a go.sum line: {line[:200]!r}"))
            continue
        path, version, mod_only, h1 = m.groups()
        entries.append((number, Wanted(path, version, not mod_only, "" if mod_only else h1, h1 if mod_only else "")))
    return entries


def _fields(line: str) -> list[str] | str:
    """The words of a go.mod line, quoted ones unquoted, comments dropped; a str is an error."""
    words: list[str] = []
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|`([^`]*)`|(//.*)|(\S+)', line):
        if m.group(3) is not None:
            break
        word = m.group(1) if m.group(1) is not None else m.group(2) if m.group(2) is not None else m.group(4)
        if m.group(1) is not None and "\\" in word:
            return f"escapes in a quoted path are not supported: {line.strip()[:200]!r}"
        words.append(word)
    return words


def _mod_entries(lines: list[str]) -> Entries:
    """``require`` lines and blocks, after ``replace``: a replaced module is wanted at its replacement."""
    requires: list[tuple[int, str, str]] = []
    replaces: dict[tuple[str, str], tuple[str, str]] = {}  # (path, version or "") -> (target, version or "")
    entries: Entries = []
    block = ""
    for number, line in enumerate(lines, 1):
        words = _fields(line)
        if isinstance(words, str):
            entries.append((number, words))
            continue
        if not words:
            continue
        if block:
            if words == [")"]:
                block = ""
                continue
            verb, args = block, words
        elif len(words) == 2 and words[1] == "(":
            block = words[0]
            continue
        else:
            verb, args = words[0], words[1:]
        if verb == "require":
            if len(args) != 2:
                entries.append((number, f"require needs a path and a version: {line.strip()[:200]!r}"))
                continue
            requires.append((number, args[0], args[1]))
        elif verb == "replace":
            if "=>" not in args:
                entries.append((number, f"replace needs =>: {line.strip()[:200]!r}"))
                continue
            arrow = args.index("=>")
            old, new = args[:arrow], args[arrow + 1:]
            if len(old) not in (1, 2) or len(new) not in (1, 2):
                entries.append((number, f"not a replace directive: {line.strip()[:200]!r}"))
                continue
            replaces[(old[0], old[1] if len(old) == 2 else "")] = (new[0], new[1] if len(new) == 2 else "")
    for number, path, version in requires:
        target = replaces.get((path, version)) or replaces.get((path, ""))
        if target is None:
            entries.append((number, Wanted(path, version, True)))
        elif target[1]:  # a module elsewhere; a local directory (no version) needs nothing from a proxy
            entries.append((number, Wanted(target[0], target[1], True)))
    return entries


def _list_entries(lines: list[str]) -> Entries:
    """``path version``, ``path@version``, or ``go list -m all`` lines (``=> target version`` followed)."""
    entries: Entries = []
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split("//", 1)[0].split()
        if not words:
            continue
        if "=>" in words:
            words = words[words.index("=>") + 1:]
            if len(words) == 1:
                continue  # replaced by a local directory
        if len(words) == 1 and "@" in words[0]:
            words = words[0].rsplit("@", 1)
        if len(words) == 1:
            continue  # the main module, as go list -m all prints it
        if len(words) != 2:
            entries.append((number, f"not 'path version': {line.strip()[:200]!r}"))
            continue
        entries.append((number, Wanted(words[0], words[1], True)))
    return entries
