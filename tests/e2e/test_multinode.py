"""Real daemons sharing one store (Redis, PostgreSQL, S3) and one lock (Redis, etcd): one origin fetch, same bytes."""

from __future__ import annotations

import json
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.daemon import start_daemon
from tests.e2e.conftest import CONCURRENT, MONO_SUB, SIMPLE, UPPER, fetcher_env, stop_cleanly
from tests.e2e.test_fill import download, fetches, get
from tests.e2e.test_s3 import s3_environ
from tests.servers import s3_request

pytestmark = pytest.mark.e2e


def start_nodes(tmp_path, e2e, storage_env: dict[str, str], n: int = 3):
    env = fetcher_env(e2e.origins, {
        "ATHENS_SINGLE_FLIGHT_TYPE": "redis",
        "ATHENS_STORAGE_REDIS_KEY_PREFIX": f"multi-{uuid.uuid4().hex}:",
        **storage_env,
    })
    nodes = []
    try:
        for i in range(n):
            nodes.append(start_daemon(tmp_path / f"node{i}", "--log-level", "debug", env=env))
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def concurrent_cold_requests(nodes, path: str, count: int = 60) -> list[tuple[int, bytes]]:
    urls = [f"{nodes[i % len(nodes)].url}{path}" for i in range(count)]
    with ThreadPoolExecutor(count) as pool:
        return [(status, body) for status, body, _ in pool.map(get, urls)]


def check_one_fetch(nodes, results, what: str) -> None:
    assert {status for status, _ in results} == {200}, [r for r in results if r[0] != 200][:1]
    assert len({body for _, body in results}) == 1
    assert sum(fetches(node, what) for node in nodes) == 1, [fetches(node, what) for node in nodes]


@pytest.fixture
def redis_nodes(tmp_path, e2e, redis_server):
    nodes = start_nodes(tmp_path, e2e, {"ATHENS_STORAGE_TYPE": "redis", "ATHENS_REDIS_ENDPOINT": redis_server.endpoint})
    yield nodes
    for node in nodes:
        stop_cleanly(node)


@pytest.fixture
def postgres_nodes(tmp_path, e2e, redis_server, postgres_server):
    database = f"multi{uuid.uuid4().hex}"
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    url = postgres_server.url.rsplit("/", 1)[0] + "/" + database
    nodes = start_nodes(tmp_path, e2e, {"ATHENS_STORAGE_TYPE": "postgres", "ATHENS_STORAGE_POSTGRES_URL": url,
                                        "ATHENS_REDIS_ENDPOINT": redis_server.endpoint})
    yield nodes
    for node in nodes:
        stop_cleanly(node)


@pytest.fixture
def s3_nodes(tmp_path, e2e, redis_server, seaweedfs_server):
    bucket = f"multi{uuid.uuid4().hex}"
    assert s3_request(seaweedfs_server, "PUT", "/" + bucket)[0] == 200
    nodes = start_nodes(tmp_path, e2e, {**s3_environ(seaweedfs_server, bucket),
                                        "ATHENS_REDIS_ENDPOINT": redis_server.endpoint})
    yield nodes
    for node in nodes:
        stop_cleanly(node)


@pytest.fixture
def etcd_nodes(tmp_path, e2e, redis_server, etcd_server):
    nodes = start_nodes(tmp_path, e2e, {"ATHENS_STORAGE_TYPE": "redis", "ATHENS_REDIS_ENDPOINT": redis_server.endpoint,
                                        "ATHENS_SINGLE_FLIGHT_TYPE": "etcd",
                                        "ATHENS_ETCD_ENDPOINTS": etcd_server.endpoint}, n=2)
    yield nodes
    for node in nodes:
        stop_cleanly(node)


def test_two_nodes_with_the_etcd_lock_fetch_once(etcd_nodes, e2e, tmp_path):
    results = concurrent_cold_requests(etcd_nodes, f"/{CONCURRENT}/@v/v1.0.0.zip", count=40)
    check_one_fetch(etcd_nodes, results, f"{CONCURRENT}@v1.0.0")
    got, _ = download(tmp_path / "client", etcd_nodes[1], f"{CONCURRENT}@v1.0.0")
    assert got[f"{CONCURRENT}@v1.0.0"]["Sum"] == e2e.direct[f"{CONCURRENT}@v1.0.0"]["Sum"]


def test_three_nodes_on_redis_fetch_once(redis_nodes, e2e, tmp_path):
    results = concurrent_cold_requests(redis_nodes, f"/{CONCURRENT}/@v/v1.0.0.zip")
    check_one_fetch(redis_nodes, results, f"{CONCURRENT}@v1.0.0")
    # every node serves it now, and the go command agrees with the direct download
    for node in redis_nodes:
        got, _ = download(tmp_path / node.log.parent.name, node, f"{CONCURRENT}@v1.0.0")
        assert got[f"{CONCURRENT}@v1.0.0"]["Sum"] == e2e.direct[f"{CONCURRENT}@v1.0.0"]["Sum"]
    with urllib.request.urlopen(redis_nodes[0].url + "/version") as r:
        assert json.loads(r.read())["storage"] == "redis"


def test_three_nodes_on_postgres_with_the_redis_lock_fetch_once(postgres_nodes, e2e, tmp_path):
    results = concurrent_cold_requests(postgres_nodes, f"/{MONO_SUB}/@v/v1.1.0.zip")
    check_one_fetch(postgres_nodes, results, f"{MONO_SUB}@v1.1.0")
    got, _ = download(tmp_path / "client", postgres_nodes[2], f"{MONO_SUB}@v1.1.0")
    assert got[f"{MONO_SUB}@v1.1.0"]["Sum"] == e2e.direct[f"{MONO_SUB}@v1.1.0"]["Sum"]


def test_three_nodes_on_s3_with_the_redis_lock_fetch_once(s3_nodes, e2e, tmp_path):
    results = concurrent_cold_requests(s3_nodes, f"/{CONCURRENT}/@v/v1.0.0.zip")
    check_one_fetch(s3_nodes, results, f"{CONCURRENT}@v1.0.0")
    # three go commands at once, one through each node, all wanting the same cold versions
    targets = [f"{SIMPLE}@v1.1.0", f"{UPPER}@v1.0.0", f"{MONO_SUB}@v1.1.0", f"{CONCURRENT}@v1.0.0"]
    with ThreadPoolExecutor(len(s3_nodes)) as pool:
        downloads = list(pool.map(lambda node: download(tmp_path / node.log.parent.name, node, *targets)[0],
                                  s3_nodes))
    for got in downloads:
        assert sorted(got) == sorted(targets)
        for key in targets:
            assert got[key]["Sum"] == e2e.direct[key]["Sum"], key
            assert got[key]["GoModSum"] == e2e.direct[key]["GoModSum"], key
    for key in targets:
        assert sum(fetches(node, key) for node in s3_nodes) == 1, (key, [fetches(node, key) for node in s3_nodes])
    with urllib.request.urlopen(s3_nodes[1].url + "/version") as r:
        assert json.loads(r.read())["storage"] == "s3"
