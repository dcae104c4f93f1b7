"""``[OwnSumDB]`` settings: what starts, what stops start-up with a message naming the key, and sumdb-key."""

from __future__ import annotations

import os
import subprocess
import sys

import attrs
import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from athens import config as athens_config
from athens.config import ConfigError
from athens.service import build_origin
from athens.storage.memory import MemoryStorage
from athens.sumdb import MemoryLogStore, SignerKey, VerifierKey, build_own_sumdb, load_signer, open_log_store
from athens.sumdb._sqlstore import SQLLogStore
from athens.metrics import Metrics
from tests.daemon import REPO, source_env


def key_file(tmp_path, name: str = "sum.example.com", mode: int = 0o600):
    path = tmp_path / "sumdb.key"
    path.write_text(SignerKey.generate(name).text() + "\n")
    path.chmod(mode)
    return path


def configured(tmp_path, **environ: str) -> athens_config.Config:
    return athens_config.load(path=os.devnull, environ={"ATHENS_DISK_STORAGE_ROOT": str(tmp_path / "root"),
                                                        **environ})


def test_no_name_no_database(tmp_path):
    assert build_own_sumdb(configured(tmp_path), None, None, Metrics()) is None


@pytest.mark.parametrize("setup, words", [
    (lambda p: "", "OwnSumDB.KeyFile: required with OwnSumDB.Name (create a key pair with `athens-admin sumdb-key"),
    (lambda p: str(p / "missing.key"), "OwnSumDB.KeyFile: cannot read"),
    (lambda p: (p / "bad.key").write_text("sum.example.com+00000000+AAAA") and str(p / "bad.key"),
     "not a signer key"),
    (lambda p: str(key_file(p, "sum.other.com")), "holds the key of sum.other.com, not of OwnSumDB.Name"),
])
def test_a_key_file_that_does_not_do_stops_start_up(tmp_path, setup, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)").replace("`", ".")):
        load_signer(setup(tmp_path), "sum.example.com")


def test_a_key_others_can_read_is_used_with_a_warning(tmp_path):
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        key = load_signer(str(key_file(tmp_path, mode=0o644)), "sum.example.com")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert key.name == "sum.example.com"
    assert any("chmod 600" in e.get("log_format", "") for e in events)


@pytest.mark.parametrize("value", ["a b", "sum.example.com/x", "+x", "-x", "sum+x"])
def test_a_name_that_cannot_be_a_path_segment_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="ATHENS_OWN_SUMDB_NAME"):
        configured(tmp_path, ATHENS_OWN_SUMDB_NAME=value)


def test_the_settings_are_read_from_toml_without_warnings(tmp_path):
    path = tmp_path / "athens.toml"
    path.write_text('[OwnSumDB]\nName = "sum.example.com"\nKeyFile = "/k"\nPatterns = ["github.com/corp", "x.io"]\n')
    config = athens_config.load(path=str(path), environ={})
    assert (config.own_sumdb_name, config.own_sumdb_key_file, config.own_sumdb_patterns) == (
        "sum.example.com", "/k", ("github.com/corp", "x.io"))
    assert not config.warnings


@pytest_twisted.ensureDeferred
async def test_the_log_follows_the_storage_type(tmp_path):
    config = configured(tmp_path, ATHENS_OWN_SUMDB_NAME="sum.example.com")
    assert isinstance(open_log_store(attrs.evolve(config, storage_type="memory"), "x"), MemoryLogStore)
    disk = open_log_store(config, "sum.example.com")
    assert isinstance(disk, SQLLogStore) and (tmp_path / "root" / ".athens-sumdb-log").is_dir()
    await disk.close()
    with pytest.raises(ConfigError, match="cannot be kept in StorageType s3 yet"):
        open_log_store(attrs.evolve(config, storage_type="s3"), "x")
    with pytest.raises(ConfigError, match="Storage.Postgres.URL"):
        open_log_store(attrs.evolve(config, storage_type="postgres"), "x")


def test_its_name_may_not_be_a_carried_database(tmp_path):
    config = configured(tmp_path, ATHENS_OWN_SUMDB_NAME="sum.golang.org",
                        ATHENS_OWN_SUMDB_KEY_FILE=str(key_file(tmp_path, "sum.golang.org")))
    with pytest.raises(ConfigError, match="also a checksum database this proxy carries"):
        build_own_sumdb(config, None, None, Metrics())


def test_the_service_builds_it_and_names_no_private_module_upstream(tmp_path):
    config = configured(tmp_path, ATHENS_STORAGE_TYPE="memory", ATHENS_OWN_SUMDB_NAME="sum.example.com",
                        ATHENS_OWN_SUMDB_KEY_FILE=str(key_file(tmp_path)),
                        ATHENS_OWN_SUMDB_PATTERNS="github.com/corp", ATHENS_GONOSUM_PATTERNS="git.example.com")
    origin = build_origin(config, MemoryStorage(), Clock())
    own = origin.stash.own
    assert own is not None and own.name == "sum.example.com"
    assert own.private("github.com/corp/x") and own.private("git.example.com/y") and not own.private("golang.org/x")
    assert own.upstream is origin.stash.verifier
    assert own.upstream.skips("github.com/corp/x") and own.upstream.skips("git.example.com/y")
    assert origin.fetcher.no_sum_patterns == ("git.example.com", "github.com/corp")  # the go command's GONOSUMDB
    config = attrs.evolve(config, verify_checksums=False)
    origin = build_origin(config, MemoryStorage(), Clock())
    assert origin.stash.verifier is None and origin.stash.own.upstream is not None  # still asked for the log


def test_sumdb_key_writes_a_private_file_once(tmp_path):
    path = tmp_path / "k"

    def admin() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "athens.cli", "sumdb-key", "sum.example.com", "--key-file",
                               str(path)], capture_output=True, text=True, cwd=REPO, env=source_env(), timeout=60)

    created = admin()
    assert created.returncode == 0, created.stderr
    signer = SignerKey.parse(path.read_text())
    assert VerifierKey.parse(created.stdout.strip()) == signer.verifier()
    assert path.stat().st_mode & 0o777 == 0o600 and "GOSUMDB=" in created.stderr
    again = admin()
    assert again.returncode == 1 and "never overwritten" in again.stderr
    assert SignerKey.parse(path.read_text()) == signer
