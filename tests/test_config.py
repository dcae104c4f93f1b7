from __future__ import annotations

import os
import subprocess
import sys

from pathlib import Path

import pytest

from athens.config import ConfigError, load, port_to_endpoint

HERE = os.path.dirname(__file__)
ATHENS_DEV = os.path.join(HERE, "data", "athens-config.dev.toml")


def write(tmp_path, text: str) -> str:
    path = tmp_path / "athens.toml"
    path.write_text(text)
    return str(path)


def test_athens_config_dev_toml_loads():
    config = load(ATHENS_DEV, environ={})
    assert config.storage_type == "memory"
    assert config.port == ":3000"
    assert config.log_level == "debug"
    assert config.disk_root == "/path/on/disk"
    assert config.listen_endpoint() == "tcp:3000"
    assert "Athens keys are accepted but not used by this version (in: " in " ".join(config.notes)
    assert config.warnings == ()
    assert config.go_env == ("GOPROXY=direct",) and config.global_endpoint == "http://localhost:3001"


def test_defaults_are_disk_on_port_3000(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load(None, environ={})
    assert (config.storage_type, config.port, config.log_format) == ("disk", ":3000", "plain")
    assert config.disk_root.endswith(os.path.join("athens-py", "storage"))


def test_athens_toml_in_the_working_directory_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'StorageType = "memory"\n')
    assert load(None, environ={}).storage_type == "memory"


def test_environment_overrides_file_and_options_override_environment(tmp_path):
    path = write(tmp_path, 'Port = ":4000"\nStorageType = "memory"\n[Storage.Disk]\nRootPath = "/from/file"\n')
    env = {"ATHENS_PORT": "127.0.0.1:5000", "ATHENS_STORAGE_TYPE": "disk", "ATHENS_DISK_STORAGE_ROOT": "/from/env",
           "ATHENS_LOG_LEVEL": "warning", "ATHENS_LOG_FORMAT": "json", "ATHENS_TIMEOUT": "30"}
    config = load(path, environ=env)
    assert config.port == "127.0.0.1:5000"
    assert config.listen_endpoint() == "tcp:5000:interface=127.0.0.1"
    assert (config.storage_type, config.disk_root, config.log_level, config.log_format) == ("disk", "/from/env", "warn", "json")
    assert config.timeout == 30
    config = load(path, environ=env, overrides={"storage_type": "memory", "disk_root": None})
    assert (config.storage_type, config.disk_root) == ("memory", "/from/env")


def test_port_falls_back_to_PORT_but_ATHENS_PORT_wins():
    assert load(None, environ={"PORT": "8080"}).port == "8080"
    assert load(None, environ={"PORT": "8080", "ATHENS_PORT": ":9090"}).port == ":9090"


@pytest.mark.parametrize(
    "text, key",
    [
        ('StorageType = "mongo"\n', "StorageType"),
        ('StorageType = "floppy"\n', "StorageType"),
        ('Port = "eighty"\n', "Port"),
        ("Port = 70000\n", "Port"),
        ('LogLevel = "loud"\n', "LogLevel"),
        ('LogFormat = "xml"\n', "LogFormat"),
        ("Timeout = -1\n", "Timeout"),
        ('ShutdownTimeout = "soon"\n', "ShutdownTimeout"),
        ("[Storage.Disk]\nRootPath = 7\n", "Storage.Disk.RootPath"),
    ],
)
def test_wrong_values_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text), environ={})
    assert str(e.value).startswith(key + ":")


def test_wrong_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="^ATHENS_STORAGE_TYPE:"):
        load(None, environ={"ATHENS_STORAGE_TYPE": "mongo"})


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file"):
        load(str(tmp_path / "missing.toml"), environ={})
    with pytest.raises(ConfigError, match="config file"):
        load(write(tmp_path, "Port = \n"), environ={})


def test_unknown_keys_are_reported(tmp_path):
    config = load(write(tmp_path, 'Prot = ":3000"\nEnablePprof = false\n'), environ={})
    assert [w for w in config.warnings if "Prot " in w] and "1 Athens keys are accepted" in " ".join(config.notes)


def test_typos_are_one_warning_a_name_and_athens_own_keys_none(tmp_path):
    """Item 21 of the hardening issue: sections included, unknown ATHENS_* variables too, one warning each."""
    text = ('TraceSamplingFraction = 0.5\nTLSCertFile = ""\n[Storage.Disk]\nRootPth = "/x"\n'
            '[Storage.S3]\nRegion = "eu"\nRegoin = "eu"\n[Index.Postgres.Params]\nsslmode = "disable"\n')
    config = load(write(tmp_path, text), environ={"ATHENS_TRACE_EXPORTER": "", "ATHENS_STORGE_TYPE": "disk",
                                                  "ATHENS_STORAGE_REDIS_ENDPOINT": "x:1"})
    assert sorted(w.split(": ", 1)[1].split(" ")[0] for w in config.warnings if w.startswith(str(tmp_path))) == [
        "Storage.Disk.RootPth", "Storage.S3.Regoin"]
    assert [w for w in config.warnings if w.startswith("ATHENS_")] == [
        "ATHENS_STORGE_TYPE is not a variable athens-py or Athens reads (a typo?): ignored"]
    assert all(len(note) < 300 for note in config.notes)


def test_athens_own_configuration_file_loads_without_a_warning():
    config = load(str(Path(__file__).parent / "data" / "athens-config.dev.toml"), environ={})
    assert config.warnings == ()


@pytest.mark.parametrize(
    "port, endpoint",
    [(":3000", "tcp:3000"), ("3000", "tcp:3000"), ("0.0.0.0:80", "tcp:80:interface=0.0.0.0"), ("[::1]:3000", r"tcp:3000:interface=\:\:1")],
)
def test_port_to_endpoint(port, endpoint):
    assert port_to_endpoint(port) == endpoint


def test_twistd_stops_with_a_message_naming_the_key(tmp_path):
    bad = write(tmp_path, 'StorageType = "mongo"\n')
    root = os.path.dirname(HERE)
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "athens", "--config", bad],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert result.returncode != 0
    assert "StorageType" in result.stdout + result.stderr


def test_tls_files_make_an_ssl_endpoint():
    config = load(None, environ={"ATHENS_PORT": "127.0.0.1:8443", "ATHENS_TLSCERT_FILE": "/etc/a:b/cert.pem",
                                 "ATHENS_TLSKEY_FILE": "/etc/key.pem", "BASIC_AUTH_PASS": "hunter2"})
    assert config.listen_endpoint() == r"ssl:8443:interface=127.0.0.1:privateKey=/etc/key.pem:certKey=/etc/a\:b/cert.pem"
    assert "hunter2" not in repr(config)


def test_gcp_and_azure_blob_settings_under_athens_names(tmp_path):
    from athens.storage.azure import AzureSettings
    from athens.storage.gcs import GCSSettings

    text = ('[Storage.GCP]\nProjectID = "p"\nBucket = "from-file"\nJSONKey = ""\n'
            '[Storage.AzureBlob]\nAccountName = "acct"\nAccountKey = "a2V5"\nManagedIdentityResourceId = "/mi"\n'
            'CredentialScope = "https://storage.azure.com/.default"\nContainerName = "gomods"\n')
    environ = {"ATHENS_STORAGE_GCP_BUCKET": "from-env", "GOOGLE_CLOUD_PROJECT": "q",
               "ATHENS_AZURE_ENDPOINT": "http://127.0.0.1:10000/acct", "STORAGE_EMULATOR_HOST": "localhost:4443"}
    config = load(write(tmp_path, text), environ=environ)
    assert config.warnings == ()
    gcs = GCSSettings.from_config(config, environ)
    assert (gcs.bucket, gcs.project, gcs.endpoint) == ("from-env", "q", "http://localhost:4443")
    azure = AzureSettings.from_config(config, environ)
    assert (azure.account, azure.container, azure.resource_id, azure.account_url) == (
        "acct", "gomods", "/mi", "http://127.0.0.1:10000/acct")
    assert "a2V5" not in repr(config) and "a2V5" not in repr(azure)
    config = load(write(tmp_path, text), environ={"ATHENS_AZURE_MANAGED_IDENTITY_RESOURCE_ID": "/other"})
    assert config.azure_managed_identity_resource_id == "/other"
    with pytest.raises(ConfigError, match="ATHENS_AZURE_ENDPOINT: 'blob' is not an http"):
        load(write(tmp_path, text), environ={"ATHENS_AZURE_ENDPOINT": "blob"})


@pytest.mark.parametrize("kind, why", [("mongo", "no MongoDB server"), ("external", "external storage protocol")])
def test_athens_storages_not_offered_say_why(kind, why):
    with pytest.raises(ConfigError, match=why):
        load(None, environ={"ATHENS_STORAGE_TYPE": kind})
