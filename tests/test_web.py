"""The protocol and operations routes, driven in memory through treq's StubTreq."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from treq.testing import StubTreq

from athens.storage.disk import DiskStorage
from athens.storage.interface import StorageUnavailable
from athens.storage.memory import MemoryStorage
from athens.storage.testing import FaultyStorage
from athens.web.app import make_resource
from tests.streams import once

MOD = "github.com/Azure/go-lib"
ESC = "github.com/!azure/go-lib"
ZIP = b"PK\x03\x04" + bytes(range(256)) * 4000


def info(v: str) -> bytes:
    return json.dumps({"Version": v, "Time": "2024-01-02T03:04:05Z"}).encode()


async def seed(storage, module: str = MOD, versions=("v1.0.0", "v1.1.0", "v1.10.0", "v1.2.0-rc.1", "v0.0.0-20240102030405-abcdefabcdef")):
    for v in versions:
        await storage.save(module, v, info(v), f"module {module}\n".encode(), once(ZIP + v.encode()))


@pytest.fixture
def storage():
    return MemoryStorage()


@pytest.fixture
def client(storage):
    return StubTreq(make_resource(storage))


async def get(client, path: str, method: str = "GET"):
    response = await client.request(method, "http://proxy" + path)
    return response, await response.content()


@pytest_twisted.ensureDeferred
async def test_list_is_sorted_and_has_no_pseudo_versions(storage, client):
    await seed(storage)
    response, content = await get(client, f"/{ESC}/@v/list")
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    assert content == b"v1.0.0\nv1.1.0\nv1.2.0-rc.1\nv1.10.0\n"


@pytest_twisted.ensureDeferred
async def test_info_mod_zip(storage, client):
    await seed(storage)
    response, content = await get(client, f"/{ESC}/@v/v1.1.0.info")
    assert (response.code, content) == (200, info("v1.1.0"))
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    response, content = await get(client, f"/{ESC}/@v/v1.1.0.mod")
    assert (response.code, content) == (200, f"module {MOD}\n".encode())
    response, content = await get(client, f"/{ESC}/@v/v1.1.0.zip")
    assert (response.code, content) == (200, ZIP + b"v1.1.0")
    assert response.headers.getRawHeaders("content-type") == ["application/zip"]


@pytest_twisted.ensureDeferred
async def test_latest_prefers_releases_then_prereleases_then_pseudo(storage, client):
    await seed(storage)
    response, content = await get(client, f"/{ESC}/@latest")
    assert (response.code, json.loads(content)["Version"]) == (200, "v1.10.0")
    await seed(storage, "example.com/pre", ("v0.1.0-alpha", "v0.0.0-20240102030405-abcdefabcdef"))
    _, content = await get(client, "/example.com/pre/@latest")
    assert json.loads(content)["Version"] == "v0.1.0-alpha"
    await seed(storage, "example.com/pseudo", ("v0.0.0-20240102030405-abcdefabcdef", "v0.0.0-20250102030405-0123456789ab"))
    _, content = await get(client, "/example.com/pseudo/@latest")
    assert json.loads(content)["Version"] == "v0.0.0-20250102030405-0123456789ab"


@pytest_twisted.ensureDeferred
async def test_percent_encoded_bang_is_decoded(storage, client):
    await seed(storage)
    response, _ = await get(client, "/github.com/%21azure/go-lib/@v/v1.0.0.info")
    assert response.code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/example.com/x/@v/v1.9.9.info",
        "/example.com/x/@v/v1.9.9.mod",
        "/example.com/x/@v/v1.9.9.zip",
        "/example.com/x/@v/list",
        "/example.com/x/@latest",
        "/example.com/x/@v/master.info",
        "/github.com/azure/go-lib/@v/v1.0.0.info",  # case matters
        "/example.com/x/@v/v1.0.0.tar",
        "/favicon.ico",
    ],
)
@pytest_twisted.ensureDeferred
async def test_missing_is_404_text(storage, client, path):
    await seed(storage)
    response, content = await get(client, path)
    assert response.code == 404
    assert response.headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    assert content.startswith(b"not found") and content.count(b"\n") == 1


@pytest.mark.parametrize(
    "path, reason",
    [
        ("/example.com/../../etc/@v/list", b"invalid path element"),
        ("/example.com/%2e%2e/%2e%2e/etc/@v/list", b"invalid path element"),
        ("/example.com/x/@v/..%2f..%2f..%2fpasswd.mod", b"invalid version"),
        ("/example.com/x/@v/v1.0.0%2f..%2f..%2fx.zip", b"invalid version"),
        ("/%2fetc%2fpasswd/@v/list", b"malformed module path"),
        ("/example.com/x%00y/@v/list", b"invalid char"),
        ("/example.com/x/@v/v1.0.0%00.info", b"invalid version"),
        ("/example.com/" + "a" * 300 + "/@v/list", b"longer than"),
        ("/example.com/" + "/".join(["abcdefgh"] * 200) + "/@v/list", b"longer than"),
        ("/github.com/Azure/x/@v/list", b"upper-case"),
        ("/github.com/!Azure/x/@v/list", b"lower-case letter"),
        ("/github.com/azure!/@v/list", b"trailing"),
        ("/nodot/x/@v/list", b"missing dot"),
        ("/example.com/x/@v/v1.2.mod", b"not a canonical version"),
        ("/example.com/x/@v/v2.0.0.zip", b"should be v0 or v1"),
        ("/example.com/x/v2/@v/v1.0.0.mod", b"should be v2"),
        ("/example.com/x/@v/latest.zip", b"not a semantic version"),
        ("/example.com/x/@v/v1.0.0+meta.mod", b"not a canonical version"),
        ("/example.com/con/@v/list", b"disallowed as path element"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_input_is_400_with_one_line_reason(storage, client, path, reason):
    response, content = await get(client, path)
    assert response.code == 400, content
    assert response.headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    assert reason in content
    assert content.count(b"\n") == 1


@pytest_twisted.ensureDeferred
async def test_traversal_never_reaches_outside_the_disk_root(tmp_path):
    root = tmp_path / "root"
    storage = DiskStorage(root)
    client = StubTreq(make_resource(storage))
    # Something an escaping path would find if it were ever used.
    outside = tmp_path / "secret" / "v1.0.0"
    outside.mkdir(parents=True)
    for name in ("go.mod", "source.zip", "v1.0.0.info"):
        (outside / name).write_bytes(b"TOP-SECRET-CONTENT")
    for path in ("/example.com/../../secret/@v/v1.0.0.info", "/example.com/%2e%2e/%2e%2e/secret/@v/list"):
        response, content = await get(client, path)
        assert response.code == 400
        assert b"TOP-SECRET" not in content
    assert sorted(p.name for p in root.iterdir()) == [".athens-tmp"]


@pytest_twisted.ensureDeferred
async def test_other_methods_are_405(client):
    response = await client.post("http://proxy/example.com/x/@v/list", data=b"x")
    assert response.code == 405
    assert b"GET and HEAD" in await response.content()


@pytest_twisted.ensureDeferred
async def test_health_ready_version(storage, client):
    response, content = await get(client, "/healthz")
    assert (response.code, content) == (200, b"OK\n")
    response, content = await get(client, "/readyz")
    assert (response.code, content) == (200, b"OK\n")
    response, content = await get(client, "/version")
    assert response.code == 200
    assert json.loads(content)["storage"] == "memory"
    assert "version" in json.loads(content)


@pytest_twisted.ensureDeferred
async def test_readyz_is_503_when_storage_fails(storage):
    storage = FaultyStorage(storage, {"ping": StorageUnavailable("connection refused")})
    response, content = await get(StubTreq(make_resource(storage)), "/readyz")
    assert response.code == 503
    assert b"connection refused" in content


@pytest_twisted.ensureDeferred
async def test_storage_down_is_503(storage):
    storage = FaultyStorage(storage, {"info": StorageUnavailable("store is down")})
    response, content = await get(StubTreq(make_resource(storage)), "/example.com/x/@v/v1.0.0.info")
    assert response.code == 503
    assert b"store is down" in content


@pytest_twisted.ensureDeferred
async def test_unexpected_error_is_500_without_traceback(storage):
    storage = FaultyStorage(storage, {"go_mod": RuntimeError("secret internals")})
    response, content = await get(StubTreq(make_resource(storage)), "/example.com/x/@v/v1.0.0.mod")
    assert response.code == 500
    assert b"secret" not in content and b"Traceback" not in content


@pytest_twisted.ensureDeferred
async def test_catalog_pages_like_athens(storage, client):
    await seed(storage, "example.com/a", ("v1.0.0", "v1.1.0"))
    await seed(storage, "example.com/b", ("v0.1.0",))
    response, content = await get(client, "/catalog?pagesize=2")
    page = json.loads(content)
    assert response.code == 200
    assert page["modules"] == [{"module": "example.com/a", "version": "v1.0.0"},
                               {"module": "example.com/a", "version": "v1.1.0"}]
    response, content = await get(client, "/catalog?pagesize=2&token=" + page["next"])
    assert json.loads(content) == {"modules": [{"module": "example.com/b", "version": "v0.1.0"}], "next": ""}
    for bad in ("0", "1001", "x"):
        assert (await get(client, f"/catalog?pagesize={bad}"))[0].code == 400


@pytest_twisted.ensureDeferred
async def test_robots_and_home_page(storage, client):
    response, content = await get(client, "/robots.txt")
    assert (response.code, content) == (200, b"User-agent: *\nDisallow: /\n")
    await seed(storage, "example.com/a", ("v1.0.0",))
    response, content = await get(client, "/")
    assert response.code == 200
    assert b"export GOPROXY=http://proxy,direct" in content  # the rest: tests/test_status_page.py
