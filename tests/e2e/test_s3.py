"""
StorageType s3 end to end, configured only by Athens' ATHENS_*/AWS_* variables, on a real SeaweedFS:
the go command downloads through one proxy that fills the bucket from a git origin, then through a
second proxy on the same bucket that may not fetch anything; athens-admin and gc on that bucket.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.daemon import admin_command, source_env, start_daemon
from tests.e2e.conftest import fetcher_env, stop_cleanly
from tests.gotool import download_json, go_env, make_origins, run
from tests.servers import s3_request

pytestmark = pytest.mark.e2e

MODULE = "github.com/athens-s3/Upper-Case"


def s3_environ(server, bucket: str) -> dict[str, str]:
    """What an Athens operator sets for S3 (a MinIO-like endpoint: path-style)."""
    return {"ATHENS_STORAGE_TYPE": "s3", "AWS_REGION": "us-east-1", "ATHENS_S3_BUCKET_NAME": bucket,
            "AWS_ACCESS_KEY_ID": server.key, "AWS_SECRET_ACCESS_KEY": server.secret,
            "AWS_ENDPOINT": server.endpoint, "AWS_FORCE_PATH_STYLE": "true"}


@pytest.fixture
def bucket(seaweedfs_server) -> str:
    name = f"e2e{uuid.uuid4().hex}"
    assert s3_request(seaweedfs_server, "PUT", "/" + name)[0] == 200
    return name


def download_through(workdir: Path, env: dict[str, str]) -> dict:
    """``go mod download -json MODULE@v1.0.0`` through a daemon started with ``env`` (stopped after), a fresh cache."""
    daemon = start_daemon(workdir, env=env)
    try:
        work = workdir / "work"
        work.mkdir()
        (item,) = download_json(run(["go", "mod", "download", "-json", f"{MODULE}@v1.0.0"], work,
                                    go_env(work, workdir / "cache", daemon.url)).stdout)
        return item
    finally:
        stop_cleanly(daemon)


def test_go_downloads_through_a_proxy_on_s3_and_a_second_one_serves_the_bucket(tmp_path, seaweedfs_server, bucket):
    origins = make_origins(tmp_path / "origins")
    repo = origins.repo(MODULE)
    origins.commit(repo, {"go.mod": f"module {MODULE}\n\ngo 1.21\n",
                          "upper.go": 'package upper\n\nfunc Shout() string { return "S3" }\n'}, "v1.0.0")
    environ = s3_environ(seaweedfs_server, bucket)

    first = download_through(tmp_path / "filling", fetcher_env(origins, environ))
    assert "Error" not in first, first
    status, listing = s3_request(seaweedfs_server, "GET", f"/{bucket}?list-type=2")
    assert status == 200
    for ext in ("info", "mod", "zip"):  # Athens' layout, the path's case as it is
        assert f"<Key>{MODULE}/@v/v1.0.0.{ext}</Key>".encode() in listing

    second = download_through(tmp_path / "serving", {**environ, "ATHENS_NETWORK_MODE": "offline",
                                                     "ATHENS_DOWNLOAD_MODE": "none"})
    assert "Error" not in second, second
    assert second["Sum"] == first["Sum"] and second["GoModSum"] == first["GoModSum"]


def test_a_bucket_that_does_not_exist_stops_the_daemon_with_the_key_named(tmp_path, seaweedfs_server):
    with pytest.raises(RuntimeError, match=r"Storage\.S3\.Bucket: the bucket 'missing-bucket' .* does not exist"):
        start_daemon(tmp_path, env=s3_environ(seaweedfs_server, "missing-bucket"))


def admin(environ: dict[str, str], *args: str, check: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*admin_command(), *args], capture_output=True, text=True, env=source_env(environ),
                            timeout=300)
    assert result.returncode == check, result.stdout + result.stderr
    return result


def test_admin_commands_and_gc_on_s3(seeded_root, e2e, seaweedfs_server, bucket, tmp_path):
    root, _ = seeded_root
    environ = s3_environ(seaweedfs_server, bucket)
    target = tmp_path / "s3.toml"  # (copy reads its target from a file only)
    target.write_text(f'StorageType = "s3"\n[Storage.S3]\nRegion = "us-east-1"\nBucket = "{bucket}"\n'
                      f'Key = "{seaweedfs_server.key}"\nSecret = "{seaweedfs_server.secret}"\n'
                      f'Endpoint = "{seaweedfs_server.endpoint}"\nForcePathStyle = true\n')
    copied = admin({}, "--storage", "disk", "--storage-root", str(root), "copy", "--to-config", str(target))
    assert f"copied {len(e2e.seeded)}, already there 0" in copied.stdout
    listed = sorted(admin(environ, "list").stdout.splitlines())
    assert listed == sorted(k.replace("@", " ") for k in e2e.seeded)
    sums = {" ".join(line.split()[:2]): line.split()[2] for line in admin(environ, "verify").stdout.splitlines()}
    assert all(sums[k.replace("@", " ")] == e2e.direct[k]["Sum"] for k in e2e.seeded)
    victim = sorted(e2e.seeded)[0]
    assert admin(environ, "delete", victim).stdout.strip() == f"deleted {victim}"
    assert victim.replace("@", " ") not in admin(environ, "list").stdout
    assert "0 versions unused" in admin(environ, "gc", "--unused-days", "30").stderr
    assert len(admin(environ, "list").stdout.splitlines()) == len(e2e.seeded) - 1
    gone = admin(environ, "gc", "--unused-days", "0")  # everything was last used before now
    assert gone.stdout.count("deleted") == len(e2e.seeded) - 1
    assert admin(environ, "list").stdout == ""
