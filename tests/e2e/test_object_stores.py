"""
The daemon on Google Cloud Storage and on Azure Blob (their emulators): the
real go command downloads a module the daemon fetched from its git origin,
and the bucket holds the version exactly where Athens puts it.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.daemon import start_daemon
from tests.e2e.conftest import SIMPLE, fetcher_env, stop_cleanly
from tests.e2e.test_fill import download, fetches
from tests.objectservers import AZURITE_ACCOUNT, AZURITE_KEY

pytestmark = pytest.mark.e2e

VERSION = "v1.1.0"
#: What Athens' gcp and azureblob storage write for a version.
ATHENS_KEYS = [f"{SIMPLE}/@v/{VERSION}.{ext}" for ext in ("info", "mod", "zip")]


def serve_from_origin(tmp_path, e2e, storage_env: dict[str, str], storage: str) -> None:
    daemon = start_daemon(tmp_path / "daemon", "--log-level", "debug", env=fetcher_env(e2e.origins, storage_env))
    try:
        with urllib.request.urlopen(daemon.url + "/version") as r:
            assert json.loads(r.read())["storage"] == storage
        for client in ("first", "second"):  # the second is served from the bucket
            got, _ = download(tmp_path / client, daemon, f"{SIMPLE}@{VERSION}")
            item = got[f"{SIMPLE}@{VERSION}"]
            assert (item["Sum"], item["GoModSum"]) == (e2e.direct[f"{SIMPLE}@{VERSION}"]["Sum"],
                                                       e2e.direct[f"{SIMPLE}@{VERSION}"]["GoModSum"])
        assert fetches(daemon, f"{SIMPLE}@{VERSION}") == 1
    finally:
        stop_cleanly(daemon)


def test_the_daemon_on_google_cloud_storage(tmp_path, e2e, fake_gcs):
    bucket = fake_gcs.create_bucket()
    serve_from_origin(tmp_path, e2e, {"ATHENS_STORAGE_TYPE": "gcp", "ATHENS_STORAGE_GCP_BUCKET": bucket,
                                      "STORAGE_EMULATOR_HOST": fake_gcs.endpoint.removeprefix("http://")}, "gcp")
    assert sorted(k for k in fake_gcs.names(bucket, SIMPLE) if not k.endswith(".used")) == ATHENS_KEYS


def test_the_daemon_on_azure_blob(tmp_path, e2e, azurite):
    container = azurite.create_container()
    serve_from_origin(tmp_path, e2e, {
        "ATHENS_STORAGE_TYPE": "azureblob", "ATHENS_AZURE_ACCOUNT_NAME": AZURITE_ACCOUNT,
        "ATHENS_AZURE_ACCOUNT_KEY": AZURITE_KEY, "ATHENS_AZURE_CONTAINER_NAME": container,
        "ATHENS_AZURE_ENDPOINT": azurite.endpoint}, "azureblob")
    assert sorted(k for k in azurite.names(container, SIMPLE) if not k.endswith(".used")) == ATHENS_KEYS
