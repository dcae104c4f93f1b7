"""
Object-store emulators on free loopback ports, started by the tests:
Azurite (Microsoft's Azure Storage emulator, from the npm registry) and
fake-gcs-server (a Go module, built from the Go module proxy).  ``./run-tests``
installs both under ``.emulators/``; a missing one is an error, never a skip.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ElementTree
from email.utils import formatdate
from pathlib import Path

import attrs

from athens.storage.azureauth import string_to_sign
from tests.daemon import free_port
from tests.servers import _terminate, _wait_port

EMULATORS = Path(__file__).resolve().parent.parent / ".emulators"
AZURITE = EMULATORS / "azurite" / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
FAKE_GCS = EMULATORS / "bin" / "fake-gcs-server"

#: Azurite's one account and its published key (the emulator checks shared-key signatures with it).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _missing(what: Path) -> RuntimeError:
    return RuntimeError(f"{what} is missing: ./run-tests installs the object-store emulators into {EMULATORS}")


@attrs.define
class Azurite:
    process: subprocess.Popen
    port: int

    @property
    def endpoint(self) -> str:
        """The account's blob endpoint, path-style as the emulator serves it."""
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        """A request signed with the account key; ``path`` after the account (``/container?restype=...``)."""
        url = f"{self.endpoint}{path}"
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2023-11-03"}
        if method == "PUT":
            headers["Content-Length"] = "0"
        text = string_to_sign(AZURITE_ACCOUNT, method, url, headers)
        signature = base64.b64encode(hmac.new(base64.b64decode(AZURITE_KEY), text.encode(), hashlib.sha256).digest())
        headers["Authorization"] = f"SharedKey {AZURITE_ACCOUNT}:{signature.decode()}"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, url.removeprefix(f"http://127.0.0.1:{self.port}"),
                               b"" if method == "PUT" else None, headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def create_container(self, name: str | None = None) -> str:
        """A new empty container."""
        name = name or f"t{uuid.uuid4().hex}"
        status, body = self.request("PUT", f"/{name}?restype=container")
        assert status == 201, (status, body)
        return name

    def names(self, container: str, prefix: str = "") -> list[str]:
        """The blobs of a container (one page is plenty in a test)."""
        query = urllib.parse.urlencode({"restype": "container", "comp": "list", "prefix": prefix})
        status, body = self.request("GET", f"/{container}?{query}")
        assert status == 200, (status, body)
        return [n.text or "" for n in ElementTree.fromstring(body).iterfind("Blobs/Blob/Name")]

    def stop(self) -> None:
        _terminate(self.process)


def start_azurite(workdir: Path) -> Azurite:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is required for Azurite (apt-get install nodejs)")
    if not AZURITE.exists():
        raise _missing(AZURITE)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "azurite.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [node, str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
             "--extentMemoryLimit", "2048", "--disableTelemetry", "--silent"],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )
    _wait_port(port, process, "azurite", log, timeout=60)
    return Azurite(process, port)


@attrs.define
class FakeGCS:
    process: subprocess.Popen
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"t{uuid.uuid4().hex}"
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
            method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        return name

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        query = urllib.parse.urlencode({"prefix": prefix})
        with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b/{bucket}/o?{query}", timeout=30) as response:
            return [item["name"] for item in json.load(response).get("items", [])]

    def stop(self) -> None:
        _terminate(self.process)


def start_fake_gcs(workdir: Path) -> FakeGCS:
    if not FAKE_GCS.exists():
        raise _missing(FAKE_GCS)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "fake-gcs.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(FAKE_GCS), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
             "-public-host", f"127.0.0.1:{port}", "-external-url", f"http://127.0.0.1:{port}",
             "-log-level", "warn"],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )
    _wait_port(port, process, "fake-gcs-server", log)
    return FakeGCS(process, port)
