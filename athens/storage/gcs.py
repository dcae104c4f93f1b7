"""
Google Cloud Storage as an IBucket, over its JSON API with treq.

Small objects go up in one media upload; a stream goes up in a resumable
upload, in pieces of :attr:`GCSSettings.chunk_size` (a multiple of 256 KiB,
as the API requires, one piece in memory at a time).  The object appears
only when the last piece is in: a session that fails half way is cancelled,
and one that could not be (the process killed) was never visible and
expires by itself within a week.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any, AsyncIterable, Mapping
from urllib.parse import quote, urlencode

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool
from twisted.web.iweb import IResponse
from zope.interface import implementer

from athens.storage.bucket import IBucket, Listing, ObjectExists
from athens.storage.gcpauth import (
    METADATA_HOST,
    Anonymous,
    GoogleKey,
    OAuth,
    application_default,
    decode_json_key,
)
from athens.storage.interface import NotFound, StorageError, StorageUnavailable, rechunk
from athens.storage.objhttp import Backoff, StoreHTTP, StreamBlob, content_length

log = Logger()

PUBLIC_ENDPOINT = "https://storage.googleapis.com"
#: Resumable upload pieces must be multiples of this (except the last).
QUANTUM = 256 << 10
#: What Google answers when an upload session is cancelled ("client closed request").
CANCELLED = 499


@attrs.frozen
class GCSSettings:
    """What the GCS client needs, from ``[Storage.GCP]`` and the environment."""

    bucket: str
    project: str = ""
    #: The credentials file (``JSONKey`` or application default); None: the metadata server.
    key: GoogleKey | None = attrs.field(default=None, repr=False)
    #: An emulator's URL (``STORAGE_EMULATOR_HOST``): no credentials are sent to it.
    emulator: str = ""
    metadata_host: str = METADATA_HOST
    #: Seconds a request may keep being retried while the store throttles (``Timeout``).
    timeout: float = 300.0
    #: Bytes per piece of a resumable upload, and the size from which a stream is sent that way.
    chunk_size: int = attrs.field(default=8 << 20)

    @chunk_size.validator
    def _quantum(self, attribute: Any, value: int) -> None:
        if value <= 0 or value % QUANTUM:
            raise ValueError(f"chunk_size must be a positive multiple of {QUANTUM}")

    @property
    def endpoint(self) -> str:
        return (self.emulator or PUBLIC_ENDPOINT).rstrip("/")

    @classmethod
    def from_config(cls, config: Any, environ: Mapping[str, str] = os.environ) -> "GCSSettings":
        """Reads the credentials file now, at start-up: a wrong key stops the daemon with the key's name."""
        from athens.config import ConfigError

        if not config.gcp_bucket:
            raise ConfigError("Storage.GCP.Bucket: required for StorageType gcp")
        emulator = environ.get("STORAGE_EMULATOR_HOST", "")
        if emulator and "://" not in emulator:
            emulator = "http://" + emulator  # host:port, as Google's libraries take it
        key: GoogleKey | None = None
        if config.gcp_json_key:
            try:
                key = decode_json_key(config.gcp_json_key)
            except ValueError as e:
                raise ConfigError(f"Storage.GCP.JSONKey: {e}") from None
        elif not emulator:
            try:
                key = application_default(environ)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        return cls(config.gcp_bucket, config.gcp_project, key, emulator,
                   environ.get("GCE_METADATA_HOST") or METADATA_HOST, float(config.timeout))


@implementer(IBucket)
class GCSBucket:
    """One bucket."""

    name = "gcp"  # Athens' StorageType: what /version and /readyz say

    def __init__(self, settings: GCSSettings, reactor: Any, pool: HTTPConnectionPool | None = None) -> None:
        self.settings = settings
        self.http = StoreHTTP(self.name, reactor, Backoff(deadline=settings.timeout), pool=pool)
        self.auth = Anonymous() if settings.emulator else OAuth(self.http, settings.key, settings.metadata_host)
        self.bucket_url = f"{settings.endpoint}/storage/v1/b/{quote(settings.bucket, safe='')}"
        self.upload_url = f"{settings.endpoint}/upload/storage/v1/b/{quote(settings.bucket, safe='')}/o"

    def _object(self, key: str, **query: str) -> str:
        url = f"{self.bucket_url}/o/{quote(key, safe='')}"
        return f"{url}?{urlencode(query)}" if query else url

    async def _call(self, method: str, url: str, what: str, expect: tuple[int, ...] = (200,),
                    headers: dict[str, str] | None = None, data: bytes | None = None,
                    timeout: float | None = None) -> IResponse:
        return await self.http.request(method, url, what, expect, headers, data, self.auth, timeout)

    def get(self, key: str) -> Deferred[bytes]:
        async def get() -> bytes:
            response = await self._call("GET", self._object(key, alt="media"), f"get {key}")
            return await self.http.read(response)

        return ensureDeferred(get())

    def open(self, key: str) -> Deferred[StreamBlob]:
        async def open_() -> StreamBlob:
            response = await self._call("GET", self._object(key, alt="media"), f"get {key}")
            return self.http.stream(response, content_length(response, self.name))

        return ensureDeferred(open_())

    def _upload_url(self, key: str, kind: str, exclusive: bool) -> str:
        """``exclusive``: ``ifGenerationMatch=0``, the object must not exist when the upload completes."""
        query = {"uploadType": kind, "name": key, **({"ifGenerationMatch": "0"} if exclusive else {})}
        return f"{self.upload_url}?{urlencode(query)}"

    def _check_written(self, response: IResponse, key: str) -> None:
        if response.code == 412:
            raise ObjectExists(f"{self.name}: {key}: already there")

    def put(self, key: str, data: bytes, exclusive: bool = False) -> Deferred[None]:
        return ensureDeferred(self._put(key, bytes(data), exclusive))

    async def _put(self, key: str, data: bytes, exclusive: bool) -> None:
        response = await self._call("POST", self._upload_url(key, "media", exclusive), f"put {key}", (200, 412),
                                    {"Content-Type": "application/octet-stream"}, data, timeout=self.settings.timeout)
        await self.http.discard(response)
        self._check_written(response, key)

    def upload(self, key: str, chunks: AsyncIterable[bytes], exclusive: bool = False) -> Deferred[int]:
        return ensureDeferred(self._upload(key, chunks, exclusive))

    async def _upload(self, key: str, chunks: AsyncIterable[bytes], exclusive: bool) -> int:
        size = self.settings.chunk_size
        pieces = rechunk(chunks, size).__aiter__()
        piece = await anext(pieces, None)
        if piece is None or len(piece) < size:  # the whole object is in hand: one request
            await self._put(key, piece or b"", exclusive)
            return len(piece or b"")
        session = await self._start_session(key, exclusive)
        try:
            offset = 0
            while piece is not None and len(piece) == size:
                await self._send(session, key, piece, offset, None)
                offset += len(piece)
                piece = await anext(pieces, None)
            last = piece or b""  # shorter than a piece, or nothing when the stream ended on a boundary
            await self._send(session, key, last, offset, offset + len(last))
            return offset + len(last)
        except BaseException:
            await self._cancel(session, key)
            raise

    async def _start_session(self, key: str, exclusive: bool) -> str:
        url = self._upload_url(key, "resumable", exclusive)
        response = await self._call("POST", url, f"start an upload of {key}", (200, 201),
                                    {"X-Upload-Content-Type": "application/octet-stream"}, b"")
        await self.http.discard(response)
        session = (response.headers.getRawHeaders("location") or [""])[0]
        if not session.startswith(self.settings.endpoint + "/"):
            raise StorageError(f"{self.name}: the upload session of {key} is not on the store: {session[:120]!r}")
        return session

    async def _send(self, session: str, key: str, piece: bytes, offset: int, total: int | None) -> None:
        """
        One piece at ``offset``; ``total`` when it is the last.  The store
        may keep less than it was sent (its answer's Range says how much):
        the rest is sent again.
        """
        while True:
            end = offset + len(piece) - 1
            span = f"bytes {offset}-{end}" if piece else "bytes *"
            headers = {"Content-Range": f"{span}/{'*' if total is None else total}"}
            what = f"upload {key} at {offset}"
            response = await self._call("PUT", session, what, (200, 201, 308, 412), headers, piece,
                                        timeout=self.settings.timeout)
            await self.http.discard(response)
            self._check_written(response, key)
            if response.code != 308:
                if total is None:
                    raise StorageError(f"{self.name}: {what}: the store finished the object before its end")
                return
            if total is not None and not piece:
                raise StorageError(f"{self.name}: {what}: the store did not finish the object")
            kept = _persisted(response)
            if kept > end + 1 or kept < offset:
                raise StorageError(f"{self.name}: {what}: the store kept {kept} bytes, outside this piece")
            if kept == end + 1 and total is None:
                return
            piece, offset = piece[kept - offset:], kept

    async def _cancel(self, session: str, key: str) -> None:
        """Drop the session's pieces; nothing was visible, so a failure here only leaves them to expire."""
        try:
            response = await self._call("DELETE", session, f"cancel the upload of {key}", (CANCELLED, 200, 204, 404))
            await self.http.discard(response)
        except StorageError as e:
            log.warn("gcp: {key}: the upload session could not be cancelled (it expires within a week): {error}",
                     key=key, error=str(e))

    def exists(self, key: str) -> Deferred[bool]:
        async def exists() -> bool:
            response = await self._call("GET", self._object(key, fields="name"), f"stat {key}", (200, 404))
            await self.http.discard(response)
            return response.code == 200

        return ensureDeferred(exists())

    def delete(self, key: str) -> Deferred[None]:
        async def delete() -> None:
            response = await self._call("DELETE", self._object(key), f"delete {key}", (200, 204, 404))
            await self.http.discard(response)

        return ensureDeferred(delete())

    def list(self, prefix: str, delimiter: str = "", token: str = "", limit: int = 1000) -> Deferred[Listing]:
        return ensureDeferred(self._list(prefix, delimiter, token, limit))

    async def _list(self, prefix: str, delimiter: str, token: str, limit: int) -> Listing:
        query = {"maxResults": str(max(1, min(limit, 1000))), "fields": "items(name,updated),prefixes,nextPageToken"}
        for name, value in (("prefix", prefix), ("delimiter", delimiter), ("pageToken", token)):
            if value:
                query[name] = value
        response = await self._call("GET", f"{self.bucket_url}/o?{urlencode(query)}", f"list {prefix}")
        return parse_listing(await self.http.read(response), self.name)

    def ping(self) -> Deferred[None]:
        async def ping() -> None:
            try:
                response = await self._call("GET", f"{self.bucket_url}?fields=name", "bucket metadata")
            except NotFound:
                raise StorageUnavailable(f"{self.name}: bucket {self.settings.bucket!r} does not exist") from None
            await self.http.discard(response)

        return ensureDeferred(ping())

    def close(self) -> Deferred[None]:
        return self.http.close()


def _persisted(response: IResponse) -> int:
    """How many bytes a 308 says the session holds (``Range: bytes=0-N``; none: 0)."""
    value = (response.headers.getRawHeaders("range") or [""])[0]
    _, _, last = value.partition("-")
    return int(last) + 1 if value.startswith("bytes=0-") and last.isdigit() else 0


def parse_listing(body: bytes, name: str) -> Listing:
    """An objects.list answer: ``items[].name``, ``prefixes``, ``nextPageToken``, checked."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise StorageError(f"{name}: the object listing is not JSON") from None
    if not isinstance(doc, dict):
        raise StorageError(f"{name}: the object listing is not a JSON object")
    items = doc.get("items") or []
    prefixes = doc.get("prefixes") or []
    token = doc.get("nextPageToken") or ""
    if not isinstance(items, list) or not isinstance(prefixes, list) or not isinstance(token, str):
        raise StorageError(f"{name}: the object listing has the wrong shape")
    keys: list[str] = []
    modified: dict[str, float] = {}
    for item in items:
        key = item.get("name") if isinstance(item, dict) else None
        if not isinstance(key, str):
            raise StorageError(f"{name}: the object listing has a name that is not a string")
        keys.append(key)
        modified[key] = _rfc3339(item.get("updated"))
    if not all(isinstance(p, str) for p in prefixes):
        raise StorageError(f"{name}: the object listing has prefixes that are not strings")
    return Listing(keys, sorted(prefixes), token, modified)


def _rfc3339(value: object) -> float:
    """GCS's ``updated`` (``2026-11-25T12:57:58.123Z``) as epoch seconds; 0 if it is not one."""
    try:
        return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else 0.0
    except ValueError:
        return 0.0
