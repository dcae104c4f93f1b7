"""athens-admin list, verify, delete and copy, on disk, Redis and PostgreSQL stores."""

from __future__ import annotations

import subprocess
import uuid

import psycopg
import pytest

from tests.daemon import admin_command, source_env

pytestmark = pytest.mark.e2e


def admin(*args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*admin_command(), *args], capture_output=True, text=True, env=source_env(), timeout=300)
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


@pytest.fixture
def stores(tmp_path, redis_server, postgres_server):
    """Config files for an empty disk, Redis and PostgreSQL store."""
    database = f"admin{uuid.uuid4().hex}"
    with psycopg.connect(postgres_server.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {database}")
    configs = {
        "disk": f'StorageType = "disk"\n[Storage.Disk]\nRootPath = "{tmp_path / "disk"}"\n',
        "redis": f'StorageType = "redis"\n[Storage.Redis]\nEndpoint = "{redis_server.endpoint}"\n'
                 f'KeyPrefix = "admin-{uuid.uuid4().hex}:"\n',
        "postgres": f'StorageType = "postgres"\n[Storage.Postgres]\n'
                    f'URL = "{postgres_server.url.rsplit("/", 1)[0]}/{database}"\n',
    }
    paths = {}
    for name, text in configs.items():
        paths[name] = tmp_path / f"{name}.toml"
        paths[name].write_text(text)
    return paths


def test_admin_commands_on_every_store(stores, seeded_root, e2e):
    root, _ = seeded_root
    source = ["--storage", "disk", "--storage-root", str(root)]
    copied = admin(*source, "copy", "--to-config", str(stores["disk"]))
    assert f"copied {len(e2e.seeded)}, already there 0" in copied.stdout
    assert "100%" in copied.stderr
    again = admin(*source, "copy", "--to-config", str(stores["disk"]))  # what is there is kept, and counted
    assert f"copied 0, already there {len(e2e.seeded)}" in again.stdout
    previous = stores["disk"]
    remaining = sorted(e2e.seeded)
    for name in ("disk", "redis", "postgres"):
        config = ["--config", str(stores[name])]
        if name != "disk":  # disk -> redis -> postgres
            admin("--config", str(previous), "copy", "--to-config", str(stores[name]))
        assert sorted(admin(*config, "list").stdout.splitlines()) == sorted(k.replace("@", " ") for k in remaining)
        lines = admin(*config, "verify").stdout.splitlines()
        sums = {" ".join(line.split()[:2]): line.split()[2] for line in lines}
        for key in remaining:
            assert sums[key.replace("@", " ")] == e2e.direct[key]["Sum"], (name, key)
        victim = remaining.pop(0)
        assert admin(*config, "delete", victim).stdout.strip() == f"deleted {victim}"
        assert victim.replace("@", " ") not in admin(*config, "list").stdout
        assert admin(*config, "delete", victim, check=1).returncode == 1
        previous = stores[name]


def age_all_but(name: str, config_path, keep: str, redis_server, days: float = 40) -> None:
    """Make every stored version look unused for ``days``, except ``keep`` (module@version)."""
    import os
    import time
    import tomllib

    config = tomllib.loads(config_path.read_text())
    old = time.time() - days * 86400
    if name == "disk":
        root = config["Storage"]["Disk"]["RootPath"]
        for dirpath, _, files in os.walk(root):
            version = os.path.basename(dirpath)
            if f"{version}.info" in files:
                module = os.path.relpath(os.path.dirname(dirpath), root)
                if f"{module}@{version}" != keep:
                    os.utime(dirpath, (old, old))
    elif name == "redis":
        prefix = config["Storage"]["Redis"]["KeyPrefix"]
        for line in admin("--config", str(config_path), "list").stdout.splitlines():
            module, version = line.split()
            if f"{module}@{version}" != keep:
                assert redis_server.cli("HSET", f"{prefix}v:{module}@{version}", "used", repr(old)).startswith(":")
    else:
        with psycopg.connect(config["Storage"]["Postgres"]["URL"], autocommit=True) as c:
            c.execute("UPDATE athens_versions SET used = to_timestamp(%s) "
                      "WHERE module || '@' || version <> %s", (old, keep))


def test_gc_deletes_what_nobody_used_on_every_store(stores, seeded_root, e2e, redis_server):
    root, _ = seeded_root
    keep = sorted(e2e.seeded)[-1]
    for name in ("disk", "redis", "postgres"):
        config = ["--config", str(stores[name])]
        admin("--storage", "disk", "--storage-root", str(root), "copy", "--to-config", str(stores[name]))
        age_all_but(name, stores[name], keep, redis_server)
        dry = admin(*config, "gc", "--unused-days", "30", "--dry-run")
        assert dry.stdout.count("would delete") == len(e2e.seeded) - 1, (name, dry.stdout)
        assert len(admin(*config, "list").stdout.splitlines()) == len(e2e.seeded)
        done = admin(*config, "gc", "--unused-days", "30")
        assert done.stdout.count("deleted") == len(e2e.seeded) - 1
        assert admin(*config, "list").stdout.split() == keep.split("@"), name


def test_admin_on_a_redis_that_is_down_fails_at_once():
    """Item 14 of the hardening issue: a clear error in seconds, not a 30 s hang."""
    import time

    from tests.daemon import free_port

    started = time.monotonic()
    result = subprocess.run(
        [*admin_command(), "--storage", "redis", "list"], capture_output=True, text=True, timeout=60,
        env=source_env({"ATHENS_STORAGE_REDIS_ENDPOINT": f"127.0.0.1:{free_port()}"}))
    assert result.returncode != 0
    assert "redis" in (result.stdout + result.stderr).lower()
    assert time.monotonic() - started < 10, result.stdout + result.stderr
