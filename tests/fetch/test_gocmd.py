"""The go-command fetcher's process handling, with stand-in go binaries (shell scripts)."""

from __future__ import annotations

import os
import stat

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from athens.config import Config
from athens.fetch.credentials import prepare_home
from athens.fetch.gocmd import GoFetcher, classify
from athens.fetch.interface import OriginError, OriginNotFound, OriginTimeout


def script(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def state(pid: int) -> str | None:
    """The process state letter, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def our_zombies() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                found.append(int(entry))
    return found


def fetcher(tmp_path, go: str, **kwargs) -> GoFetcher:
    from twisted.internet import reactor

    work = tmp_path / "goget"
    work.mkdir(exist_ok=True)
    return GoFetcher(reactor, go_binary=go, work_dir=str(work), base_env={"PATH": os.environ["PATH"]}, **kwargs)


@pytest_twisted.ensureDeferred
async def test_a_fetch_over_the_timeout_is_killed_with_its_children(tmp_path):
    pids = tmp_path / "pids"
    go = script(tmp_path, "go", f"echo $$ > {pids}\nsleep 300 &\necho $! >> {pids}\nwait\n")
    f = fetcher(tmp_path, go, timeout=1)
    with pytest.raises(OriginTimeout, match="did not answer within 1s"):
        await f.download("example.com/slow", "v1.0.0")
    for pid in map(int, pids.read_text().split()):
        assert state(pid) in (None, "Z"), f"process {pid} survived the timeout"
    assert our_zombies() == []
    assert os.listdir(tmp_path / "goget") == []


@pytest_twisted.ensureDeferred
async def test_workers_bound_concurrency_and_temp_dirs_go(tmp_path):
    running = tmp_path / "running"
    running.mkdir()
    log = tmp_path / "log"
    go = script(tmp_path, "go", f"touch {running}/$$\nls {running} | wc -l >> {log}\nsleep 0.3\nrm {running}/$$\n"
                                'echo \'{"Error": "unknown revision v1.0.0"}\'\nexit 1\n')
    f = fetcher(tmp_path, go, workers=2)
    results = await gatherResults([f.download("example.com/m", "v1.0.0").addErrback(lambda e: e.value)
                                   for _ in range(6)])
    assert all(isinstance(r, OriginNotFound) for r in results)
    counts = [int(line) for line in log.read_text().split()]
    assert len(counts) == 6 and max(counts) == 2  # two at once (the bound), never more
    assert f.runs == 6
    assert os.listdir(tmp_path / "goget") == []
    assert our_zombies() == []


@pytest_twisted.ensureDeferred
async def test_a_missing_go_binary_is_an_origin_error(tmp_path):
    f = fetcher(tmp_path, str(tmp_path / "no-such-go"))
    with pytest.raises(OriginError):
        await f.listing("example.com/m")
    assert os.listdir(tmp_path / "goget") == []


@pytest_twisted.ensureDeferred
async def test_output_that_is_not_json_is_an_origin_error(tmp_path):
    go = script(tmp_path, "go", "echo garbage\n")
    with pytest.raises(OriginError):
        await fetcher(tmp_path, go).query("example.com/m", "main")


def test_environment_applies_the_operators_settings(tmp_path):
    f = fetcher(tmp_path, "go", env_vars=("GOPROXY=direct", "GOPRIVATE=*.corp", "GODEBUG=netdns=go"),
                no_sum_patterns=("example.com/private",))
    env = f.environment(str(tmp_path / "gopath"))
    assert env["GOPROXY"] == "direct" and env["GOPRIVATE"] == "*.corp" and env["GODEBUG"] == "netdns=go"
    assert env["GONOSUMDB"] == "example.com/private"
    assert env["GOPATH"] == str(tmp_path / "gopath") and env["GOMODCACHE"].startswith(env["GOPATH"])
    assert "PATH" in env and "ATHENS_GITHUB_TOKEN" not in env


def test_credentials_live_in_a_private_home(tmp_path):
    config = Config(github_token="s3cret", go_get_dir=str(tmp_path))
    environ: dict[str, str] = {}
    home = prepare_home(config, environ)
    netrc = os.path.join(home, ".netrc")
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(netrc).st_mode) == 0o600
    assert "machine github.com login s3cret" in open(netrc).read()
    assert "s3cret" not in repr(config)
    assert prepare_home(Config(), {}) == ""


@pytest.mark.parametrize(
    "message, kind",
    [("invalid version: unknown revision v9.0.0", OriginNotFound),
     ("module example.com/x: reading https://proxy/x/@v/list: 404 Not Found", OriginNotFound),
     ("unrecognized import path \"x.example\": no such host", OriginNotFound),
     ("git ls-remote: fatal: unable to access: Could not resolve host: github.com", OriginError),
     ("dial tcp 127.0.0.1:9: connect: connection refused", OriginError),
     ("fatal: unable to access: Operation timed out after 30000 milliseconds", OriginTimeout),
     ("something else entirely", OriginError)],
)
def test_classify(message, kind):
    error = classify(message)
    assert type(error) is kind
    assert str(error) == message


@pytest_twisted.ensureDeferred
async def test_errors_do_not_show_the_servers_temporary_paths(tmp_path):
    """Item 5 of the hardening issue: keep the reason, drop the paths."""
    go = script(tmp_path, "go", 'echo "go: writing $GOMODCACHE/cache/download/x: permission denied in $PWD" >&2\n'
                                "exit 1\n")
    with pytest.raises(OriginError) as caught:
        await fetcher(tmp_path, go).download("example.com/m", "v1.0.0")
    message = str(caught.value)
    assert "permission denied" in message and "$GOPATH" in message
    assert str(tmp_path) not in message and "/tmp" not in message, message
