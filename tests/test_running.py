"""The ways an operator starts the daemon: twistd plugin, athens.tac, JSON logs."""

from __future__ import annotations

import io
import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from twisted.logger import Logger, LogPublisher

from athens.logs import make_observer
from tests.daemon import REPO, free_port, source_env, start_daemon, twistd


def test_json_logs_filtered_by_level():
    stream = io.StringIO()
    publisher = LogPublisher(make_observer("warn", "json", stream))
    log = Logger(namespace="athens.test", observer=publisher)
    log.info("quiet {n}", n=1)
    log.warn("loud {n}", n=2)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert (event["n"], event["namespace"], event["level"], event["msg"]) == (2, "athens.test", "warn", "loud 2")


def test_athens_tac_reads_athens_environment(tmp_path):
    port = free_port()
    env = source_env({"ATHENS_PORT": f"127.0.0.1:{port}", "ATHENS_STORAGE_TYPE": "disk",
                      "ATHENS_DISK_STORAGE_ROOT": str(tmp_path / "store"), "ATHENS_LOG_FORMAT": "json"})
    proc = subprocess.Popen([twistd(), "-n", "--pidfile=", "-y", str(REPO / "athens.tac")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=2) as r:
                    assert json.loads(r.read())["storage"] == "disk"
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
                time.sleep(0.1)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert (tmp_path / "store" / ".athens-tmp").is_dir()
    access = [json.loads(line) for line in out.splitlines() if '"athens.access"' in line]
    assert access and access[0]["code"] == 200 and access[0]["uri"] == "/version", out


def test_plugin_with_a_config_file(tmp_path):
    (tmp_path / "athens.toml").write_text('StorageType = "memory"\nLogLevel = "debug"\n')
    daemon = start_daemon(tmp_path, "--config", str(tmp_path / "athens.toml"))
    try:
        with urllib.request.urlopen(daemon.url + "/version") as r:
            assert json.loads(r.read())["storage"] == "memory"
    finally:
        daemon.stop()
    assert "configuration file" in daemon.logs()


def test_request_ids_on_log_lines_and_answers(tmp_path):
    env = {"ATHENS_LOG_FORMAT": "json", "ATHENS_DOWNLOAD_MODE": "none", "ATHENS_STORAGE_TYPE": "memory"}
    daemon = start_daemon(tmp_path, env=env)
    try:
        request = urllib.request.Request(daemon.url + "/example.com/x/@v/v1.0.0.info",
                                         headers={"X-Request-Id": "build-42"})
        with pytest.raises(urllib.error.HTTPError) as refused:  # a 404: the assertion cannot be skipped
            urllib.request.urlopen(request)
        assert refused.value.code == 404 and refused.value.headers["X-Request-Id"] == "build-42"
        with urllib.request.urlopen(daemon.url + "/healthz") as r:
            generated = r.headers["X-Request-Id"]
            assert len(generated) == 16
    finally:
        daemon.stop()
    events = [json.loads(line) for line in daemon.logs().splitlines() if line.startswith("{")]
    access = {e["uri"]: e for e in events if e["namespace"] == "athens.access"}
    assert access["/example.com/x/@v/v1.0.0.info"]["request_id"] == "build-42"
    assert access["/healthz"]["request_id"] == generated


def test_lines_logged_while_a_request_runs_carry_its_id():
    from athens.logs import current_request_id

    stream = io.StringIO()
    log = Logger(namespace="athens.test", observer=LogPublisher(make_observer("info", "plain", stream)))
    token = current_request_id.set("req-7")
    try:
        log.warn("fetching {what}", what="example.com/m@v1.0.0")
    finally:
        current_request_id.reset(token)
    log.warn("outside any request")
    first, second = stream.getvalue().splitlines()
    assert "[req-7] fetching example.com/m@v1.0.0" in first
    assert "[" not in second.split("]", 1)[1].split("outside")[0].strip("# ")


def test_retries_of_a_store_that_is_down_are_logged_once_a_minute_per_endpoint():
    """Item 14 of the hardening issue: ten pooled connections retrying must not fill the log."""
    from twisted.internet.task import Clock

    from athens.logs import QuietRetries

    clock = Clock()
    stream = io.StringIO()
    publisher = LogPublisher(make_observer("info", "plain", stream))
    quiet = QuietRetries(clock=clock.seconds)
    log = Logger(namespace="twisted.application.internet.ClientService", observer=publisher)
    lines = []
    for second in range(130):
        clock.advance(1)
        for endpoint in ("redis-a:6379", "redis-b:6379"):
            event = {"log_format": "Scheduling retry {attempt} to connect {endpoint} in {delay} seconds.",
                     "endpoint": endpoint}
            if quiet(event).name != "no":
                lines.append((second, endpoint))
            log.info("Scheduling retry {attempt} to connect {endpoint} in {delay} seconds.", attempt=second,
                     endpoint=endpoint, delay=1)
    assert [s for s, e in lines if e == "redis-a:6379"] == [0, 60, 120]
    assert [s for s, e in lines if e == "redis-b:6379"] == [0, 60, 120]
    # The daemon's own observer: 260 retries within the same minute, one line per endpoint.
    assert len(stream.getvalue().splitlines()) == 2, stream.getvalue()


@pytest.mark.parametrize("args, env, words", [
    (["--listen", "foo:bar"], {}, "--listen 'foo:bar': Unknown endpoint type"),
    (["--listen", "tcp:notaport"], {}, "--listen 'tcp:notaport'"),
    (["--workers", "x"], {}, "--workers: 'x' is not a number"),
    ([], {"ATHENS_LOG_LEVEL": "bogus"}, "ATHENS_LOG_LEVEL: 'bogus'"),
    ([], {"ATHENS_SUM_DBS": "https://sum.example.com"}, "no key is known for the checksum database"),
    (["--listen", "unix:/tmp/x.sock", "--workers", "2"], {}, "--workers 2 needs a tcp: or systemd: endpoint"),
])
def test_start_up_errors_are_one_clear_line(tmp_path, args, env, words):
    """Item 20 of the hardening issue: what the operator wrote, in one line, exit status 1, no traceback."""
    result = subprocess.run([twistd(), "-n", "--pidfile=", "athens", "--storage-root", str(tmp_path / "s"), *args],
                            cwd=tmp_path, env=source_env(env), capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert output.count("\n") == 0 and words in output and "Traceback" not in output, output


def test_unix_socket_from_the_configuration(tmp_path):
    """The README's promise: UnixSocket serves on a Unix socket (one process by default)."""
    import socket

    path = tmp_path / "athens.sock"
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([twistd(), "-n", "--pidfile=", "athens", "--storage", "memory"], cwd=tmp_path,
                                   env=source_env({"ATHENS_UNIX_SOCKET": str(path)}), stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

        def ask(target: str) -> bytes:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(str(path))
                s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                return data

        assert ask("/healthz").startswith(b"HTTP/1.1 200")
        assert ask("/robots.txt").startswith(b"HTTP/1.1 200")
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize("fmt", ["plain", "json"])
@pytest.mark.parametrize("broken", ["", "client left"])
def test_access_lines_written_in_batches_read_as_the_observer_writes_them(fmt, broken):
    """The daemon formats access lines itself (fast, in batches): the same text our observer would write."""
    from twisted.logger import LogLevel, globalLogPublisher

    from athens.web.accesslog import AccessLog, Line

    line = Line("127.0.0.1", "GET", "/example.com/x/@v/v1.0.0.zip", 200, 1234, 0.5, "build-42", "hit",
                "Go-http-client/1.1", "example.com/x", "v1.0.0", broken)
    batched = io.StringIO()
    AccessLog(batched, json=fmt == "json").record(line)  # no clock: written at once
    observed = io.StringIO()
    observer = make_observer("info", fmt, observed)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        AccessLog().record(line)  # through twisted.logger, as under `twistd --logger`
    finally:
        globalLogPublisher.removeObserver(events.append)
    (event,) = [e for e in events if e.get("log_namespace") == "athens.access"]
    assert event["log_level"] == LogLevel.info
    observer(event)
    if fmt == "json":
        ours, theirs = json.loads(batched.getvalue()), json.loads(observed.getvalue())
        assert ours.pop("time")[:19] == theirs.pop("time")[:19]
        assert ours == theirs
    else:
        ours, theirs = batched.getvalue(), observed.getvalue()
        assert ours.split(" ", 1)[1] == theirs.split(" ", 1)[1]  # all but the time stamp
        assert len(ours.split(" ", 1)[0]) == len(theirs.split(" ", 1)[0])


def test_access_lines_wait_for_their_batch_and_a_flush_writes_them_all():
    """Batched every 0.1 s; at a clean stop the service flushes, so nothing pending is lost."""
    from twisted.internet.task import Clock

    from athens.web.accesslog import AccessLog, Line

    clock, stream = Clock(), io.StringIO()
    access_log = AccessLog(stream, clock=clock)
    for n in range(3):
        access_log.record(Line("127.0.0.1", "GET", f"/{n}", 200, 1, 0.1, f"id-{n}"))
    assert stream.getvalue() == ""  # nothing written per request
    clock.advance(0.1)
    assert [line.split('"')[1] for line in stream.getvalue().splitlines()] == ["GET /0", "GET /1", "GET /2"]
    access_log.record(Line("127.0.0.1", "GET", "/last", 200, 1, 0.1, "id-last"))
    access_log.flush()  # what AthensService does at a clean stop
    assert stream.getvalue().splitlines()[-1].split('"')[1] == "GET /last"
    assert clock.getDelayedCalls() == []
