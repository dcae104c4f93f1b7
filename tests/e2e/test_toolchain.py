"""
GOTOOLCHAIN through the proxy: the real go command switches to a toolchain
(``golang.org/toolchain@v0.0.1-go1.99.0.<os>-<arch>``, built by the test) that
it downloads through GOPROXY and checks against a checksum database, as it
does for every toolchain: cold from an upstream (streamed through, then
stored), warm from the store, and passed through uncached.
"""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.daemon import start_daemon
from tests.e2e.conftest import stop_cleanly
from tests.gotool import go_binary, go_env, run
from tests.toolchain import TOOLCHAIN, ChecksumDB, StaticServer, directory, fake_toolchain

pytestmark = pytest.mark.e2e

GO = "go1.99.0"


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    work = tmp_path_factory.mktemp("goenv")
    env = go_env(work, work / "modcache", "off")
    return run(["go", "env", "GOOS", "GOARCH"], work, env).stdout.split()


@pytest.fixture(scope="module")
def world(tmp_path_factory, platform):
    """An upstream proxy holding the toolchain, and the checksum database that records it."""
    root = tmp_path_factory.mktemp("toolchain-upstream")
    toolchain = fake_toolchain(root, GO, *platform)
    toolchain.publish(root / "proxy")
    holder: list[ChecksumDB] = []
    sumdb = StaticServer(lambda path: holder[0].answer(path)).start()
    db = ChecksumDB(sumdb.url.removeprefix("http://"))  # named as the proxy names it: host and port
    db.add(f"{TOOLCHAIN}@{toolchain.version}", toolchain.records())
    holder.append(db)
    upstream = StaticServer(directory(root / "proxy")).start()
    yield toolchain, db, sumdb, upstream
    upstream.stop()
    sumdb.stop()


def proxy_env(world, extra: dict[str, str] | None = None) -> dict[str, str]:
    _, db, sumdb, upstream = world
    return {"ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY={upstream.url}", "GO_BINARY_PATH": "/nonexistent/go",
            "ATHENS_SUM_DBS": sumdb.url, "ATHENS_SUM_DB_KEYS": db.vkey, **(extra or {})}


@pytest.fixture(scope="module")
def caching(world, tmp_path_factory):
    work = tmp_path_factory.mktemp("toolchain-proxy")
    d = start_daemon(work, "--storage", "disk", "--storage-root", str(work / "storage"), "--log-level", "debug",
                     env=proxy_env(world))
    yield d
    stop_cleanly(d)


@pytest.fixture(scope="module")
def passing(world, tmp_path_factory):
    work = tmp_path_factory.mktemp("toolchain-passthrough")
    _, _, _, upstream = world
    (work / "download.hcl").write_text(f'download "{TOOLCHAIN}" {{\n  mode = "passthrough"\n'
                                       f'  downloadURL = "{upstream.url}"\n}}\n')
    d = start_daemon(work, "--storage", "disk", "--storage-root", str(work / "storage"), "--log-level", "debug",
                     env=proxy_env(world, {"ATHENS_DOWNLOAD_MODE": f"file:{work / 'download.hcl'}"}))
    yield d
    stop_cleanly(d)


def client_sumdb(world) -> dict[str, str]:
    """
    Toolchains are checked against a checksum database even with GOSUMDB=off: the test's, named
    without a URL, so that the go command asks the proxy whether it carries it (it does).
    """
    _, db, _, _ = world
    return {"GOSUMDB": db.vkey, "GONOSUMDB": ""}


def switch(tmp_path, proxy, world, how: str = "env") -> str:
    """``go version`` in a fresh module cache, switching to GO (by GOTOOLCHAIN, or by go.mod's toolchain line)."""
    work = tmp_path / "work"
    work.mkdir(parents=True)
    env = go_env(work, tmp_path / "modcache", proxy.url)
    env.update(client_sumdb(world), GOFLAGS="")
    if how == "env":
        env["GOTOOLCHAIN"] = GO
    else:
        env["GOTOOLCHAIN"] = "auto"
        (work / "go.mod").write_text(f"module example.com/newer\n\ngo 1.21\n\ntoolchain {GO}\n")
    result = run(["go", "version"], work, env)
    return result.stdout.strip() + result.stderr


def stored_zip(proxy, version: str):
    return proxy.log.parent / "storage" / TOOLCHAIN / version / "source.zip"


def test_a_cold_toolchain_streams_from_the_upstream_and_is_stored(tmp_path, caching, world):
    toolchain, _, sumdb, upstream = world
    out = switch(tmp_path, caching, world)
    assert out.startswith(toolchain.banner), out
    assert f"go: downloading {GO}" in out
    stored = stored_zip(caching, toolchain.version)
    deadline = time.monotonic() + 30  # stored once the stream has been checked, right after the client has it
    while not stored.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored.read_bytes() == toolchain.zip
    assert upstream.count(f"/{toolchain.version}.zip") == 1
    # The client's checksum lookups went through the proxy (which carries this database), and the proxy
    # checked the toolchain against it before storing it.
    assert sumdb.count(f"/lookup/{TOOLCHAIN}@{toolchain.version}") >= 2
    assert f'"GET /sumdb/{sumdb.url.removeprefix("http://")}/lookup/{TOOLCHAIN}@{toolchain.version}" 200' in \
        caching.logs()


def test_a_warm_toolchain_comes_from_the_store(tmp_path, caching, world):
    toolchain, _, _, upstream = world
    switch(tmp_path / "first", caching, world)  # cold, or already warm: either way stored after
    deadline = time.monotonic() + 30
    while not stored_zip(caching, toolchain.version).is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    asked = upstream.count(f"/{toolchain.version}.zip")
    for n in range(2):  # the full path, then the hit path
        out = switch(tmp_path / f"warm{n}", caching, world, how="go.mod")
        assert out.startswith(toolchain.banner), out
    assert upstream.count(f"/{toolchain.version}.zip") == asked


def test_the_toolchain_list_comes_through(tmp_path, caching, world):
    toolchain, _, _, _ = world
    work = tmp_path / "work"
    work.mkdir()
    env = {**go_env(work, tmp_path / "modcache", caching.url), **client_sumdb(world)}
    assert run(["go", "list", "-m", "-versions", TOOLCHAIN], work, env).stdout.split() == [TOOLCHAIN, toolchain.version]


def test_a_toolchain_passes_through_uncached(tmp_path, passing, world):
    toolchain, _, _, upstream = world
    before = upstream.count(f"/{toolchain.version}.zip")
    out = switch(tmp_path, passing, world)
    assert out.startswith(toolchain.banner), out
    assert upstream.count(f"/{toolchain.version}.zip") == before + 1
    assert not (passing.log.parent / "storage" / TOOLCHAIN).exists()
    with urllib.request.urlopen(f"{passing.url}/{TOOLCHAIN}/@v/{toolchain.version}.mod") as r:
        assert r.read() == b"module golang.org/toolchain\n"


# --- the proxy's own go command, for modules that need a newer Go (gomods/athens#2000) ---------------

NEWER = ("github.com/tc/newer", "github.com/tc/newer2")


@pytest.fixture(scope="module")
def switching(tmp_path_factory, platform):
    """
    Git origins of two modules that need go 1.99.0; golang.org/toolchain found (go-get over HTTP_PROXY,
    GOINSECURE) at a test server, whose go1.99.0 answers `go mod download` from prepared files.
    """
    from tests.gotool import make_origins
    from tests.test_stash_and_lists import module_zip

    root = tmp_path_factory.mktemp("switching")
    origins = make_origins(root)
    prepared = root / "prepared"
    for module in NEWER:
        mod = f"module {module}\n\ngo 1.99.0\n"
        origins.commit(origins.repo(module), {"go.mod": mod, "x.go": "package x\n"}, "v1.0.0")
        at = prepared / module / "@v"
        at.mkdir(parents=True)
        (at / "v1.0.0.mod").write_text(mod)
        (at / "v1.0.0.info").write_text('{"Version": "v1.0.0", "Time": "2024-01-02T03:04:05Z"}')
        (at / "v1.0.0.zip").write_bytes(module_zip(module, "v1.0.0", {"go.mod": mod.encode(), "x.go": b"package x\n"}))
    from tests.toolchain import MOD_DOWNLOAD_SCRIPT

    toolchain = fake_toolchain(root / "toolchain", GO, *platform, bulk=1 << 20, script=MOD_DOWNLOAD_SCRIPT)
    toolchain.publish(root / "mod")
    holder: list[ChecksumDB] = []
    sumdb = StaticServer(lambda path: holder[0].answer(path)).start()
    db = ChecksumDB(sumdb.url.removeprefix("http://"))
    db.add(f"{TOOLCHAIN}@{toolchain.version}", toolchain.records())
    holder.append(db)
    files = directory(root)
    meta: list[bytes] = []

    def answer(path: str) -> bytes | None:
        if path.startswith("http://golang.org/toolchain"):  # go-get discovery, through HTTP_PROXY
            return meta[0]
        return files(path)

    server = StaticServer(answer).start()
    meta.append(f'<meta name="go-import" content="golang.org/toolchain mod {server.url}/mod">'.encode())
    yield origins, prepared, toolchain, db, sumdb, server
    server.stop()
    sumdb.stop()


def test_the_proxys_go_command_downloads_a_newer_toolchain_once(tmp_path, switching):
    origins, prepared, toolchain, db, sumdb, server = switching
    goget = tmp_path / "goget"
    goget.mkdir()
    env = {
        "GO_BINARY_PATH": go_binary(),
        "ATHENS_GO_BINARY_ENV_VARS": ";".join([
            "GOPROXY=direct", "GOTOOLCHAIN=auto", "GOINSECURE=golang.org/toolchain", f"GOSUMDB={db.vkey} {sumdb.url}",
            "GONOSUMDB=github.com/tc", "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1",
            f"GIT_CONFIG_GLOBAL={origins.gitconfig}", f"FAKE_GO_MODULES={prepared}"]),
        "ATHENS_GOGET_DIR": str(goget), "HTTP_PROXY": server.url,
    }
    d = start_daemon(tmp_path / "proxy", "--storage", "disk", "--storage-root", str(tmp_path / "storage"),
                     "--log-level", "debug", env=env)
    try:
        for module in NEWER:
            with urllib.request.urlopen(f"{d.url}/{module}/@v/v1.0.0.zip", timeout=120) as r:
                assert r.read() == (prepared / module / "@v" / "v1.0.0.zip").read_bytes()
        assert server.count(f"/{toolchain.version}.zip") == 1, d.logs()  # the second fetch found it kept
        assert (goget / "athens-toolchains" / "bin" / GO).is_symlink()
        assert f"kept the Go toolchain {GO}" in d.logs()
    finally:
        stop_cleanly(d)
