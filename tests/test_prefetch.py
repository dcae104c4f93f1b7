"""Prefetch: what go.sum, go.mod and lists name, and how the store is filled from them (a fake origin)."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater

from athens.sumdb import go_mod_hash
from athens.fetch.interface import OriginNotFound
from athens.fetch.testing import FakeFetcher
from athens.filter import parse_filter
from athens.listcache import ListCache
from athens.modzip import check_zip
from athens.origin import Origin
from athens.policy import parse_download_file
from athens.prefetch import Result, prefetch
from athens.stash import Stash
from athens.storage.memory import MemoryStorage
from athens.wanted import Wanted, read_wanted, sniff
from tests.test_stash_and_lists import module_zip

A, B = "example.com/a", "example.com/b"


def test_go_sum_names_zips_and_go_mod_only_versions():
    text = (f"{A} v1.0.0 h1:zipzipzip=\n{A} v1.0.0/go.mod h1:modmodmod=\n"
            f"{B} v0.9.0/go.mod h1:oldmod=\n\n{B} v1.0.0/go.mod h1:newmod=\n{B} v1.0.0 h1:newzip=\n")
    wanted, errors = read_wanted("go.sum", text)
    assert errors == []
    assert sorted(wanted, key=str) == [Wanted(A, "v1.0.0", True, "h1:zipzipzip=", "h1:modmodmod="),
                                       Wanted(B, "v0.9.0", False, "", "h1:oldmod="),
                                       Wanted(B, "v1.0.0", True, "h1:newzip=", "h1:newmod=")]


def test_bad_lines_are_named_with_their_line_and_the_rest_count():
    text = f"{A} v1.0.0 h1:x=\nnot a line\n{A} v1.0 h1:y=\nExample.com/../x v1.0.0 h1:z=\n"
    wanted, errors = read_wanted("ci/go.sum", text)
    assert [str(w) for w in wanted] == [f"{A}@v1.0.0"]
    assert [e.split(": ")[0] for e in errors] == ["ci/go.sum:2", "ci/go.sum:3", "ci/go.sum:4"]
    assert "not a go.sum line" in errors[0] and "v1.0" in errors[1]


def test_go_mod_requirements_after_replacements():
    text = f'''module example.com/main // the main module

go 1.22

require {A} v1.0.0
require (
\t{B} v1.1.0 // indirect
\t"example.com/quoted" v0.1.0
\texample.com/local v1.0.0
\texample.com/pinned v1.0.0
\texample.com/moved v2.0.0+incompatible
)

replace example.com/local => ../local
replace (
\texample.com/pinned v1.0.0 => example.com/fork v1.0.1
\texample.com/moved => example.com/moved/v2 v2.0.1
)
exclude {B} v1.0.9
'''
    wanted, errors = read_wanted("go.mod", text)
    assert errors == []
    assert sorted(str(w) for w in wanted) == [f"{A}@v1.0.0", f"{B}@v1.1.0", "example.com/fork@v1.0.1",
                                              "example.com/moved/v2@v2.0.1", "example.com/quoted@v0.1.0"]
    assert all(w.whole for w in wanted)


def test_lists_as_go_list_prints_them():
    text = (f"example.com/main\n{A} v1.0.0\n{B}@v1.1.0\nexample.com/r v1.0.0 => example.com/s v1.2.0\n"
            "example.com/t v1.0.0 => ../t\n# a comment\nexample.com/u v1 v2\n")
    wanted, errors = read_wanted("modules.txt", text)
    assert sorted(str(w) for w in wanted) == [f"{A}@v1.0.0", f"{B}@v1.1.0", "example.com/s@v1.2.0"]
    assert errors == ["modules.txt:7: not 'path version': 'example.com/u v1 v2'"]


def test_the_kind_is_told_by_the_name_else_by_the_lines():
    assert sniff("deps/go.sum", "") == "go.sum" and sniff("x/go.mod", "") == "go.mod"
    assert sniff("-", f"{A} v1.0.0 h1:abc=\n") == "go.sum"
    assert sniff("-", "module example.com/m\n") == "go.mod"
    assert sniff("-", f"{A} v1.0.0\n") == "list"


class SmallFetcher(FakeFetcher):
    """An upstream: it hands out .info and .mod alone."""

    def small(self, module: str, version: str, kind: str) -> Deferred[bytes]:
        async def get() -> bytes:
            await self._wait("small", module, version, kind)
            if (module, version) not in self.modules:
                raise OriginNotFound(f"{module}@{version}: not found")
            if kind == "mod":
                return self.modules[(module, version)][0]
            return json.dumps({"Version": version, "Time": "2024-01-02T03:04:05Z"}).encode()

        return ensureDeferred(get())


def origin_over(fetcher: Any, storage: MemoryStorage, **kwargs: Any) -> Origin:
    from twisted.internet import reactor

    return Origin(fetcher, Stash(fetcher, storage), ListCache(fetcher, reactor), **kwargs)


def sums(tmp_path, module: str, version: str) -> tuple[str, str]:
    """go.sum's two hashes of the fake origin's version."""
    path = tmp_path / "z.zip"
    path.write_bytes(module_zip(module, version))
    return check_zip(str(path), module, version), go_mod_hash(f"module {module}\n".encode())


@pytest_twisted.ensureDeferred
async def test_whole_and_go_mod_only_versions_are_stored_and_checked(tmp_path):
    fetcher, storage = SmallFetcher(), MemoryStorage()
    for m, v in ((A, "v1.0.0"), (B, "v0.9.0"), (B, "v1.0.0")):
        fetcher.add(m, v, module_zip(m, v))
    zip_a, mod_a = sums(tmp_path, A, "v1.0.0")
    wanted = [Wanted(A, "v1.0.0", True, zip_a, mod_a), Wanted(B, "v0.9.0", False, "", go_mod_hash(b"module " + B.encode() + b"\n")),
              Wanted(B, "v1.0.0", True, "h1:notwhatgosumsays=", ""), Wanted("example.com/gone", "v1.0.0", True)]
    seen = []
    report = await prefetch(origin_over(fetcher, storage), wanted, jobs=2,
                            progress=lambda done, total, o: seen.append((done, total)))
    results = {str(o.wanted): o.result for o in report.outcomes}
    assert results == {f"{A}@v1.0.0": Result.STORED, f"{B}@v0.9.0": Result.MOD_ONLY, f"{B}@v1.0.0": Result.FAILED,
                       "example.com/gone@v1.0.0": Result.FAILED}
    assert sorted(seen) == [(n, 4) for n in range(1, 5)]
    assert await storage.exists(A, "v1.0.0") and not await storage.exists(B, "v0.9.0")
    assert await storage.go_mod(B, "v0.9.0") == f"module {B}\n".encode()
    assert json.loads(await storage.info(B, "v0.9.0"))["Version"] == "v0.9.0"
    assert fetcher.count("download", B, "v0.9.0") == 0  # its go.mod alone was fetched
    failures = {f["module"] + "@" + f["version"]: f["error"] for f in report.as_json()["failures"]}
    assert "go.sum says h1:notwhatgosumsays=" in failures[f"{B}@v1.0.0"]
    assert "unknown revision" in failures["example.com/gone@v1.0.0"]
    assert report.failed == 2 and "2 failed" in report.summary()

    again = await prefetch(origin_over(fetcher, storage), wanted[:2])
    assert [o.result for o in again.outcomes] == [Result.PRESENT, Result.PRESENT]
    assert fetcher.count("download", A, "v1.0.0") == 1


@pytest_twisted.ensureDeferred
async def test_the_go_command_hands_out_whole_versions_only(tmp_path):
    fetcher, storage = FakeFetcher(), MemoryStorage()  # no small(): like the go command
    fetcher.add(B, "v0.9.0", module_zip(B, "v0.9.0"))
    report = await prefetch(origin_over(fetcher, storage), [Wanted(B, "v0.9.0", False)])
    assert [o.result for o in report.outcomes] == [Result.STORED]
    assert await storage.exists(B, "v0.9.0")


@pytest_twisted.ensureDeferred
async def test_no_more_than_jobs_versions_are_fetched_at_once():
    from twisted.internet import reactor

    fetcher, storage = FakeFetcher(gate=Deferred()), MemoryStorage()
    wanted = [Wanted(f"example.com/m{i}", "v1.0.0", True) for i in range(10)]
    for w in wanted:
        fetcher.add(w.module, w.version, module_zip(w.module, w.version))
    running = Deferred.fromCoroutine(prefetch(origin_over(fetcher, storage), wanted, jobs=3))
    for _ in range(5):  # let every slot fill, and more if the bound did not hold
        await deferLater(reactor, 0, lambda: None)
    assert len(fetcher.calls) == 3
    fetcher.gate.callback(None)
    report = await running
    assert [o.result for o in report.outcomes] == [Result.STORED] * 10


@pytest_twisted.ensureDeferred
async def test_filtered_modules_and_modes_that_never_fill_are_skipped():
    fetcher, storage = FakeFetcher(), MemoryStorage()
    for m in (A, B, "example.com/c"):
        fetcher.add(m, "v1.0.0", module_zip(m, "v1.0.0"))
    policy = parse_download_file('download "example.com/c" { mode = "none" }')
    origin = origin_over(fetcher, storage, filter=parse_filter(f"- {B}\n"), policy=policy)
    report = await prefetch(origin, [Wanted(m, "v1.0.0", True) for m in (A, B, "example.com/c")])
    assert {str(o.wanted): (o.result, o.detail) for o in report.outcomes} == {
        f"{A}@v1.0.0": (Result.STORED, ""),
        f"{B}@v1.0.0": (Result.SKIPPED, "the filter file does not let it be cached"),
        "example.com/c@v1.0.0": (Result.SKIPPED, "download mode none never fills the cache"),
    }
    assert report.failed == 0
