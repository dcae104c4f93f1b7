"""
Hostile requests against a proxy filling from an upstream that decodes and
normalises paths (as nginx does): every one is a 4xx, none reaches the
upstream as anything but the module and version asked for, and nothing lands
outside the store.
"""

from __future__ import annotations

import json
import os
import posixpath
from urllib.parse import unquote

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import Site

from athens import config as athens_config
from athens.module import InvalidInput, check_path, decode_version, escape, is_canonical_version, request_path
from athens.service import build_origin
from athens.storage.disk import DiskStorage
from athens.web.app import make_site
from athens.web.protocol import parse
from tests import rawhttp
from tests.inprocess import serve
from tests.test_stash_and_lists import module_zip

ERRORS, UUID = "github.com/pkg/errors", "github.com/google/uuid"


def _tree() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for module, version in ((ERRORS, "v0.9.1"), (UUID, "v1.6.0")):
        info = json.dumps({"Version": version, "Time": "2024-01-02T03:04:05Z"}).encode()
        files[f"/{module}/@v/list"] = f"{version}\n".encode()
        files[f"/{module}/@v/{version}.info"] = info
        files[f"/{module}/@v/{version}.mod"] = f"module {module}\n".encode()
        files[f"/{module}/@v/{version}.zip"] = module_zip(module, version)
        files[f"/{module}/@v/master.info"] = info
        files[f"/{module}/@latest"] = info
    return files


class NormalisingUpstream(Resource):
    """A GOPROXY tree served as nginx would: the path is percent-decoded and normalised first."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.files = _tree()
        self.seen: list[str] = []

    def render_GET(self, request):  # noqa: N802 - Twisted's name
        raw = request.path.decode("latin-1")
        self.seen.append(raw)
        found = self.files.get(posixpath.normpath(unquote(raw)))
        if found is None:
            request.setResponseCode(404)
            return b"not found"
        return found


@pytest_twisted.async_yield_fixture
async def hostile(tmp_path):
    from twisted.internet import reactor

    upstream = NormalisingUpstream()
    port = reactor.listenTCP(0, Site(upstream), interface="127.0.0.1")
    config = athens_config.load(path=os.devnull, environ={
        "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY=http://127.0.0.1:{port.getHost().port}",
        "ATHENS_VERIFY_CHECKSUMS": "false",
        "ATHENS_GOGET_DIR": str(tmp_path / "work"),
    })
    (tmp_path / "work").mkdir()
    storage = DiskStorage(str(tmp_path / "store"))
    origin = build_origin(config, storage, reactor)
    served = serve(make_site(storage, None, origin))
    yield served, upstream, tmp_path
    await served.close()
    await origin.http_pool.closeCachedConnections()
    await port.stopListening()


#: Item 1 of the hardening issue and its relatives: versions and modules that try to name another module.
TRAVERSALS = [
    f"/{ERRORS}/@v/%252e%252e%252f%252e%252e%252f%252e%252e%252fgoogle%252fuuid%252f@v%252fv1.6.0.info",
    f"/{ERRORS}/@v/%2e%2e%2f%2e%2e%2f%2e%2e%2fgoogle%2fuuid%2f@v%2fv1.6.0.info",
    f"/{ERRORS}/@v/..%2f..%2f..%2fgoogle%2fuuid%2f@v%2fv1.6.0.info",
    f"/{ERRORS}/@v/..%5c..%5cgoogle%5cuuid%5c@v%5cv1.6.0.info",
    f"/{ERRORS}/@v/%252e%252e.info",
    f"/{ERRORS}/@v/v1.6.0%3f.info",
    f"/{ERRORS}/@v/v1.6.0%23x.info",
    f"/{ERRORS}/@v/%2e%2e.info",
    f"/{ERRORS}/@v/.info",
    f"/{ERRORS}/@v/-v1.info",
    f"/{ERRORS}/@v/v1.0.0%00.info",
    f"/{ERRORS}/@v/v1%20.info",
    f"/{ERRORS}/@v/%252e%252e%252f%252e%252e%252fgoogle%252fuuid%252f@v%252fv1.6.0.zip",
    f"/{ERRORS}/%2e%2e/%2e%2e/google/uuid/@v/v1.6.0.info",
    f"/{ERRORS}/../../google/uuid/@v/v1.6.0.info",
    "/github.com/pkg/errors%252f..%252f..%252fgoogle%252fuuid/@v/v1.6.0.info",
    "/github.com/pkg/errors%2f..%2f..%2fgoogle%2fuuid/@v/list",
    "/%2e%2e/%2e%2e/etc/passwd/@v/list",
    "/github.com/pkg/errors/@v/v0.9.1.info%00",
]


@pytest_twisted.ensureDeferred
async def test_traversals_are_refused_before_any_origin_is_asked(hostile):
    served, upstream, tmp_path = hostile
    port = served.port.getHost().port
    for path in TRAVERSALS:
        answer = await deferToThread(rawhttp.get, port, path)
        assert 400 <= answer.status < 500, (path, answer)
        assert answer.headers["content-type"].startswith("text/plain"), path
        assert b"google/uuid" not in answer.body or answer.status != 200
    assert upstream.seen == []
    assert not list((tmp_path / "store").rglob("*.zip")), "nothing was stored"


@pytest_twisted.ensureDeferred
async def test_a_legitimate_query_and_version_reach_the_upstream_as_asked(hostile):
    served, upstream, _ = hostile
    port = served.port.getHost().port
    answer = await deferToThread(rawhttp.get, port, f"/{ERRORS}/@v/master.info")
    assert answer.status == 200 and json.loads(answer.body)["Version"] == "v0.9.1"
    answer = await deferToThread(rawhttp.get, port, f"/{ERRORS}/@v/v0.9.1.mod")
    assert (answer.status, answer.body) == (200, f"module {ERRORS}\n".encode())
    assert f"/{ERRORS}/@v/master.info" in upstream.seen
    assert all(p.startswith(f"/{ERRORS}/@v/") for p in upstream.seen), upstream.seen


# -- the one function that builds every upstream and redirect path ------------------------

_MODULES = st.sampled_from(["example.com/m", "github.com/Azure/go-x", "gopkg.in/yaml.v3", "example.com/a/v2",
                            "example.com/~u/x"])
_QUERY_CHARS = st.characters(codec="utf-8")


@settings(max_examples=2000, deadline=None)
@given(module=_MODULES, raw=st.text(_QUERY_CHARS, min_size=1, max_size=40), kind=st.sampled_from(["info", "mod", "zip"]))
def test_request_path_never_names_anything_else(module, raw, kind):
    """Whatever a client sends as a version: refused, or a path that decodes (once or twice) to itself."""
    try:
        version = decode_version(raw)
    except InvalidInput:
        return
    path = request_path(module, kind, version)
    assert all(c.isascii() and (c.isalnum() or c in "/!-._~+%@") for c in path), path
    for decoded in (unquote(path), unquote(unquote(path))):
        assert decoded == f"/{escape(module)}/@v/{escape(version)}.{kind}"
        assert posixpath.normpath(decoded) == decoded
    if kind == "info" or is_canonical_version(module, version):  # .mod and .zip name versions only
        again = parse(unquote(path)[1:])
        assert again is not None and (again.module, again.kind, again.version) == (module, kind, version)


@settings(max_examples=300, deadline=None)
@given(module=_MODULES, kind=st.sampled_from(["list", "latest"]))
def test_request_path_of_lists(module, kind):
    check_path(module)
    path = request_path(module, kind)
    again = parse(unquote(path)[1:])
    assert again is not None and (again.module, again.kind) == (module, kind)


@pytest.mark.parametrize("query", ["master", "v1.2", "abc1234", "release-1.x", "v1.0.0+incompatible", "Feature_2"])
def test_ordinary_queries_are_accepted(query):
    assert decode_version(escape(query)) == query


@pytest.mark.parametrize("query", ["%2e%2e", "a%2fb", "..", "a/b", "a\\b", "-x", ".x", "x.", "a b", "a?b", "a#b", "é"])
def test_queries_that_could_be_paths_are_refused(query):
    with pytest.raises(InvalidInput):
        decode_version(query)


#: Items 3 and 4 of the hardening issue: a Host werkzeug cannot take, a path that is not UTF-8.
MALFORMED = [
    ("/healthz", {"Host": "a..b"}),
    ("/healthz", {"Host": "x" * 64 + ".example.com"}),
    (f"/{ERRORS}/@v/v0.9.1.info", {"Host": "a..b"}),
    ("/%c0%ae/@v/list", {}),
    (f"/{ERRORS}/@v/%ff.info", {}),
    ("/%ff", {}),
]


@pytest.mark.parametrize("path, headers", MALFORMED)
@pytest_twisted.ensureDeferred
async def test_malformed_requests_are_400_with_one_log_line(hostile, path, headers):
    from twisted.logger import globalLogPublisher

    served, upstream, _ = hostile
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        answer = await deferToThread(rawhttp.get, served.port.getHost().port, path, "GET", headers)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert answer.status == 400 and answer.body.startswith(b"bad request: "), answer
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert [e.get("log_namespace") for e in events] == ["athens.access"], events
    assert upstream.seen == []


@pytest.mark.parametrize("kind", [0o120777, 0o020666, 0o010644])  # symlink, character device, FIFO
def test_a_zip_entry_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    """Item 6: the go command's zip rules accept regular files only."""
    import zipfile

    from athens.modzip import InvalidZip, check_zip

    path = tmp_path / "m.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("example.com/m@v1.0.0/m.go", b"package m\n")
        entry = zipfile.ZipInfo("example.com/m@v1.0.0/link.go")
        entry.create_system = 3
        entry.external_attr = kind << 16
        zf.writestr(entry, b"/etc/passwd")
    with pytest.raises(InvalidZip, match="not a regular file"):
        check_zip(str(path), "example.com/m", "v1.0.0")
    regular = tmp_path / "ok.zip"
    with zipfile.ZipFile(regular, "w") as zf:
        entry = zipfile.ZipInfo("example.com/m@v1.0.0/m.go")
        entry.create_system = 3
        entry.external_attr = 0o100644 << 16
        zf.writestr(entry, b"package m\n")
    assert check_zip(str(regular), "example.com/m", "v1.0.0").startswith("h1:")
