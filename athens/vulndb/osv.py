"""
Which module versions an OSV entry of the Go vulnerability database affects.

Pure functions over parsed JSON, with govulncheck's own reading of the
schema (golang.org/x/vuln ``internal/semver.Affects``): versions in OSV have
no ``v`` (``1.2.3``), ``introduced: "0"`` is the beginning of time, a range
is closed on the left and open on the right, an entry with no ``SEMVER``
range affects every version, and a withdrawn entry affects none.
"""

from __future__ import annotations

from datetime import datetime
from functools import cmp_to_key
from typing import Any, Iterable, Mapping

import attrs

from athens.module import compare, is_valid_semver
from athens.vulndb.errors import InvalidDatabase


@attrs.frozen
class Finding:
    """One advisory that affects a module version, and the version that fixes it (``""``: none known)."""

    id: str
    fixed: str = ""
    aliases: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.id} (fixed in {self.fixed})" if self.fixed else f"{self.id} (no fixed version)"


@attrs.frozen
class Event:
    introduced: str = ""
    fixed: str = ""


@attrs.frozen
class Affected:
    """One ``affected[]`` item: a module and the versions of it the entry covers."""

    module: str
    #: Each ``SEMVER`` range as its events; None when the entry has no SEMVER range (every version).
    ranges: tuple[tuple[Event, ...], ...] | None


@attrs.frozen
class Advisory:
    id: str
    aliases: tuple[str, ...]
    affected: tuple[Affected, ...]
    withdrawn: bool = False


def go_version(osv: str) -> str:
    """OSV's ``1.2.3`` (or ``v1.2.3``, ``go1.2.3``) as Go's ``v1.2.3``."""
    bare = osv.removeprefix("v").removeprefix("go")
    return "v" + bare


def _event_key(event: Event) -> tuple[int, str]:
    return (0, "") if event.introduced == "0" else (1, go_version(event.fixed or event.introduced))


def _order(a: Event, b: Event) -> int:
    ka, kb = _event_key(a), _event_key(b)
    if ka[0] != kb[0]:
        return ka[0] - kb[0]
    return compare(ka[1], kb[1]) if ka[0] else 0


def in_range(events: Iterable[Event], version: str) -> tuple[bool, str]:
    """Whether ``version`` (Go's form) is in the range, and then the first fix after it (``""``: none)."""
    ordered = sorted(events, key=cmp_to_key(_order))  # a stable sort, as govulncheck's
    affected = False
    for event in ordered:
        if not affected and event.introduced:
            affected = event.introduced == "0" or compare(version, go_version(event.introduced)) >= 0
        elif affected and event.fixed:
            if compare(version, go_version(event.fixed)) < 0:
                return True, go_version(event.fixed)
            affected = False
    return affected, ""


def findings(advisory: Advisory, module: str, version: str) -> Finding | None:
    """The advisory as it bears on ``module@version``; None if it does not affect it."""
    if advisory.withdrawn:
        return None
    for item in advisory.affected:
        if item.module != module:
            continue
        if item.ranges is None:
            return Finding(advisory.id, "", advisory.aliases)
        for events in item.ranges:
            hit, fixed = in_range(events, version) if events else (True, "")
            if hit:
                return Finding(advisory.id, fixed, advisory.aliases)
    return None


# -- parsing (every value is untrusted) --


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidDatabase(f"{what}: expected a string")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidDatabase(f"{what}: expected a list")
    return value


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidDatabase(f"{what}: expected an object")
    return value


def timestamp(value: Any, what: str) -> datetime:
    """An RFC 3339 time with its zone (the database writes UTC with ``Z``)."""
    text = _str(value, what)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidDatabase(f"{what}: {text[:40]!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise InvalidDatabase(f"{what}: {text[:40]!r} has no time zone")
    return when


def _version(value: Any, what: str) -> str:
    text = _str(value, what)
    if text != "0" and not is_valid_semver(go_version(text)):
        raise InvalidDatabase(f"{what}: {text[:40]!r} is not a version")
    return text


def parse_advisory(entry: Any, expected_id: str) -> Advisory:
    """An ``ID/<id>.json`` entry, checked as far as the policy and govulncheck rely on it."""
    where = f"ID/{expected_id}.json"
    obj = _object(entry, where)
    if obj.get("id") != expected_id:
        raise InvalidDatabase(f"{where}: its id is {str(obj.get('id'))[:40]!r}")
    timestamp(obj.get("modified"), f"{where} modified")
    aliases = tuple(_str(a, f"{where} aliases") for a in _list(obj.get("aliases"), f"{where} aliases"))
    affected = []
    for n, item in enumerate(_list(obj.get("affected"), f"{where} affected")):
        item = _object(item, f"{where} affected[{n}]")
        module = _str(_object(item.get("package"), f"{where} affected[{n}].package").get("name"),
                      f"{where} affected[{n}].package.name")
        ranges: list[tuple[Event, ...]] = []
        seen_semver = False
        for r in _list(item.get("ranges"), f"{where} affected[{n}].ranges"):
            r = _object(r, f"{where} affected[{n}].ranges[]")
            if r.get("type") != "SEMVER":
                continue
            seen_semver = True
            events = []
            for e in _list(r.get("events"), f"{where} affected[{n}] events"):
                e = _object(e, f"{where} affected[{n}] events[]")
                if "introduced" in e:
                    events.append(Event(introduced=_version(e["introduced"], f"{where} introduced")))
                elif "fixed" in e:
                    events.append(Event(fixed=_version(e["fixed"], f"{where} fixed")))
            ranges.append(tuple(events))
        affected.append(Affected(module, tuple(ranges) if seen_semver else None))
    withdrawn = obj.get("withdrawn")
    if withdrawn is not None:
        timestamp(withdrawn, f"{where} withdrawn")
    return Advisory(expected_id, aliases, tuple(affected), withdrawn is not None)


@attrs.frozen
class Advisories:
    """Every advisory by the modules it names: what the vulnerability policy asks."""

    by_module: Mapping[str, tuple[Advisory, ...]] = attrs.field(factory=dict)

    @classmethod
    def of(cls, advisories: Iterable[Advisory]) -> "Advisories":
        index: dict[str, list[Advisory]] = {}
        for advisory in advisories:
            for module in {a.module for a in advisory.affected}:
                index.setdefault(module, []).append(advisory)
        return cls({m: tuple(sorted(a, key=lambda x: x.id)) for m, a in index.items()})

    def affecting(self, module: str, version: str) -> list[Finding]:
        """The advisories that affect ``module@version``, by id."""
        found = (findings(a, module, version) for a in self.by_module.get(module, ()))
        return [f for f in found if f is not None]
