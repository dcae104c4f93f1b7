"""Session-wide servers: one Redis, one PostgreSQL, one etcd and each object-store emulator for every test that needs them."""

from __future__ import annotations

import os

import pytest

from tests.objectservers import start_azurite, start_fake_gcs
from tests.servers import start_etcd, start_postgres, start_redis, start_seaweedfs

# Everything the tests start listens on loopback: an HTTP(S)_PROXY of the machine (even a dead one) must not
# stand between the tests' own clients (urllib, the go command) and those servers.
for _name in ("NO_PROXY", "no_proxy"):
    os.environ[_name] = ",".join(filter(None, [os.environ.get(_name, ""), "127.0.0.1", "localhost", "::1"]))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory):
    server = start_etcd(tmp_path_factory.mktemp("etcd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory):
    server = start_fake_gcs(tmp_path_factory.mktemp("fake-gcs"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs_server():
    """One S3-compatible server for the session; each test makes a bucket of its own."""
    server = start_seaweedfs()
    yield server
    server.stop()


@pytest.fixture(params=["full path", "hit path"])
def both_paths(request, monkeypatch):
    """Run a protocol test as it is, then again with every 200 asked twice (the repeat answered by the hit path)."""
    from tests.inprocess import Served

    monkeypatch.setattr(Served, "repeat", request.param == "hit path")
    return request.param
