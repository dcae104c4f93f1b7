"""
Credentials for Google Cloud Storage, in the order Athens (through Google's
libraries) looks for them: ``[Storage.GCP] JSONKey`` (a service-account key,
base64), else application default credentials: the file named by
``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's well-known file, then the
metadata server of the machine (GCE, GKE, Cloud Run).

A service account signs a JWT with its RSA key (RS256, with ``cryptography``)
and trades it at the key's ``token_uri`` for an access token; a gcloud user
trades its refresh token; the metadata server hands tokens out.  Google's
auth library does the same, but only over blocking HTTP: here each token is
fetched with treq, cached and refreshed by :class:`CachedToken`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any, Mapping, Union
from urllib.parse import urlencode

import attrs
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from athens.storage.interface import StorageError, StorageUnavailable
from athens.storage.objhttp import IAuth, StoreHTTP
from athens.storage.tokens import CachedToken, Token, bearer, parse_token

#: Read and write objects: what Athens' client asks for.
SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
TOKEN_URI = "https://oauth2.googleapis.com/token"
#: The metadata server's address on Google's machines; ``GCE_METADATA_HOST`` moves it (as Google's libraries allow).
METADATA_HOST = "169.254.169.254"
#: Lifetime asked for a service account's assertion (Google's maximum).
ASSERTION_LIFETIME = 3600


@attrs.frozen
class ServiceAccountKey:
    """The parts of a service-account JSON key a token needs."""

    client_email: str
    private_key: str = attrs.field(repr=False)
    private_key_id: str
    token_uri: str = TOKEN_URI


@attrs.frozen
class AuthorizedUser:
    """gcloud's ``application-default login`` credentials: a refresh token."""

    client_id: str
    client_secret: str = attrs.field(repr=False)
    refresh_token: str = attrs.field(repr=False)
    token_uri: str = TOKEN_URI


GoogleKey = Union[ServiceAccountKey, AuthorizedUser]


def parse_key(data: bytes) -> GoogleKey:
    """A credentials JSON file; ValueError saying what is wrong with it."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")

    def field(name: str, default: str | None = None) -> str:
        value = doc.get(name, default)
        if not isinstance(value, str) or not (value or default is not None):
            raise ValueError(f"no {name}")
        return value

    kind = doc.get("type")
    token_uri = field("token_uri", TOKEN_URI) or TOKEN_URI
    if not token_uri.startswith(("https://", "http://")):
        raise ValueError(f"token_uri {token_uri[:80]!r} is not an http(s) URL")
    if kind == "service_account":
        key = ServiceAccountKey(field("client_email"), field("private_key"), field("private_key_id", ""), token_uri)
        _load_rsa(key.private_key)
        return key
    if kind == "authorized_user":
        return AuthorizedUser(field("client_id"), field("client_secret"), field("refresh_token"), token_uri)
    raise ValueError(f"credentials of type {str(kind)[:40]!r} are not supported (service_account, authorized_user)")


def decode_json_key(json_key: str) -> GoogleKey:
    """Athens' ``JSONKey``: the key file in standard base64."""
    try:
        data = base64.b64decode(json_key.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 (Athens takes the key file base64-encoded)") from None
    return parse_key(data)


def application_default(environ: Mapping[str, str]) -> GoogleKey | None:
    """
    The credentials file Google's libraries would use, or None for the
    metadata server.  Read at start-up, before the reactor runs.
    """
    named = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named:
        path = Path(named)
    else:
        config = environ.get("CLOUDSDK_CONFIG") or os.path.join(environ.get("HOME") or os.path.expanduser("~"),
                                                                 ".config", "gcloud")
        path = Path(config) / "application_default_credentials.json"
        if not path.is_file():
            return None
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"GOOGLE_APPLICATION_CREDENTIALS: cannot read {path}: {e.strerror}") from None
    try:
        return parse_key(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _load_rsa(pem: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError):
        raise ValueError("private_key is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("private_key is not an RSA key")
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def assertion(key: ServiceAccountKey, signer: rsa.RSAPrivateKey, now: int, scope: str = SCOPE) -> str:
    """The signed JWT a service account trades for a token (OAuth 2.0 JWT bearer grant, RS256)."""
    header = {"alg": "RS256", "typ": "JWT", "kid": key.private_key_id}
    claims = {"iss": key.client_email, "scope": scope, "aud": key.token_uri, "iat": now,
              "exp": now + ASSERTION_LIFETIME}
    signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    signature = signer.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64url(signature)


@implementer(IAuth)
@attrs.define
class OAuth:
    """Bearer tokens from a key (service account or user) or the metadata server."""

    http: StoreHTTP
    key: GoogleKey | None
    metadata_host: str = METADATA_HOST
    cache: CachedToken = attrs.field(init=False)
    _signer: Any = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.cache = CachedToken(self._fetch, self.http.reactor)
        if isinstance(self.key, ServiceAccountKey):
            self._signer = _load_rsa(self.key.private_key)

    async def _fetch(self) -> Token:
        now = self.http.reactor.seconds()
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        if isinstance(self.key, ServiceAccountKey):
            what = f"an access token for {self.key.client_email}"
            body = urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                              "assertion": assertion(self.key, self._signer, int(now))}).encode()
            request = ("POST", self.key.token_uri, form, body)
        elif isinstance(self.key, AuthorizedUser):
            what = "an access token for the gcloud user credentials"
            body = urlencode({"grant_type": "refresh_token", "client_id": self.key.client_id,
                              "client_secret": self.key.client_secret,
                              "refresh_token": self.key.refresh_token}).encode()
            request = ("POST", self.key.token_uri, form, body)
        else:
            what = "an access token from the metadata server"
            url = (f"http://{self.metadata_host}/computeMetadata/v1/instance/service-accounts/default/token?"
                   + urlencode({"scopes": SCOPE}))
            request = ("GET", url, {"Metadata-Flavor": "Google"}, None)
        method, url, headers, data = request
        try:
            response = await self.http.request(method, url, what, headers=headers, data=data)
        except StorageUnavailable:
            raise
        except StorageError as e:  # a refused grant (400 invalid_grant...): no token, so no store
            raise StorageUnavailable(str(e)) from None
        return parse_token(await self.http.read(response, 64 << 10), now, f"{self.http.name}: {what}")

    def headers(self, method: str, url: str, headers: dict[str, str], length: int) -> Deferred[dict[str, str]]:
        return self.cache.get().addCallback(bearer)

    def expired(self) -> None:
        self.cache.expire()


@implementer(IAuth)
class Anonymous:
    """No credentials: what an emulator (``STORAGE_EMULATOR_HOST``) expects."""

    def headers(self, method: str, url: str, headers: dict[str, str], length: int) -> Deferred[dict[str, str]]:
        return succeed({})

    def expired(self) -> None:
        """Nothing to forget."""
