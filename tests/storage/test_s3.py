"""
The S3 client's settings, credentials and faults: Athens' keys, the credential
chain against loopback servers the tests start, a real SeaweedFS checking
signatures, a store that is down or throttles, a cancelled upload.
"""

from __future__ import annotations

import datetime
import re
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import pytest_twisted

from athens.config import ConfigError, load
from athens.storage.awscreds import CredentialSettings, CredentialSource
from athens.storage.interface import StorageUnavailable
from athens.storage.objects import ObjectStorage
from athens.storage.s3 import S3Bucket, S3Settings
from athens.storage.s3settings import check_bucket, minio_settings, s3_settings
from tests.daemon import free_port
from tests.servers import s3_request
from tests.storage.buckets import new_s3_bucket
from tests.streams import pattern


class Serve:
    """A loopback HTTP server in a thread answering with ``handler(method, path, headers) -> (status, body)``."""

    def __init__(self, handler):
        self.requests: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                outer.requests.append((self.command, self.path, dict(self.headers)))
                status, body = handler(self.command, self.path, self.headers)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def expiring(key: str, minutes: float) -> bytes:
    expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)
    return json.dumps({"AccessKeyId": key, "SecretAccessKey": "s-" + key, "Token": "t-" + key,
                       "Expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()


# -- Athens' keys --

def test_athens_s3_variables_make_the_settings():
    config = load(environ={"ATHENS_STORAGE_TYPE": "s3", "AWS_REGION": "eu-west-3", "ATHENS_S3_BUCKET_NAME": "mods",
                           "AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "sec", "AWS_SESSION_TOKEN": "tok",
                           "AWS_FORCE_PATH_STYLE": "true", "AWS_ENDPOINT": "http://127.0.0.1:9000"})
    settings = s3_settings(config)
    assert (settings.bucket, settings.region, settings.path_style) == ("mods", "eu-west-3", True)
    assert settings.credentials == CredentialSettings("AKID", "sec", "tok")
    assert settings.url("a/@v/v1.0.0+incompatible.zip") == "http://127.0.0.1:9000/mods/a/%40v/v1.0.0%2Bincompatible.zip"
    aws = S3Settings("mods", "eu-west-3")
    assert aws.url("k") == "https://mods.s3.eu-west-3.amazonaws.com/k"


def test_container_credentials_and_default_chain_keys():
    config = load(environ={"ATHENS_STORAGE_TYPE": "s3", "AWS_REGION": "us-east-1", "ATHENS_S3_BUCKET_NAME": "b",
                           "AWS_CREDENTIALS_ENDPOINT": "http://127.0.0.1:1/",
                           "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"})
    assert s3_settings(config).credentials.endpoint == "http://127.0.0.1:1/v2/credentials/x"
    config = load(environ={"ATHENS_STORAGE_TYPE": "s3", "AWS_REGION": "us-east-1", "ATHENS_S3_BUCKET_NAME": "b",
                           "AWS_USE_DEFAULT_CONFIGURATION": "true"})
    assert s3_settings(config).credentials.use_default_chain


@pytest.mark.parametrize("environ, named", [
    ({"AWS_REGION": "eu"}, "Storage.S3.Bucket"),
    ({"ATHENS_S3_BUCKET_NAME": "b"}, "Storage.S3.Region"),
    ({"ATHENS_S3_BUCKET_NAME": "b", "AWS_REGION": "eu"}, "Storage.S3.Key"),
    ({"ATHENS_S3_BUCKET_NAME": "b", "AWS_REGION": "eu", "AWS_ENDPOINT": "minio:9000", "AWS_ACCESS_KEY_ID": "k",
      "AWS_SECRET_ACCESS_KEY": "s"}, "Storage.S3.Endpoint"),
])
def test_missing_or_wrong_s3_keys_are_named(environ, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        s3_settings(load(environ={"ATHENS_STORAGE_TYPE": "s3", **environ}))


def test_athens_minio_variables_make_the_settings():
    config = load(environ={"ATHENS_STORAGE_TYPE": "minio", "ATHENS_MINIO_ENDPOINT": "minio.internal:9001",
                           "ATHENS_MINIO_ACCESS_KEY_ID": "minio", "ATHENS_MINIO_SECRET_ACCESS_KEY": "minio123",
                           "ATHENS_MINIO_BUCKET_NAME": "gomods", "ATHENS_MINIO_USE_SSL": "true"})
    settings = minio_settings(config)
    assert settings.url("k") == "https://minio.internal:9001/gomods/k"
    assert settings.region == "us-east-1" and settings.credentials == CredentialSettings("minio", "minio123")
    with pytest.raises(ConfigError, match=r"Storage\.Minio\.Bucket"):
        minio_settings(load(environ={"ATHENS_MINIO_ENDPOINT": "m:1", "ATHENS_MINIO_ACCESS_KEY_ID": "a",
                                     "ATHENS_MINIO_SECRET_ACCESS_KEY": "b"}))


# -- the start-up check --

def test_the_start_up_check_names_what_is_wrong(seaweedfs_server):
    good = S3Settings("does-not-exist-" + str(free_port()), endpoint=seaweedfs_server.endpoint, path_style=True,
                      credentials=CredentialSettings(seaweedfs_server.key, seaweedfs_server.secret), timeout=10)
    with pytest.raises(ConfigError, match=r"^Storage\.S3\.Bucket: the bucket .* does not exist"):
        check_bucket(good, "Storage.S3")
    wrong_secret = S3Settings(good.bucket, endpoint=good.endpoint, path_style=True, timeout=10,
                              credentials=CredentialSettings(seaweedfs_server.key, "wrong"))
    with pytest.raises(ConfigError, match=r"^Storage\.S3\.Key: the store refused the credentials .*\(403"):
        check_bucket(wrong_secret, "Storage.S3")
    down = S3Settings("b", endpoint=f"http://127.0.0.1:{free_port()}", path_style=True, timeout=10,
                      credentials=good.credentials)
    with pytest.raises(ConfigError, match=r"^Storage\.Minio\.Endpoint: cannot reach"):
        check_bucket(down, "Storage.Minio")
    check_bucket(good, "Storage.Minio", create=True)  # Athens' minio storage makes its bucket
    assert s3_request(seaweedfs_server, "HEAD", "/" + good.bucket)[0] == 200
    check_bucket(good, "Storage.S3")


@pytest_twisted.ensureDeferred
async def test_storage_type_minio_makes_its_bucket_and_writes_athens_minio_layout(seaweedfs_server):
    from twisted.internet import reactor

    from athens.storage.factory import open_storage
    from tests.streams import once

    bucket = f"minio{free_port()}"
    config = load(environ={"ATHENS_STORAGE_TYPE": "minio", "ATHENS_MINIO_BUCKET_NAME": bucket,
                           "ATHENS_MINIO_ENDPOINT": seaweedfs_server.endpoint.removeprefix("http://"),
                           "ATHENS_MINIO_ACCESS_KEY_ID": seaweedfs_server.key,
                           "ATHENS_MINIO_SECRET_ACCESS_KEY": seaweedfs_server.secret})
    store = open_storage(config, reactor)
    try:
        assert await store.save("github.com/Azure/Go-Lib", "v1.2.0", b'{"Version":"v1.2.0"}', b"module m\n",
                                 once(b"PK zip"))
        assert await store.list("github.com/Azure/Go-Lib") == ["v1.2.0"]
    finally:
        await store.close()
    status, listing = s3_request(seaweedfs_server, "GET", f"/{bucket}?list-type=2")
    keys = sorted(k.decode() for k in re.findall(rb"<Key>(.*?)</Key>", listing))
    assert status == 200 and keys == ["github.com/Azure/Go-Lib/v1.2.0/go.mod", "github.com/Azure/Go-Lib/v1.2.0/source.zip",
                                      "github.com/Azure/Go-Lib/v1.2.0/v1.2.0.info"]


# -- credentials --

@pytest_twisted.ensureDeferred
async def test_container_credentials_are_refreshed_before_they_expire():
    served = []

    def credentials(method, path, headers):
        served.append(path)
        return 200, expiring(f"KEY{len(served)}", minutes=5)  # inside botocore's refresh window: always due

    server = Serve(credentials)
    try:
        source = CredentialSource(CredentialSettings(endpoint=server.url + "/v2/credentials/role"))
        first = await source.get()
        second = await source.get()
    finally:
        server.close()
    assert first.access_key.startswith("KEY") and first.token == "t-" + first.access_key
    assert second.access_key != first.access_key and served[0] == "/v2/credentials/role"


@pytest_twisted.ensureDeferred
async def test_the_static_key_is_used_when_the_credentials_endpoint_fails():
    source = CredentialSource(CredentialSettings("AKID", "secret", "",
                                                 endpoint=f"http://127.0.0.1:{free_port()}/creds"))
    assert (await source.get()).access_key == "AKID"


@pytest_twisted.ensureDeferred
async def test_default_chain_reads_instance_metadata_with_imdsv2(monkeypatch, tmp_path):
    def imds(method, path, headers):
        if method == "PUT" and path == "/latest/api/token":
            return 200, b"imds-token"
        if headers.get("X-aws-ec2-metadata-token") != "imds-token":
            return 401, b""
        if path.rstrip("/") == "/latest/meta-data/iam/security-credentials":
            return 200, b"athens-role"
        if path == "/latest/meta-data/iam/security-credentials/athens-role":
            return 200, json.dumps({**json.loads(expiring("IMDSKEY", 60)), "Code": "Success"}).encode()
        return 404, b""

    server = Serve(imds)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url)
    try:
        credentials = await CredentialSource(CredentialSettings(use_default_chain=True)).get()
    finally:
        server.close()
    assert (credentials.access_key, credentials.token) == ("IMDSKEY", "t-IMDSKEY")
    assert [r[:2] for r in server.requests[:1]] == [("PUT", "/latest/api/token")]


@pytest_twisted.ensureDeferred
async def test_default_chain_environment_and_shared_file_sign_real_requests(seaweedfs_server, monkeypatch,
                                                                              tmp_path):
    """SeaweedFS checks every signature: the keys the chain found were used."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "credentials").write_text(
        f"[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n"
        f"[athens]\naws_access_key_id = {seaweedfs_server.key}\naws_secret_access_key = {seaweedfs_server.secret}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_PROFILE", "athens")
    bucket = new_s3_bucket(seaweedfs_server, credentials=CredentialSettings(use_default_chain=True))
    try:
        await bucket.put("chain/file", b"signed with the profile's key")
        assert await bucket.get("chain/file") == b"signed with the profile's key"
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs_server.key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs_server.secret)
        monkeypatch.delenv("AWS_PROFILE")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        bucket.credentials = CredentialSource(CredentialSettings(use_default_chain=True))
        assert await bucket.get("chain/file") == b"signed with the profile's key"
    finally:
        await bucket.close()


# -- faults --

@pytest_twisted.ensureDeferred
async def test_an_unreachable_store_is_unavailable_at_once_with_the_reason():
    from twisted.internet import reactor

    settings = S3Settings("b", endpoint=f"http://127.0.0.1:{free_port()}", path_style=True,
                          credentials=CredentialSettings("k", "s"))
    store = ObjectStorage(S3Bucket.connect(settings, reactor))
    try:
        with pytest.raises(StorageUnavailable, match="cannot reach http://127.0.0.1.*refused"):
            await store.info("example.com/m", "v1.0.0")
        with pytest.raises(StorageUnavailable):
            await store.ping()
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_throttling_is_retried_and_refused_credentials_are_unavailable():
    from twisted.internet import reactor

    answers = [(503, b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"),
               (500, b"<Error><Code>InternalError</Code></Error>"), (200, b"stored bytes"),
               (403, b"<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>")]
    server = Serve(lambda method, path, headers: answers.pop(0))
    bucket = S3Bucket.connect(S3Settings("b", endpoint=server.url, path_style=True,
                                         credentials=CredentialSettings("k", "s")), reactor)
    try:
        assert await bucket.get("k") == b"stored bytes"
        with pytest.raises(StorageUnavailable, match="403 ExpiredToken .The provided token has expired"):
            await bucket.get("k")
    finally:
        await bucket.close()
        server.close()
    assert len(server.requests) == 4 and all("AWS4-HMAC-SHA256" in r[2]["Authorization"] for r in server.requests)


@pytest_twisted.ensureDeferred
async def test_a_cancelled_save_aborts_its_multipart_upload(seaweedfs_server):
    from twisted.internet import reactor
    from twisted.internet.defer import CancelledError, Deferred

    bucket = new_s3_bucket(seaweedfs_server)
    try:
        store = ObjectStorage(bucket)
        started: Deferred[None] = Deferred()

        async def stream():
            async for chunk in pattern(b"cancelled", 24 << 20, chunk=1 << 20, yield_every=1):
                yield chunk
            reactor.callLater(0, started.callback, None)  # (cancelled while it waits, not while it runs)
            await Deferred()  # the rest never comes

        saving = store.save("example.com/cancel", "v1.0.0", b"{}", b"module x\n", stream())
        await started
        saving.cancel()
        with pytest.raises(CancelledError):
            await saving
        uploads = s3_request(seaweedfs_server, "GET", f"/{bucket.settings.bucket}?uploads=")[1]
        assert b"<UploadId>" not in uploads
        assert (await bucket.list("")).keys == []
    finally:
        await bucket.close()
