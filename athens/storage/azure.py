"""
Azure Blob Storage as an IBucket, over its REST API with treq.

Small objects go up with one Put Blob; a stream goes up as blocks of
:attr:`AzureSettings.block_size` (Put Block, one block in memory at a time)
committed by one Put Block List at the end.  Until that commit the blob is
not there for any reader: blocks never committed are invisible to Get Blob
and List Blobs and are discarded by Azure after a week, so a failed upload
leaves nothing to clean.
"""

from __future__ import annotations

import base64
import os
import uuid
from email.utils import parsedate_to_datetime
import xml.etree.ElementTree as ElementTree
from typing import Any, AsyncIterable, Mapping
from urllib.parse import quote, urlencode

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool
from twisted.web.iweb import IResponse
from zope.interface import implementer

from athens.storage.azureauth import IMDS, credentials
from athens.storage.bucket import IBucket, Listing, ObjectExists
from athens.storage.interface import NotFound, StorageError, StorageUnavailable, rechunk
from athens.storage.objhttp import Backoff, StoreHTTP, StreamBlob, content_length

log = Logger()

#: The service version every request asks for (Azurite 3.37 knows it).
API_VERSION = "2023-11-03"
#: Azure's public cloud; ``Endpoint`` replaces it (Azurite, sovereign clouds, private endpoints).
PUBLIC_ENDPOINT = "https://{account}.blob.core.windows.net"


@attrs.frozen
class AzureSettings:
    """What the Azure Blob client needs, from ``[Storage.AzureBlob]``."""

    account: str
    container: str
    account_key: str = attrs.field(default="", repr=False)
    #: A managed identity's resource ID: its tokens replace the account key.
    resource_id: str = ""
    #: The scope of those tokens (``https://storage.azure.com/.default``).
    scope: str = ""
    #: The account's blob endpoint; ``""`` is ``https://<account>.blob.core.windows.net``.
    endpoint: str = ""
    #: Where managed identity tokens come from.
    identity_endpoint: str = IMDS
    #: Seconds a request may keep being retried while the store throttles (``Timeout``).
    timeout: float = 300.0
    #: Bytes per block of a streamed upload, and the size from which a stream is sent in blocks.
    block_size: int = 4 << 20

    @property
    def account_url(self) -> str:
        return (self.endpoint or PUBLIC_ENDPOINT.format(account=self.account)).rstrip("/")

    @classmethod
    def from_config(cls, config: Any, environ: Mapping[str, str] = os.environ) -> "AzureSettings":
        """Athens' checks: an account, a container, and either a key or a managed identity with its scope."""
        from athens.config import ConfigError

        if not config.azure_account_name:
            raise ConfigError("Storage.AzureBlob.AccountName: required for StorageType azureblob")
        if not config.azure_container_name:
            raise ConfigError("Storage.AzureBlob.ContainerName: required for StorageType azureblob")
        if not config.azure_account_key and not config.azure_managed_identity_resource_id:
            raise ConfigError("Storage.AzureBlob.AccountKey: required unless ManagedIdentityResourceID is set")
        settings = cls(
            account=config.azure_account_name,
            container=config.azure_container_name,
            account_key=config.azure_account_key,
            resource_id=config.azure_managed_identity_resource_id,
            scope=config.azure_credential_scope,
            endpoint=config.azure_endpoint,
            identity_endpoint=environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST") or IMDS,
            timeout=float(config.timeout),
        )
        if not settings.resource_id:
            from athens.storage.azureauth import decode_key

            try:
                decode_key(settings.account_key)
            except ValueError as e:
                raise ConfigError(f"Storage.AzureBlob.AccountKey: {e}") from None
        return settings


def _block_id(upload: str, index: int) -> str:
    """Block IDs of one blob must all have the same length: 42 bytes, so 56 base64 characters."""
    return base64.b64encode(f"{upload}-{index:09d}".encode("ascii")).decode("ascii")


@implementer(IBucket)
class AzureBucket:
    """One container of a storage account."""

    name = "azureblob"

    def __init__(self, settings: AzureSettings, reactor: Any, pool: HTTPConnectionPool | None = None) -> None:
        self.settings = settings
        self.http = StoreHTTP(self.name, reactor, Backoff(deadline=settings.timeout), pool=pool)
        self.auth = credentials(self.http, settings.account, settings.account_key, settings.resource_id,
                                settings.scope, settings.identity_endpoint)
        self.container_url = f"{settings.account_url}/{quote(settings.container, safe='')}"

    def _url(self, key: str, **query: str) -> str:
        url = f"{self.container_url}/{quote(key, safe='/~')}"
        return f"{url}?{urlencode(query)}" if query else url

    async def _call(self, method: str, url: str, what: str, expect: tuple[int, ...] = (200,),
                    headers: dict[str, str] | None = None, data: bytes | None = None,
                    timeout: float | None = None) -> IResponse:
        sent = {"x-ms-version": API_VERSION, **(headers or {})}
        return await self.http.request(method, url, what, expect, sent, data, self.auth, timeout)

    def get(self, key: str) -> Deferred[bytes]:
        async def get() -> bytes:
            response = await self._call("GET", self._url(key), f"get {key}")
            return await self.http.read(response)

        return ensureDeferred(get())

    def open(self, key: str) -> Deferred[StreamBlob]:
        async def open_() -> StreamBlob:
            response = await self._call("GET", self._url(key), f"get {key}")
            return self.http.stream(response, content_length(response, self.name))

        return ensureDeferred(open_())

    def put(self, key: str, data: bytes, exclusive: bool = False) -> Deferred[None]:
        return ensureDeferred(self._put(key, bytes(data), exclusive))

    async def _write(self, url: str, what: str, key: str, headers: dict[str, str], data: bytes,
                     exclusive: bool) -> None:
        """
        Put Blob or Put Block List.  ``exclusive`` asks Azure to refuse if a
        blob is there (409 BlobAlreadyExists, or 412).  A commit whose blocks
        another writer's commit discarded meanwhile (400 InvalidBlockList)
        lost the race the same way.
        """
        if exclusive:
            headers = {**headers, "If-None-Match": "*"}
        response = await self._call("PUT", url, what, (201, 400, 409, 412), headers, data,
                                    timeout=self.settings.timeout)
        if response.code == 201:
            await self.http.discard(response)
            return
        detail = await self.http.detail(response)
        lost = response.code in (409, 412) or (detail == "InvalidBlockList" and await self.exists(key))
        if exclusive and lost:
            raise ObjectExists(f"{self.name}: {key}: already there")
        raise StorageError(f"{self.name}: {what}: unexpected answer {response.code} {detail}")

    async def _put(self, key: str, data: bytes, exclusive: bool) -> None:
        headers = {"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"}
        await self._write(self._url(key), f"put {key}", key, headers, data, exclusive)

    def upload(self, key: str, chunks: AsyncIterable[bytes], exclusive: bool = False) -> Deferred[int]:
        return ensureDeferred(self._upload(key, chunks, exclusive))

    async def _upload(self, key: str, chunks: AsyncIterable[bytes], exclusive: bool) -> int:
        size = self.settings.block_size
        pieces = rechunk(chunks, size).__aiter__()
        piece = await anext(pieces, None)
        if piece is None or len(piece) < size:  # the whole object is in hand: one request
            await self._put(key, piece or b"", exclusive)
            return len(piece or b"")
        upload = uuid.uuid4().hex
        ids: list[str] = []
        total = 0
        try:
            while piece is not None:
                block = _block_id(upload, len(ids))
                response = await self._call("PUT", self._url(key, comp="block", blockid=block),
                                            f"put block {len(ids)} of {key}", (201,), data=piece,
                                            timeout=self.settings.timeout)
                await self.http.discard(response)
                ids.append(block)
                total += len(piece)
                piece = await anext(pieces, None)
        except BaseException:
            await self._drop_blocks(key)
            raise
        body = ('<?xml version="1.0" encoding="utf-8"?><BlockList>'
                + "".join(f"<Latest>{block}</Latest>" for block in ids) + "</BlockList>").encode("ascii")
        headers = {"x-ms-blob-content-type": "application/octet-stream", "Content-Type": "application/xml"}
        await self._write(self._url(key, comp="blocklist"), f"commit {key}", key, headers, body, exclusive)
        return total

    async def _drop_blocks(self, key: str) -> None:
        """
        Discard the blocks of an upload that will never be committed, as
        Azure's own advice has it (Delete Blob), but only where no committed
        blob is there to lose.  Left alone they are invisible and expire
        within a week; dropped, an exclusive write of the key can go ahead at
        once (Azurite, unlike Azure's documentation of ``If-None-Match: *``,
        counts a blob of uncommitted blocks as existing).
        """
        try:
            if not await self.exists(key):
                response = await self._call("DELETE", self._url(key), f"drop the blocks of {key}", (202, 404))
                await self.http.discard(response)
        except StorageError as e:
            log.warn("azureblob: {key}: the blocks of a failed upload stay until Azure expires them: {error}",
                     key=key, error=str(e))

    def exists(self, key: str) -> Deferred[bool]:
        async def exists() -> bool:
            response = await self._call("HEAD", self._url(key), f"head {key}", (200, 404))
            await self.http.discard(response)
            return response.code == 200

        return ensureDeferred(exists())

    def delete(self, key: str) -> Deferred[None]:
        async def delete() -> None:
            response = await self._call("DELETE", self._url(key), f"delete {key}", (202, 404))
            await self.http.discard(response)

        return ensureDeferred(delete())

    def list(self, prefix: str, delimiter: str = "", token: str = "", limit: int = 1000) -> Deferred[Listing]:
        return ensureDeferred(self._list(prefix, delimiter, token, limit))

    async def _list(self, prefix: str, delimiter: str, token: str, limit: int) -> Listing:
        query = {"restype": "container", "comp": "list", "maxresults": str(max(1, min(limit, 5000)))}
        for name, value in (("prefix", prefix), ("delimiter", delimiter), ("marker", token)):
            if value:
                query[name] = value
        url = f"{self.container_url}?{urlencode(query)}"
        response = await self._call("GET", url, f"list {prefix}")
        return parse_listing(await self.http.read(response), self.name)

    def ping(self) -> Deferred[None]:
        async def ping() -> None:
            try:
                response = await self._call("GET", f"{self.container_url}?restype=container", "container properties")
            except NotFound:
                raise StorageUnavailable(f"{self.name}: container {self.settings.container!r} does not exist "
                                         f"in account {self.settings.account!r}") from None
            await self.http.discard(response)

        return ensureDeferred(ping())

    def close(self) -> Deferred[None]:
        return self.http.close()


def parse_listing(body: bytes, name: str) -> Listing:
    """A List Blobs answer (``EnumerationResults``): names, prefixes and the next marker."""
    try:
        root = ElementTree.fromstring(body)  # expat >= 2.4.1 refuses entity expansion bombs
    except ElementTree.ParseError:
        raise StorageError(f"{name}: the blob listing is not XML") from None
    keys: list[str] = []
    modified: dict[str, float] = {}
    for blob in root.iterfind("Blobs/Blob"):
        key = blob.findtext("Name") or ""
        keys.append(key)
        modified[key] = _http_date(blob.findtext("Properties/Last-Modified") or "")
    prefixes = [n.text or "" for n in root.iterfind("Blobs/BlobPrefix/Name")]
    return Listing(keys, prefixes, root.findtext("NextMarker") or "", modified)


def _http_date(text: str) -> float:
    """An RFC 1123 date (``Wed, 25 Nov 2026 12:57:58 GMT``) as epoch seconds; 0 if it is not one."""
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return 0.0
