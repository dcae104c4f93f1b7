"""
Athens' filter file (``FilterFile``): include, exclude or send direct, per path.

One rule a line: ``+ path`` include, ``- path`` exclude (403), ``D path``
answer with a redirect to ``GlobalEndpoint``; a sign alone sets the default.
An optional third field lists version qualifiers, comma-separated: ``v1.2``
(a prefix), ``~1.2.3`` (1.2.x from 1.2.3), ``^1.2.3`` (1.x.x from 1.2.3),
``<1.2.3`` (older than 1.2.3).  The most specific path whose qualifiers match
wins; ``#`` starts a comment.  Unlike Athens, a rule with qualifiers never
applies to ``@v/list`` and ``@latest`` (they name no version): ``- path v1.0``
hides v1.0.x, not the module.
"""

from __future__ import annotations

from enum import Enum

import attrs

from athens.module import compare, parse_semver


class Action(str, Enum):
    INCLUDE = "+"
    EXCLUDE = "-"
    DIRECT = "D"


class FilterError(ValueError):
    pass


@attrs.frozen
class FilterRule:
    path: tuple[str, ...]
    action: Action
    qualifiers: tuple[str, ...] = ()

    def matches_version(self, version: str) -> bool:
        """Unqualified rules match everything; qualified ones only requests for a matching version."""
        if not self.qualifiers:
            return True
        return bool(version) and any(qualifier_matches(q, version) for q in self.qualifiers)


def qualifier_matches(qualifier: str, version: str) -> bool:
    if qualifier.startswith("v"):
        prefix = qualifier.rstrip("*")
        if prefix.count(".") < 2 and not prefix.endswith("."):
            prefix += "."  # v1.2 means v1.2.x, never v1.20
        return version.startswith(prefix) or version == prefix.rstrip(".")
    op, bound = qualifier[0], "v" + qualifier[1:]
    v, b = parse_semver(version), parse_semver(bound)
    if v is None or b is None or b.short:
        return False
    if op == "<":
        return compare(version, bound) < 0
    if compare(version, bound) < 0 or v.major != b.major:
        return False
    if op == "~":
        return v.minor == b.minor
    return op == "^"


@attrs.frozen
class Filter:
    default: Action = Action.INCLUDE
    rules: tuple[FilterRule, ...] = ()

    def action(self, module: str, version: str = "") -> Action:
        """The rule of the longest matching path whose qualifiers accept ``version``."""
        elems = tuple(module.split("/"))
        best: FilterRule | None = None
        for rule in self.rules:
            if elems[: len(rule.path)] == rule.path and rule.matches_version(version):
                if best is None or len(rule.path) >= len(best.path):
                    best = rule
        return best.action if best else self.default


def parse_filter(text: str, where: str = "filter file") -> Filter:
    default = Action.INCLUDE
    rules = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) > 3:
            raise FilterError(f"{where}, line {number}: expected 'sign [path [versions]]'")
        try:
            action = Action(fields[0])
        except ValueError:
            raise FilterError(f"{where}, line {number}: unknown rule {fields[0]!r} (use +, - or D)") from None
        if len(fields) == 1:
            default = action
            continue
        qualifiers = tuple(q for q in fields[2].split(",") if q) if len(fields) == 3 else ()
        for q in qualifiers:
            if q[0] not in "v~^<" or len(q) < 2:
                raise FilterError(f"{where}, line {number}: bad version qualifier {q!r}")
        rules.append(FilterRule(tuple(fields[1].strip("/").split("/")), action, qualifiers))
    return Filter(default, tuple(rules))


def load_filter(path: str) -> Filter | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return parse_filter(f.read(), path)
    except OSError as e:
        raise FilterError(f"filter file {path}: {e.strerror}") from None
