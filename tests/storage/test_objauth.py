"""
Credentials of the GCS and Azure clients against a small cloud the test
runs on loopback: a token endpoint that checks what it is sent (a JWT
verified with the test key, a refresh token, the metadata headers) and a
store that accepts only the tokens it handed out.
"""

from __future__ import annotations

import base64
import json
import types
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Site

from athens.config import ConfigError
from athens.storage.azure import AzureBucket, AzureSettings
from athens.storage.gcpauth import SCOPE
from athens.storage.gcs import GCSBucket, GCSSettings
from athens.storage.interface import StorageUnavailable
from athens.storage.tokens import CachedToken, Token


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Cloud(Resource):
    """Token endpoints and a bucket/container that wants ``Bearer <token it issued>``."""

    isLeaf = True

    def __init__(self, public_key: rsa.RSAPublicKey | None = None) -> None:
        super().__init__()
        self.public_key = public_key
        self.issued: list[str] = []
        self.grants: list[dict] = []
        #: Tokens the store no longer accepts (rotated away).
        self.revoked: set[str] = set()
        self.refuse_grant = False
        self.base = ""

    def render(self, request):  # noqa: N802 - Twisted's name
        path = request.path.decode()
        if path == "/token":
            return self._grant(request)
        if path.endswith("/token"):  # GCE or Azure metadata
            return self._metadata(request)
        auth = (request.getHeader("authorization") or "").removeprefix("Bearer ")
        if auth not in self.issued or auth in self.revoked:
            request.setResponseCode(401)
            return b'{"error": "bad token"}'
        request.setHeader("content-type", "application/json")
        return b'{"name": "b"}'

    def _issue(self, request, lifetime) -> bytes:
        token = f"token-{len(self.issued) + 1}"
        self.issued.append(token)
        request.setHeader("content-type", "application/json")
        return json.dumps({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}).encode()

    def _grant(self, request) -> bytes:
        form = {k.decode(): v[0].decode() for k, v in request.args.items()}
        self.grants.append(form)
        if self.refuse_grant:
            request.setResponseCode(400)
            return b'{"error": "invalid_grant", "error_description": "Invalid JWT Signature."}'
        if form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            header, claims, signature = form["assertion"].split(".")
            self.public_key.verify(_unb64url(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(),
                                   hashes.SHA256())  # raises (a 500) unless signed with the test key
            form["jwt_header"] = json.loads(_unb64url(header))
            form["jwt_claims"] = json.loads(_unb64url(claims))
        return self._issue(request, 3600)

    def _metadata(self, request) -> bytes:
        self.grants.append({"path": request.path.decode(), "query": parse_qs(urlsplit(request.uri.decode()).query),
                            "headers": {k.decode().lower(): v[0].decode() for k, v in
                                        request.requestHeaders.getAllRawHeaders()}})
        return self._issue(request, "3599")  # Azure's IMDS sends numbers as strings


@pytest_twisted.async_yield_fixture
async def cloud():
    from twisted.internet import reactor

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    resource = Cloud(private.public_key())
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    resource.base = f"http://127.0.0.1:{port.getHost().port}"
    resource.private = private
    yield resource
    await port.stopListening()


def _config(**values):
    defaults = dict(gcp_bucket="b", gcp_project="p", gcp_json_key="", timeout=30,
                    azure_account_name="acct", azure_container_name="c", azure_account_key="",
                    azure_managed_identity_resource_id="", azure_credential_scope="", azure_endpoint="")
    return types.SimpleNamespace(**{**defaults, **values})


def _service_account(cloud) -> dict:
    pem = cloud.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": "p", "private_key_id": "kid-1", "private_key": pem,
            "client_email": "athens@p.iam.gserviceaccount.com", "token_uri": cloud.base + "/token"}


def _gcs(cloud, settings: GCSSettings) -> GCSBucket:
    """A GCS client whose store is the test's cloud (the public endpoint replaced after the fact)."""
    from twisted.internet import reactor

    bucket = GCSBucket(settings, reactor)
    bucket.bucket_url = cloud.base + "/storage/v1/b/b"
    return bucket


@pytest_twisted.ensureDeferred
async def test_a_json_key_signs_a_jwt_that_buys_a_token_used_until_refused(cloud):
    key = base64.b64encode(json.dumps(_service_account(cloud)).encode()).decode()
    bucket = _gcs(cloud, GCSSettings.from_config(_config(gcp_json_key=key), environ={}))
    try:
        await bucket.ping()
        await bucket.ping()
        assert len(cloud.grants) == 1  # cached
        claims, header = cloud.grants[0]["jwt_claims"], cloud.grants[0]["jwt_header"]
        assert header == {"alg": "RS256", "typ": "JWT", "kid": "kid-1"}
        assert claims["iss"] == "athens@p.iam.gserviceaccount.com" and claims["scope"] == SCOPE
        assert claims["aud"] == cloud.base + "/token" and claims["exp"] - claims["iat"] == 3600
        cloud.revoked.add("token-1")  # the store answers 401: a new token, and the request goes through
        await bucket.ping()
        assert len(cloud.grants) == 2 and cloud.issued == ["token-1", "token-2"]
    finally:
        await bucket.close()


@pytest_twisted.ensureDeferred
async def test_a_refused_grant_makes_the_store_unavailable_with_the_reason(cloud):
    cloud.refuse_grant = True
    key = base64.b64encode(json.dumps(_service_account(cloud)).encode()).decode()
    bucket = _gcs(cloud, GCSSettings.from_config(_config(gcp_json_key=key), environ={}))
    try:
        with pytest.raises(StorageUnavailable, match="invalid_grant"):
            await bucket.ping()
    finally:
        await bucket.close()


@pytest_twisted.ensureDeferred
async def test_application_default_credentials_file_then_metadata_server(cloud, tmp_path):
    user = {"type": "authorized_user", "client_id": "id", "client_secret": "secret", "refresh_token": "refresh",
            "token_uri": cloud.base + "/token"}
    (tmp_path / "adc.json").write_text(json.dumps(user))
    environ = {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "adc.json")}
    bucket = _gcs(cloud, GCSSettings.from_config(_config(), environ=environ))
    try:
        await bucket.ping()
    finally:
        await bucket.close()
    assert cloud.grants[-1] == {"grant_type": "refresh_token", "client_id": "id", "client_secret": "secret",
                                "refresh_token": "refresh"}

    # No file anywhere (HOME without gcloud's): the metadata server, with the header it insists on.
    environ = {"HOME": str(tmp_path), "GCE_METADATA_HOST": cloud.base.removeprefix("http://")}
    bucket = _gcs(cloud, GCSSettings.from_config(_config(), environ=environ))
    try:
        await bucket.ping()
    finally:
        await bucket.close()
    asked = cloud.grants[-1]
    assert asked["path"] == "/computeMetadata/v1/instance/service-accounts/default/token"
    assert asked["headers"]["metadata-flavor"] == "Google" and asked["query"]["scopes"] == [SCOPE]


def test_credentials_that_cannot_work_stop_the_start(tmp_path):
    with pytest.raises(ConfigError, match="Storage.GCP.JSONKey: not base64"):
        GCSSettings.from_config(_config(gcp_json_key="{not base64"), environ={})
    bad = base64.b64encode(b'{"type": "service_account", "client_email": "a@b", "private_key": "nope"}').decode()
    with pytest.raises(ConfigError, match="Storage.GCP.JSONKey: private_key is not a PEM"):
        GCSSettings.from_config(_config(gcp_json_key=bad), environ={})
    with pytest.raises(ConfigError, match="GOOGLE_APPLICATION_CREDENTIALS: cannot read"):
        GCSSettings.from_config(_config(), environ={"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "none.json")})
    with pytest.raises(ConfigError, match="Storage.GCP.Bucket: required"):
        GCSSettings.from_config(_config(gcp_bucket=""), environ={})
    emulated = GCSSettings.from_config(_config(), environ={"STORAGE_EMULATOR_HOST": "127.0.0.1:4443"})
    assert emulated.endpoint == "http://127.0.0.1:4443" and emulated.key is None


@pytest_twisted.ensureDeferred
async def test_a_managed_identity_token_from_the_metadata_service(cloud):
    from twisted.internet import reactor

    config = _config(azure_managed_identity_resource_id="/subscriptions/s/resourceGroups/g/providers/"
                     "Microsoft.ManagedIdentity/userAssignedIdentities/athens",
                     azure_credential_scope="https://storage.azure.com/.default", azure_endpoint=cloud.base)
    bucket = AzureBucket(AzureSettings.from_config(config, {"AZURE_POD_IDENTITY_AUTHORITY_HOST": cloud.base}),
                         reactor)
    try:
        await bucket.ping()
        await bucket.ping()
    finally:
        await bucket.close()
    [asked] = cloud.grants
    assert asked["path"] == "/metadata/identity/oauth2/token" and asked["headers"]["metadata"] == "true"
    assert asked["query"]["resource"] == ["https://storage.azure.com"]  # the scope less /.default, as azidentity sends it
    assert asked["query"]["msi_res_id"] == [config.azure_managed_identity_resource_id]


def test_azure_settings_need_a_key_or_an_identity():
    with pytest.raises(ConfigError, match="AccountKey: required unless ManagedIdentityResourceID"):
        AzureSettings.from_config(_config(), {})
    with pytest.raises(ConfigError, match="AccountKey: AccountKey is not base64"):
        AzureSettings.from_config(_config(azure_account_key="not base64!"), {})
    with pytest.raises(ConfigError, match="ContainerName: required"):
        AzureSettings.from_config(_config(azure_container_name="", azure_account_key="a2V5"), {})
    settings = AzureSettings.from_config(_config(azure_account_key="a2V5"), {})
    assert settings.account_url == "https://acct.blob.core.windows.net"


@pytest_twisted.ensureDeferred
async def test_a_cached_token_is_fetched_once_for_concurrent_callers_and_again_before_it_expires():
    clock = Clock()
    fetched: list[object] = []
    from twisted.internet.defer import Deferred

    pending: list[Deferred] = []

    async def fetch() -> Token:
        fetched.append(clock.seconds())
        d: Deferred = Deferred()
        pending.append(d)
        return await d

    cache = CachedToken(fetch, clock, margin=300)
    first, second = cache.get(), cache.get()
    assert len(fetched) == 1
    pending.pop().callback(Token("a", clock.seconds() + 3600))
    assert (await first, await second) == ("a", "a")
    clock.advance(3600 - 301)
    assert await cache.get() == "a" and len(fetched) == 1
    clock.advance(2)  # within the margin: a new one
    refreshed = cache.get()
    pending.pop().callback(Token("b", clock.seconds() + 3600))
    assert await refreshed == "b" and len(fetched) == 2
