"""
Credentials for Azure Blob, as Athens takes them: the storage account's
shared key (``AccountKey``), or a managed identity (``ManagedIdentityResourceID``
with ``CredentialScope``) whose tokens come from the instance metadata
service.

The shared-key scheme is Azure's own HMAC-SHA256 over a canonical form of
the request.  No Azure library signs a request without its own blocking HTTP
pipeline around it, so the signature is computed here, exactly as Azure's
documentation lays it out, and checked by every test against Azurite (which
verifies shared-key signatures with its well-known account key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from email.utils import formatdate
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from athens.storage.interface import StorageError, StorageUnavailable
from athens.storage.objhttp import IAuth, StoreHTTP
from athens.storage.tokens import CachedToken, Token, bearer, parse_token

#: Where Azure virtual machines, scale sets and AKS nodes ask for their identities' tokens.
IMDS = "http://169.254.169.254"
#: The scope Azure Storage tokens are for when ``CredentialScope`` names none.
STORAGE_SCOPE = "https://storage.azure.com/.default"

#: Headers of the string to sign, in order, between the verb and the x-ms-* headers.
_SIGNED = ("content-encoding", "content-language", "content-length", "content-md5", "content-type", "date",
           "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range")


def decode_key(account_key: str) -> bytes:
    """An account key is base64; a wrong one fails at start-up, not at the first request."""
    try:
        key = base64.b64decode(account_key.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("AccountKey is not base64 (copy it from the storage account's access keys)") from None
    if not key:
        raise ValueError("AccountKey is empty")
    return key


def string_to_sign(account: str, method: str, url: str, headers: dict[str, str]) -> str:
    """Shared Key's canonical request (the form for service versions 2015-02-21 and later)."""
    lowered = {name.lower(): value.strip() for name, value in headers.items()}
    if lowered.get("content-length") == "0":
        lowered["content-length"] = ""  # an empty body signs as no length
    parts = [method.upper(), *(lowered.get(name, "") for name in _SIGNED)]
    canonical_headers = "".join(f"{name}:{lowered[name]}\n" for name in sorted(lowered) if name.startswith("x-ms-"))
    split = urlsplit(url)
    resource = f"/{account}{split.path or '/'}"
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(split.query, keep_blank_values=True):
        params.setdefault(name.lower(), []).append(value)
    resource += "".join(f"\n{name}:{','.join(sorted(values))}" for name, values in sorted(params.items()))
    return "\n".join(parts) + "\n" + canonical_headers + resource


@implementer(IAuth)
@attrs.frozen
class SharedKey:
    """Sign each request with the account key."""

    account: str
    key: bytes = attrs.field(repr=False)
    clock: IReactorTime

    def headers(self, method: str, url: str, headers: dict[str, str], length: int) -> Deferred[dict[str, str]]:
        signed = dict(headers)
        signed["x-ms-date"] = formatdate(self.clock.seconds(), usegmt=True)
        if length or method in ("PUT", "POST"):
            signed["Content-Length"] = str(length)  # what treq will send, signed as such
        text = string_to_sign(self.account, method, url, signed)
        digest = hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).digest()
        signature = base64.b64encode(digest).decode("ascii")
        added = {"x-ms-date": signed["x-ms-date"], "Authorization": f"SharedKey {self.account}:{signature}"}
        return succeed(added)

    def expired(self) -> None:
        """A key does not expire: a refusal is reported as it is."""


def scope_resource(scope: str) -> str:
    """The metadata service wants a resource, Azure identity libraries a scope: ``<resource>/.default``."""
    return scope.removesuffix("/.default")


@implementer(IAuth)
@attrs.define
class ManagedIdentity:
    """
    A bearer token of the managed identity named by its resource ID, from
    the instance metadata service (``AZURE_POD_IDENTITY_AUTHORITY_HOST``
    moves it, as Azure's identity libraries allow), cached and refreshed.
    """

    http: StoreHTTP
    resource_id: str
    scope: str = STORAGE_SCOPE
    endpoint: str = IMDS
    cache: CachedToken = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.cache = CachedToken(self._fetch, self.http.reactor)

    async def _fetch(self) -> Token:
        query: dict[str, str] = {"api-version": "2018-02-01", "resource": scope_resource(self.scope)}
        if self.resource_id:
            query["msi_res_id"] = self.resource_id
        url = f"{self.endpoint.rstrip('/')}/metadata/identity/oauth2/token?{urlencode(query)}"
        what = "a managed identity token from the metadata service"
        try:
            response = await self.http.request("GET", url, what, headers={"Metadata": "true"})
        except StorageUnavailable:
            raise
        except StorageError as e:  # an unknown identity, or an unexpected answer: no token either way
            raise StorageUnavailable(str(e)) from None
        return parse_token(await self.http.read(response, 64 << 10), self.http.reactor.seconds(),
                           f"{self.http.name}: {what}")

    def headers(self, method: str, url: str, headers: dict[str, str], length: int) -> Deferred[dict[str, str]]:
        return self.cache.get().addCallback(bearer)

    def expired(self) -> None:
        self.cache.expire()


def credentials(http: StoreHTTP, account: str, account_key: str, resource_id: str, scope: str,
                identity_endpoint: str = IMDS) -> IAuth:
    """Athens' order: a managed identity when one is named, else the account key."""
    if resource_id:
        return ManagedIdentity(http, resource_id, scope or STORAGE_SCOPE, identity_endpoint)
    return SharedKey(account, decode_key(account_key), http.reactor)
