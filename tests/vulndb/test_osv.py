"""Which versions an OSV entry affects, as govulncheck reads the schema, and the fix the policy names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from athens.module import compare
from athens.vulndb.errors import InvalidDatabase
from athens.vulndb.osv import Advisories, Event, in_range, parse_advisory
from tests.vulndata import entry

M = "github.com/athens-vuln/lib"


def affecting(events, version, **kwargs):
    advisories = Advisories.of([parse_advisory(entry("GO-2024-0001", M, events, **kwargs), "GO-2024-0001")])
    return [(f.id, f.fixed) for f in advisories.affecting(M, version)]


@pytest.mark.parametrize("events, version, expected", [
    ([{"introduced": "0"}, {"fixed": "1.1.0"}], "v1.0.9", [("GO-2024-0001", "v1.1.0")]),
    ([{"introduced": "0"}, {"fixed": "1.1.0"}], "v1.1.0", []),  # the fix itself is not affected (open right)
    ([{"introduced": "1.2.0"}], "v1.1.9", []),
    ([{"introduced": "1.2.0"}], "v1.2.0", [("GO-2024-0001", "")]),  # closed left; no fix known
    ([{"introduced": "1.2.0"}], "v2.0.0+incompatible", [("GO-2024-0001", "")]),  # build metadata is ignored
    # Two ranges, events out of order: sorted first, as govulncheck does.
    ([{"fixed": "2.3.1"}, {"introduced": "2.0.0"}, {"fixed": "1.5.2"}, {"introduced": "0"}], "v1.5.1",
     [("GO-2024-0001", "v1.5.2")]),
    ([{"fixed": "2.3.1"}, {"introduced": "2.0.0"}, {"fixed": "1.5.2"}, {"introduced": "0"}], "v1.9.0", []),
    ([{"fixed": "2.3.1"}, {"introduced": "2.0.0"}, {"fixed": "1.5.2"}, {"introduced": "0"}], "v2.3.0",
     [("GO-2024-0001", "v2.3.1")]),
    ([{"introduced": "0"}, {"fixed": "1.1.0"}], "v1.1.0-rc.1", [("GO-2024-0001", "v1.1.0")]),  # pre-releases precede
    ([{"introduced": "0"}, {"fixed": "1.1.0"}], "v0.0.0-20200101000000-abcdefabcdef", [("GO-2024-0001", "v1.1.0")]),
    ([], "v9.9.9", [("GO-2024-0001", "")]),  # a SEMVER range without events: every version
])
def test_affected_versions(events, version, expected):
    assert affecting(events, version) == expected


def test_no_semver_range_affects_every_version():
    e = entry("GO-2024-0001", M)
    e["affected"][0]["ranges"] = [{"type": "GIT", "events": [{"introduced": "0"}]}]
    assert Advisories.of([parse_advisory(e, "GO-2024-0001")]).affecting(M, "v5.0.0")
    e["affected"][0].pop("ranges")
    assert Advisories.of([parse_advisory(e, "GO-2024-0001")]).affecting(M, "v5.0.0")


def test_withdrawn_entries_and_other_modules_affect_nothing():
    withdrawn = entry("GO-2024-0001", M, withdrawn="2024-04-01T00:00:00Z")
    assert affecting([{"introduced": "0"}], "v1.0.0", withdrawn="2024-04-01T00:00:00Z") == []
    advisories = Advisories.of([parse_advisory(withdrawn, "GO-2024-0001")])
    assert advisories.affecting(M + "/v2", "v2.0.0") == []


@pytest.mark.parametrize("change, error", [
    (lambda e: e.update(id="GO-2024-0002"), "its id is"),
    (lambda e: e.update(modified="yesterday"), "RFC 3339"),
    (lambda e: e.update(modified="2024-01-01T00:00:00"), "no time zone"),
    (lambda e: e["affected"][0]["ranges"][0]["events"].append({"fixed": "one.two"}), "not a version"),
    (lambda e: e["affected"][0].update(package="x"), "expected an object"),
    (lambda e: e.update(affected={"a": 1}), "expected a list"),
    (lambda e: e.update(aliases=[1]), "expected a string"),
])
def test_malformed_entries_are_refused(change, error):
    e = entry("GO-2024-0001", M)
    change(e)
    with pytest.raises(InvalidDatabase, match=error):
        parse_advisory(e, "GO-2024-0001")


_VERSIONS = st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)).map(lambda t: "%d.%d.%d" % t)


@given(bounds=st.lists(_VERSIONS, min_size=1, max_size=6, unique=True), probe=_VERSIONS)
def test_ranges_agree_with_a_brute_force_reading(bounds, probe):
    """Sorted bounds alternate introduced/fixed: affected exactly between an introduced and the next fix."""
    ordered = sorted(bounds, key=lambda v: tuple(int(x) for x in v.split(".")))
    events = [Event(introduced=v) if i % 2 == 0 else Event(fixed=v) for i, v in enumerate(ordered)]
    version = "v" + probe
    expected, fix = False, ""
    for i, v in enumerate(ordered):
        if i % 2 == 0 and compare(version, "v" + v) >= 0:
            expected, fix = True, ""
        elif i % 2 == 1 and expected and compare(version, "v" + v) >= 0:
            expected = False
        elif i % 2 == 1 and expected and not fix:
            fix = "v" + v
    assert in_range(list(reversed(events)), version) == (expected, fix if expected else "")
