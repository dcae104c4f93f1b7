"""
Athens' ``/index``: one JSON line a stored version with its save time,
oldest first, ``since`` inclusive, ``limit`` 2000 by default; the same
answers and errors as Athens' handler, from any store.
"""

from __future__ import annotations

import json
import os
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from athens.config import ConfigError, load
from athens.storage.disk import DiskStorage
from athens.storage.interface import StorageUnavailable
from athens.storage.testing import FaultyStorage
from athens.web.app import make_site
from tests import rawhttp
from tests.inprocess import serve
from tests.streams import once
from tests.test_stash_and_lists import module_zip

#: (module, version, save time): saved in this order, at these times.
SAVES = [
    ("example.com/b", "v1.0.0", 1704164645.0),  # 2024-01-02T03:04:05Z
    ("example.com/a", "v1.0.0", 1704164645.25),
    ("example.com/a", "v1.1.0", 1704164645.25),  # the same moment: path and version order
    ("example.com/A", "v0.1.0", 1704250000.123456),
]


@attrs.define
class Recording:
    """A store that notes the arguments of every index() call."""

    inner: Any
    calls: list[tuple[float, int]] = attrs.field(factory=list)

    def index(self, since: float, limit: int):  # type: ignore[no-untyped-def]
        self.calls.append((since, limit))
        return self.inner.index(since, limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest_twisted.async_yield_fixture
async def proxy(tmp_path):
    started = []

    async def make(storage=None, **options):
        if storage is None:
            storage = DiskStorage(str(tmp_path / "store"))
            for module, version, saved in SAVES:
                info = json.dumps({"Version": version, "Time": "2024-01-01T00:00:00Z"}).encode()
                await storage.save(module, version, info, f"module {module}\n".encode(),
                                   once(module_zip(module, version)))
                os.utime(tmp_path / "store" / module / version / "source.zip", (saved, saved))
        served = serve(make_site(storage, **options))
        started.append(served)
        return served.port.getHost().port

    yield make
    for served in started:
        await served.close()


async def index(port: int, query: str = "") -> rawhttp.RawResponse:
    return await deferToThread(rawhttp.get, port, "/index" + query)


@pytest_twisted.ensureDeferred
async def test_every_version_one_json_line_oldest_first(proxy):
    port = await proxy()
    answer = await index(port)
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    assert answer.body == (
        b'{"Path":"example.com/b","Version":"v1.0.0","Timestamp":"2024-01-02T03:04:05Z"}\n'
        b'{"Path":"example.com/a","Version":"v1.0.0","Timestamp":"2024-01-02T03:04:05.25Z"}\n'
        b'{"Path":"example.com/a","Version":"v1.1.0","Timestamp":"2024-01-02T03:04:05.25Z"}\n'
        b'{"Path":"example.com/A","Version":"v0.1.0","Timestamp":"2024-01-03T02:46:40.123456Z"}\n'
    )


@pytest_twisted.ensureDeferred
async def test_since_is_inclusive_and_limit_cuts(proxy):
    port = await proxy()

    async def versions(query: str) -> list[tuple[str, str]]:
        answer = await index(port, query)
        assert answer.status == 200, answer.body
        return [(line["Path"], line["Version"]) for line in map(json.loads, answer.body.splitlines())]

    everything = [(m, v) for m, v, _ in SAVES]
    assert await versions("?since=2024-01-02T03:04:05.25Z") == everything[1:]
    assert await versions("?since=2024-01-02T04:04:05.25%2B01:00") == everything[1:]  # an offset (+ escaped)
    # Go sends nanoseconds: cut to the microsecond, never rounded up (a line too many, never one too few).
    assert await versions("?since=2024-01-02T03:04:05.250000999Z") == everything[1:]
    assert await versions("?since=2024-01-02T03:04:05.250001Z") == everything[3:]
    assert await versions("?since=2030-01-01T00:00:00Z") == []
    assert await versions("?limit=2") == everything[:2]
    assert await versions("?limit=1&since=2024-01-03T00:00:00Z") == everything[3:]
    # A mirror pages with the last timestamp it saw as the next since: it meets that line again, and misses none
    # (as in Athens, a page must hold more lines than versions saved at one moment).
    seen: list[tuple[str, str]] = []
    since = ""
    for _ in range(10):
        answer = await index(port, f"?limit=3&since={since}")
        lines = [json.loads(line) for line in answer.body.splitlines()]
        new = [(line["Path"], line["Version"]) for line in lines if (line["Path"], line["Version"]) not in seen]
        if not new:
            break
        seen += new
        since = lines[-1]["Timestamp"]
    assert seen == everything


@pytest.mark.parametrize("query, why", [
    ("?limit=0", "limit"), ("?limit=-1", "limit"), ("?limit=abc", "limit"), ("?limit=1.5", "limit"),
    ("?since=2024-01-02", "since"), ("?since=2024-01-02T03:04:05", "since"),
    ("?since=Tue,%2002%20Jan%202024%2003:04:05%20GMT", "since"), ("?since=2024-01-02%2003:04:05Z", "since"),
    ("?since=2024-01-02T03:04:05%2001:00", "since"),  # a + left unescaped in the URL is a space: Athens says 400 too
])
@pytest_twisted.ensureDeferred
async def test_bad_arguments_are_400_as_in_athens(proxy, query, why):
    port = await proxy()
    answer = await index(port, query)
    assert answer.status == 400 and why in answer.body.decode()
    assert answer.headers["cache-control"] == "no-store"


@pytest_twisted.ensureDeferred
async def test_the_default_limit_is_athens_2000_and_a_huge_one_is_cut(proxy, tmp_path):
    storage = Recording(DiskStorage(str(tmp_path / "empty")))
    port = await proxy(storage)
    for query in ("", "?limit=7", "?limit=99999999", "?since=2024-01-02T03:04:05Z"):
        assert (await index(port, query)).status == 200
    assert storage.calls == [(0.0, 2000), (0.0, 7), (0.0, 100_000), (1704164645.0, 2000)]


@pytest_twisted.ensureDeferred
async def test_index_type_none_answers_nothing_as_athens_does(proxy):
    port = await proxy(index_enabled=False)
    answer = await index(port)
    assert (answer.status, answer.body) == (200, b"")


@pytest_twisted.ensureDeferred
async def test_a_store_that_is_down_is_503(proxy, tmp_path):
    port = await proxy(FaultyStorage(DiskStorage(str(tmp_path / "down")), {"index": StorageUnavailable("redis: down")}))
    answer = await index(port)
    assert answer.status == 503 and b"redis: down" in answer.body


@pytest.mark.parametrize("value, expected", [("none", "none"), ("", "none"), ("memory", "memory"),
                                             ("postgres", "postgres"), ("mysql", "mysql"), (None, "storage")])
def test_index_type_takes_athens_values(tmp_path, value, expected):
    path = tmp_path / "athens.toml"
    path.write_text("" if value is None else f'IndexType = "{value}"\n')
    assert load(str(path), environ={}).index_type == expected
    assert load(None, environ={"ATHENS_INDEX_TYPE": "none"}, overrides={}).index_type == "none"


def test_an_unknown_index_type_stops_start_up(tmp_path):
    path = tmp_path / "athens.toml"
    path.write_text('IndexType = "mongo"\n')
    with pytest.raises(ConfigError, match="IndexType"):
        load(str(path), environ={})
