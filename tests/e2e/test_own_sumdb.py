"""
The organisation's checksum database with the real go command: GOPROXY and GOSUMDB at the proxy,
no GONOSUMDB, every module verified and proven included by the go command itself.

- ``upstream``: a public proxy with a checksum database of its own (named after its address, as a
  public database is named after its host): the stand-in for proxy.golang.org and sum.golang.org.
- ``corp``: the organisation's proxy: private modules (github.com/athens-corp/...) from git,
  public ones from ``upstream`` and confirmed by its database, all logged in ``sum.corp.test``.
"""

from __future__ import annotations

import base64
import http.server
import os
import re
import sqlite3
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import attrs
import pytest

from athens.sumdb import SignerKey, VerifierKey, open_note
from athens.sumdb._sqlstore import SQLITE
from athens.sumdb._tlog import (
    append_hashes,
    append_indexes,
    check_tree,
    hash_from_tile,
    parse_tree,
    record_hash,
    stored_hash_index,
    tile_for_index,
    tree_proof,
    tree_proof_indexes,
    Tile,
)
from tests.daemon import Daemon, admin_command, free_port, source_env, start_daemon
from tests.e2e.conftest import SIMPLE, UPPER, stop_cleanly
from tests.e2e.test_fill import get
from tests.gotool import Origins, download_json, go_binary, go_env, run

pytestmark = pytest.mark.e2e

NAME = "sum.corp.test"
CORP = "github.com/athens-corp"
LIB = f"{CORP}/lib"
MOVED = f"{CORP}/moved"
NODES = [f"{CORP}/n{i}" for i in range(4)]
LATER = [f"{CORP}/later{i}" for i in range(2)]


def gomod(path: str) -> str:
    return f"module {path}\n\ngo 1.21\n"


@attrs.frozen
class Corp:
    origins: Origins
    #: module@version -> the `go mod download -json` item of a direct download (the reference hashes).
    direct: dict[str, dict]


@pytest.fixture(scope="module")
def corp(e2e, tmp_path_factory) -> Corp:
    """Private repositories beside the shared test origins, and their hashes straight from git."""
    origins = e2e.origins
    for path in (LIB, MOVED, *NODES, *LATER):
        repo = origins.repo(path)
        origins.commit(repo, {"go.mod": gomod(path), "p.go": f'package p\n\nconst Where = "{path}"\n'}, "v1.0.0")
    origins.commit(origins.repos[LIB], {"p.go": 'package p\n\nconst Where = "lib v1.1.0"\n'}, "v1.1.0")
    work = tmp_path_factory.mktemp("corp-direct")
    env = go_env(work, work / "modcache", "direct", origins)
    items = download_json(run(["go", "mod", "download", "-json", f"{LIB}@v1.0.0", f"{LIB}@v1.1.0",
                               f"{MOVED}@v1.0.0", *(f"{p}@v1.0.0" for p in NODES + LATER)], work, env).stdout)
    return Corp(origins, {f"{i['Path']}@{i['Version']}": i for i in items})


def make_key(workdir: Path, name: str) -> tuple[Path, str]:
    """``athens-admin sumdb-key``: the signer key in a file, the verifier key on stdout."""
    workdir.mkdir(parents=True, exist_ok=True)
    key_file = workdir / f"{name.replace(':', '_')}.key"
    result = subprocess.run([*admin_command(), "sumdb-key", name, "--key-file", str(key_file)],
                            capture_output=True, text=True, env=source_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    return key_file, result.stdout.strip()


#: The proxies' go command has a checksum database nobody answers for: it may never be asked, as every module the
#: go command fetches is private (OwnSumDB.Patterns become its GONOSUMDB).
DEAD_SUMDB = f"{SignerKey.generate('sum.dead.test').verifier().text()} http://127.0.0.1:9"


def go_dir_env(origins: Origins) -> str:
    return (f"GOSUMDB={DEAD_SUMDB};GOTOOLCHAIN=local;GIT_TERMINAL_PROMPT=0;GIT_CONFIG_NOSYSTEM=1;"
            f"GIT_CONFIG_GLOBAL={origins.gitconfig}")


@attrs.frozen
class Upstream:
    daemon: Daemon
    name: str
    vkey: str


@pytest.fixture(scope="module")
def upstream(corp, tmp_path_factory):
    """A public proxy and its database: everything it fetches from git is logged as first seen; corp is not its."""
    work = tmp_path_factory.mktemp("upstream")
    port = free_port()
    name = f"127.0.0.1:{port}"
    key_file, vkey = make_key(work, name)
    (work / "download.hcl").write_text(f'download "{CORP}" {{ mode = "none" }}\n')
    env = {
        "ATHENS_PORT": name,
        "GO_BINARY_PATH": go_binary(),
        "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY=direct;{go_dir_env(corp.origins)}",
        "ATHENS_DOWNLOAD_MODE": f"file:{work / 'download.hcl'}",
        "ATHENS_VERIFY_CHECKSUMS": "false",
        "ATHENS_OWN_SUMDB_NAME": name,
        "ATHENS_OWN_SUMDB_KEY_FILE": str(key_file),
        "ATHENS_OWN_SUMDB_PATTERNS": "*",
    }
    d = start_daemon(work, "--storage", "disk", "--storage-root", str(work / "storage"), env=env, listen=False)
    yield Upstream(d, name, vkey)
    stop_cleanly(d)


def corp_env(corp: Corp, upstream: Upstream, key_file: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "GO_BINARY_PATH": go_binary(),
        "ATHENS_GO_BINARY_ENV_VARS": f"GOPROXY={upstream.daemon.url},direct;{go_dir_env(corp.origins)}",
        "ATHENS_SUM_DBS": f"{upstream.daemon.url}/sumdb/{upstream.name}",
        "ATHENS_SUM_DB_KEYS": upstream.vkey,
        "ATHENS_OWN_SUMDB_NAME": NAME,
        "ATHENS_OWN_SUMDB_KEY_FILE": str(key_file),
        "ATHENS_OWN_SUMDB_PATTERNS": CORP,
        **(extra or {}),
    }


@attrs.frozen
class Proxy:
    daemon: Daemon
    vkey: str
    root: Path
    key_file: Path


@pytest.fixture(scope="module")
def proxy(corp, upstream, tmp_path_factory):
    work = tmp_path_factory.mktemp("corp-proxy")
    key_file, vkey = make_key(work, NAME)
    d = start_daemon(work, "--storage", "disk", "--storage-root", str(work / "storage"), "--log-level", "debug",
                     env=corp_env(corp, upstream, key_file))
    yield Proxy(d, vkey, work / "storage", key_file)
    stop_cleanly(d)


def client_env(work: Path, url: str, vkey: str, sumdb_url: str | None = None,
               origins: Origins | None = None) -> dict[str, str]:
    """GOPROXY and GOSUMDB at the proxy, and nothing that skips verification."""
    env = go_env(work, work / "modcache", url, origins)
    env["GOSUMDB"] = f"{vkey} {sumdb_url or url}/sumdb/{NAME}"
    for skip in ("GONOSUMDB", "GOPRIVATE", "GONOSUMCHECK", "GOINSECURE"):
        env.pop(skip, None)
    return env


def go(work: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    work.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["go", *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def latest(url: str, vkey: str) -> tuple[bytes, int, bytes]:
    """The signed tree head, checked with the verifier key: (note, size, root hash)."""
    status, note, _ = get(f"{url}/sumdb/{NAME}/latest")
    assert status == 200, note
    tree = parse_tree(open_note(note, VerifierKey.parse(vkey)))
    return note, tree.n, tree.hash


def test_go_verifies_private_and_public_modules(tmp_path, proxy, corp, e2e):
    work = tmp_path / "client"
    env = client_env(work, proxy.daemon.url, proxy.vkey)
    targets = [f"{LIB}@v1.0.0", f"{SIMPLE}@v1.1.0", f"{UPPER}@v1.0.0"]
    got = {f"{i['Path']}@{i['Version']}": i for i in download_json(go(work, env, "mod", "download", "-json",
                                                                      *targets).stdout)}
    for target in targets:
        want = corp.direct.get(target) or e2e.direct[target]
        assert "Error" not in got[target], got[target]
        assert (got[target]["Sum"], got[target]["GoModSum"]) == (want["Sum"], want["GoModSum"]), target
    # the go command used the database, and kept its signed tree head (a public module's too: no GONOSUMDB)
    cached = (work / "gopath" / "pkg" / "sumdb" / NAME / "latest").read_bytes()
    assert parse_tree(open_note(cached, VerifierKey.parse(proxy.vkey))).n >= 3
    assert (work / "modcache" / "cache" / "download" / "sumdb" / NAME / "lookup").is_dir()
    logs = proxy.daemon.logs()
    assert f"{LIB}@v1.0.0 logged in the checksum database {NAME}" in logs and "first seen" in logs
    assert f"{SIMPLE}@v1.1.0 logged in the checksum database {NAME}" in logs and "confirmed upstream" in logs

    # go get in a module: go.sum written from what the database proved, then go mod verify agrees
    module = tmp_path / "app"
    module.mkdir()
    (module / "go.mod").write_text("module example.com/app\n\ngo 1.21\n")
    (module / "main.go").write_text(f'package main\n\nimport (\n\t"fmt"\n\n\tlib "{LIB}"\n\t"{SIMPLE}"\n)\n\n'
                                    'func main() { fmt.Println(lib.Where, simple.Hello()) }\n')
    go(module, env, "get", f"{LIB}@v1.1.0", f"{SIMPLE}@v1.1.0")
    go_sum = (module / "go.sum").read_text()
    assert corp.direct[f"{LIB}@v1.1.0"]["Sum"] in go_sum and e2e.direct[f"{SIMPLE}@v1.1.0"]["Sum"] in go_sum
    go(module, env, "mod", "verify")
    assert "lib v1.1.0 simple v1.1.0" in go(module, env, "run", ".").stdout


def metric(url: str, name: str, **labels: str) -> float:
    _, text, _ = get(f"{url}/metrics")
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.decode().splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_moved_private_tag_is_refused_by_the_proxy_and_by_the_go_command(tmp_path, proxy, corp):
    first = tmp_path / "first"
    env = client_env(first, proxy.daemon.url, proxy.vkey)
    go(first, env, "mod", "download", f"{MOVED}@v1.0.0")
    logged = corp.direct[f"{MOVED}@v1.0.0"]["Sum"]

    repo = corp.origins.repos[MOVED]  # the tag moves to a commit with other content
    corp.origins.commit(repo, {"p.go": 'package p\n\nconst Where = "not what was tagged"\n'})
    corp.origins.tag(repo, "v1.0.0")
    deleted = subprocess.run([*admin_command(), "--storage", "disk", "--storage-root", str(proxy.root), "delete",
                              f"{MOVED}@v1.0.0"], capture_output=True, text=True, env=source_env(), timeout=60)
    assert deleted.returncode == 0, deleted.stderr

    # the proxy fetches the moved tag again and refuses to store it (once the delete reached every cache)
    deadline = time.monotonic() + 30
    while True:
        status, body, _ = get(f"{proxy.daemon.url}/{MOVED}/@v/v1.0.0.zip")
        if status != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 502 and b"checksum mismatch with the checksum database sum.corp.test" in body, body
    assert not (proxy.root / MOVED / "v1.0.0" / "source.zip").exists()
    assert "SECURITY" in proxy.daemon.logs() and "moved tag" in proxy.daemon.logs()
    assert metric(proxy.daemon.url, "athens_checksum_refusals_total", database="own") >= 1

    # a client fetching the moved tag itself (direct from git) is stopped by the go command
    direct = tmp_path / "direct"
    env = client_env(direct, "direct", proxy.vkey, sumdb_url=proxy.daemon.url, origins=corp.origins)
    result = go(direct, env, "mod", "download", "-json", f"{MOVED}@v1.0.0", check=False)
    assert result.returncode != 0
    assert "SECURITY ERROR" in result.stdout + result.stderr, result.stdout + result.stderr
    assert "does NOT match the one reported by the checksum server" in result.stdout + result.stderr
    assert logged in result.stdout + result.stderr  # the database's hash, which never changed


class Tampering(http.server.ThreadingHTTPServer):
    """A man in the middle: passes everything on to the proxy and changes what ``tamper`` changes."""

    def __init__(self, target: str, tamper: Callable[[str, bytes], bytes]) -> None:
        self.target, self.tamper, self.tampered = target, tamper, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                status, body, headers = get(outer.target + self.path)
                changed = outer.tamper(self.path, body) if status == 200 else body
                outer.tampered += changed != body
                self.send_response(status)
                self.send_header("Content-Type", headers.get("Content-Type", "text/plain"))
                self.send_header("Content-Length", str(len(changed)))
                self.end_headers()
                self.wfile.write(changed)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def flip_tile(path: str, body: bytes) -> bytes:
    if f"/sumdb/{NAME}/tile/8/0/" in path:
        return bytes([body[0] ^ 1]) + body[1:]
    return body


def other_record(path: str, body: bytes) -> bytes:
    if f"/sumdb/{NAME}/lookup/" in path:  # another zip hash for the version, in a well-formed record
        return re.sub(rb"(v1\.0\.0 h1:)[A-Za-z0-9+/]{43}=", rb"\1" + base64.b64encode(b"\x00" * 32), body, count=1)
    return body


def forged_head(path: str, body: bytes) -> bytes:
    if path.endswith(f"/sumdb/{NAME}/latest") or f"/sumdb/{NAME}/lookup/" in path:
        return body.replace(b"go.sum database tree\n", b"go.sum database tree\n1", 1)
    return body


@pytest.mark.parametrize("tamper, words", [
    (flip_tile, "inconsistent tile"),
    (other_record, "cannot authenticate record data"),
    (forged_head, "invalid signature"),
])
def test_a_tampered_answer_is_caught_by_the_go_command(tmp_path, proxy, tamper, words):
    work = tmp_path / "warm"  # the version is stored and logged; every client below is cold
    go(work, client_env(work, proxy.daemon.url, proxy.vkey), "mod", "download", f"{LIB}@v1.0.0")
    middle = Tampering(proxy.daemon.url, tamper)
    try:
        cold = tmp_path / "cold"
        result = go(cold, client_env(cold, middle.url, proxy.vkey), "mod", "download", "-json", f"{LIB}@v1.0.0",
                    check=False)
    finally:
        middle.stop()
    assert middle.tampered >= 1
    assert result.returncode != 0, result.stdout
    assert words in result.stdout + result.stderr, result.stdout + result.stderr
    assert not (cold / "modcache" / f"{LIB}@v1.0.0").exists()


def prefill(root: Path, count: int) -> None:
    """Records the log holds before the daemon starts: the real modules land beyond two full tiles."""
    path = root / ".athens-sumdb-log" / "log.sqlite"
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    for statement in SQLITE.schema:
        db.execute(statement)
    hashes: list[bytes] = []
    for n in range(count):
        text = f"example.com/filler{n} v1.0.0 h1:{base64.b64encode(bytes(32)).decode()}\n".encode()
        new = append_hashes(n, record_hash(text), [hashes[i] for i in append_indexes(n)])
        db.execute("INSERT INTO athens_sumdb_records VALUES (?, ?, ?, ?)", (NAME, n, f"example.com/filler{n}@v1.0.0",
                                                                             text))
        db.executemany("INSERT INTO athens_sumdb_hashes VALUES (?, ?, ?)",
                       [(NAME, stored_hash_index(0, n) + i, h) for i, h in enumerate(new)])
        hashes += new
    db.commit()
    db.close()


def consistent(url: str, old: tuple[int, bytes], new: tuple[int, bytes]) -> None:
    """The newer tree extends the older one: a consistency proof from the served tiles checks out."""
    def stored(index: int) -> bytes:
        tile = tile_for_index(8, index)
        width = min(256, (new[0] >> (8 * tile.level)) - (tile.n << 8))
        full = Tile(8, tile.level, tile.n, width)
        status, data, _ = get(f"{url}/sumdb/{NAME}/{full.path()}")
        assert status == 200, full.path()
        return hash_from_tile(full, data, index)

    proof = tree_proof(new[0], old[0], [stored(i) for i in tree_proof_indexes(new[0], old[0])])
    check_tree(proof, new[0], new[1], old[0], old[1])


def test_tree_heads_before_and_after_a_restart_are_consistent(tmp_path, corp, upstream, proxy):
    work = tmp_path / "restarted"
    root = work / "storage"
    prefill(root, 600)
    env = corp_env(corp, upstream, proxy.key_file)
    args = ("--storage", "disk", "--storage-root", str(root))
    client = tmp_path / "client"
    d = start_daemon(work, *args, env=env)
    try:
        before = latest(d.url, proxy.vkey)
        assert before[1] == 600
        cenv = client_env(client, d.url, proxy.vkey)
        go(client, cenv, "mod", "download", f"{NODES[0]}@v1.0.0")  # record 600: a level-1 tile proves it
        first = latest(d.url, proxy.vkey)
        assert first[1] == 601
    finally:
        stop_cleanly(d)
    d = start_daemon(work, *args, env=env)
    try:
        again = latest(d.url, proxy.vkey)
        assert again == first  # the same tree, signed the same, after the restart
        cenv = client_env(client, d.url, proxy.vkey)  # the go command still holds the tree head of before
        go(client, cenv, "mod", "download", f"{NODES[1]}@v1.0.0")
        after = latest(d.url, proxy.vkey)
        assert after[1] == 602
        cached = (client / "gopath" / "pkg" / "sumdb" / NAME / "latest").read_bytes()
        assert parse_tree(open_note(cached, VerifierKey.parse(proxy.vkey))).n == 602  # it checked 601 -> 602
        for old in (before, first, again):
            consistent(d.url, old[1:], after[1:])
    finally:
        stop_cleanly(d)


def test_two_nodes_on_one_redis_build_one_tree(tmp_path, corp, upstream, proxy, redis_server):
    env = corp_env(corp, upstream, proxy.key_file, {
        "ATHENS_STORAGE_TYPE": "redis", "ATHENS_SINGLE_FLIGHT_TYPE": "redis",
        "ATHENS_REDIS_ENDPOINT": redis_server.endpoint, "ATHENS_STORAGE_REDIS_KEY_PREFIX": f"own-{os.getpid()}:",
    })
    nodes = [start_daemon(tmp_path / f"node{i}", env=env) for i in range(2)]
    try:
        jobs = [(nodes[i % 2], tmp_path / f"c{i}", [f"{p}@v1.0.0" for p in (NODES[i % 4], NODES[(i + 1) % 4])])
                for i in range(4)]

        def download(job: tuple[Daemon, Path, list[str]]) -> subprocess.CompletedProcess[str]:
            node, work, targets = job
            return go(work, client_env(work, node.url, proxy.vkey), "mod", "download", *targets, check=False)

        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(download, jobs))
        for result in results:
            assert result.returncode == 0, result.stdout + result.stderr
        heads = [latest(node.url, proxy.vkey) for node in nodes]
        assert heads[0] == heads[1] and heads[0][1] == len(NODES)
        ids = set()
        for module in NODES:
            answers = [get(f"{node.url}/sumdb/{NAME}/lookup/{module}@v1.0.0")[1] for node in nodes]
            assert answers[0].split(b"\n\n")[0] == answers[1].split(b"\n\n")[0]
            ids.add(int(answers[0].split(b"\n")[0]))
        assert ids == set(range(len(NODES)))
    finally:
        for node in nodes:
            stop_cleanly(node)


def test_worker_processes_share_the_disk_log(tmp_path, corp, upstream, proxy):
    """Several processes serving one port append to one SQLite log on the node's disk."""
    d = start_daemon(tmp_path / "workers", "--storage", "disk", "--storage-root", str(tmp_path / "storage"),
                     "--workers", "2", env=corp_env(corp, upstream, proxy.key_file))
    try:
        jobs = [(tmp_path / f"c{i}", [f"{p}@v1.0.0" for p in (LATER if i % 2 else LATER[::-1])]) for i in range(4)]

        def download(job: tuple[Path, list[str]]) -> subprocess.CompletedProcess[str]:
            work, targets = job
            return go(work, client_env(work, d.url, proxy.vkey), "mod", "download", *targets, check=False)

        with ThreadPoolExecutor(len(jobs)) as pool:
            for result in pool.map(download, jobs):
                assert result.returncode == 0, result.stdout + result.stderr
        assert latest(d.url, proxy.vkey)[1] == len(LATER)
    finally:
        stop_cleanly(d)
