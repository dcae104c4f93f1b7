"""Athens' remaining options: ForceSSL, ProtocolWorkers, and TLS files read again on SIGHUP."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from athens import config as athens_config
from athens.storage.memory import MemoryStorage
from athens.web.app import make_site
from tests import rawhttp
from tests.daemon import free_port, start_daemon
from tests.inprocess import serve
from tests.storage.test_compliance import gomod, info, once
from tests.tls import make_certificate

MOD = "example.com/forced"


def test_options_are_read_with_athens_names():
    config = athens_config.load(os.devnull, environ={"PROXY_FORCE_SSL": "true", "ATHENS_PROTOCOL_WORKERS": "7"})
    assert (config.force_ssl, config.protocol_workers) == (True, 7)
    assert athens_config.load(os.devnull, environ={}).protocol_workers == 30  # Athens' default
    with pytest.raises(athens_config.ConfigError, match="ProtocolWorkers|ATHENS_PROTOCOL_WORKERS"):
        athens_config.load(os.devnull, environ={"ATHENS_PROTOCOL_WORKERS": "0"})


@pytest_twisted.ensureDeferred
async def test_force_ssl_redirects_plain_requests_on_both_paths():
    storage = MemoryStorage()
    await storage.save(MOD, "v1.0.0", info("v1.0.0"), gomod(MOD), once(b"zip"))
    served = serve(make_site(storage, force_ssl=True))
    port = served.port.getHost().port
    try:
        forwarded = {"X-Forwarded-Proto": "https"}
        for _ in range(2):  # the second is the hit path's, once the first was remembered
            answer = await deferToThread(rawhttp.get, port, f"/{MOD}/@v/v1.0.0.info", "GET", forwarded)
            assert (answer.status, answer.body) == (200, info("v1.0.0"))
        assert served.port.factory.hits.answered == 1
        for headers in ({}, {"X-Forwarded-Proto": "http"}):  # remembered, yet not a hit: it did not come over HTTPS
            answer = await deferToThread(rawhttp.get, port, f"/{MOD}/@v/v1.0.0.info?x=1", "GET", headers)
            assert answer.status == 301
            assert answer.headers["location"] == f"https://127.0.0.1/{MOD}/@v/v1.0.0.info?x=1"  # the Host it was sent
            answer = await deferToThread(rawhttp.get, port, f"/{MOD}/@v/v1.0.0.info", "GET", headers)
            assert answer.status == 301
        assert served.port.factory.hits.answered == 1
    finally:
        await served.close()


def _served_certificate(port: int, ca) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)


def test_sighup_reloads_the_tls_files(tmp_path):
    first_cert, first_key = make_certificate(tmp_path / "first")
    second_cert, second_key = make_certificate(tmp_path / "second")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(first_cert.read_bytes())
    key.write_bytes(first_key.read_bytes())
    port = free_port()
    d = start_daemon(tmp_path / "d", "--storage", "memory", listen=False, env={
        "ATHENS_PORT": f"127.0.0.1:{port}", "ATHENS_TLSCERT_FILE": str(cert), "ATHENS_TLSKEY_FILE": str(key)})
    try:
        before = _served_certificate(port, first_cert)
        cert.write_bytes(second_cert.read_bytes())
        key.write_bytes(second_key.read_bytes())
        d.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while "TLS certificate reloaded" not in d.logs():
            assert time.monotonic() < deadline, d.logs()
            time.sleep(0.05)
        after = _served_certificate(port, second_cert)
        assert after != before
        key.write_bytes(b"not a key")  # a broken renewal: the certificate in service stays
        d.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while "TLS files not reloaded" not in d.logs():
            assert time.monotonic() < deadline, d.logs()
            time.sleep(0.05)
        assert _served_certificate(port, second_cert) == after
        assert d.process.poll() is None
    finally:
        d.stop()


def test_unusable_tls_files_stop_the_start_with_one_line(tmp_path):
    import subprocess

    from tests.daemon import source_env, twistd

    (tmp_path / "cert.pem").write_text("nothing")
    result = subprocess.run([twistd(), "-n", "--pidfile=", "athens", "--storage", "memory"], cwd=tmp_path,
                            env=source_env({"ATHENS_PORT": f"127.0.0.1:{free_port()}",
                                            "ATHENS_TLSCERT_FILE": str(tmp_path / "cert.pem"),
                                            "ATHENS_TLSKEY_FILE": str(tmp_path / "key.pem")}),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "key.pem" in result.stderr and "No such file" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest_twisted.ensureDeferred
async def test_stats_exporter_turns_metrics_on_and_off():
    from athens.metrics import Metrics

    assert athens_config.load(os.devnull, environ={}).stats_exporter == "prometheus"
    assert athens_config.load(os.devnull, environ={"ATHENS_STATS_EXPORTER": ""}).stats_exporter == "prometheus"
    with pytest.raises(athens_config.ConfigError, match="datadog"):
        athens_config.load(os.devnull, environ={"ATHENS_STATS_EXPORTER": "datadog"})
    for exported, status in ((True, 200), (False, 404)):
        served = serve(make_site(MemoryStorage(), metrics=Metrics(exported=exported)))
        try:
            answer = await deferToThread(rawhttp.get, served.port.getHost().port, "/metrics")
            assert answer.status == status
        finally:
            await served.close()


def test_an_empty_stats_exporter_in_the_file_turns_metrics_off(tmp_path):
    (tmp_path / "athens.toml").write_text('StatsExporter = ""\n')
    assert athens_config.load(str(tmp_path / "athens.toml"), environ={}).stats_exporter == ""


def test_sentinel_settings_under_athens_sentinel_section(tmp_path):
    (tmp_path / "athens.toml").write_text(
        '[SingleFlight.RedisSentinel]\nRedisPassword = "from-file"\nDB = 2\n'
        '[SingleFlight.RedisSentinel.LockConfig]\nTTL = 60\nTimeout = 5\nMaxRetries = 3\n')
    config = athens_config.load(str(tmp_path / "athens.toml"), environ={})
    assert (config.redis_password, config.sentinel_db) == ("from-file", 2)
    assert (config.lock_ttl, config.lock_timeout, config.lock_max_retries) == (60, 5, 3)
    assert config.warnings == ()
    # the variables Athens shares between Redis and Sentinel still win over the file
    config = athens_config.load(str(tmp_path / "athens.toml"), environ={"ATHENS_REDIS_PASSWORD": "from-env",
                                                                       "ATHENS_REDIS_LOCK_TTL": "90"})
    assert (config.redis_password, config.lock_ttl) == ("from-env", 90)
