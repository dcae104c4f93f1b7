"""
An IBucket over S3's REST API (AWS S3, MinIO, SeaweedFS, Ceph, R2...), with
treq on the reactor: nothing blocks, and zips stream both ways.

Requests are signed with botocore's SigV4 signer (AWS's own code: we do not
write a signature scheme); credentials come from :mod:`awscreds`.  Uploads of
any size go out as multipart uploads in :data:`PART`-sized parts (one part in
memory at a time), aborted if the stream fails or the save is cancelled;
``exclusive`` writes send ``If-None-Match: *`` (S3's conditional writes), so
the store decides atomically which of two writers was first.

Errors: a missing object is NotFound; a store that cannot be reached, a
missing bucket, refused credentials or a 5xx are StorageUnavailable with the
store's reason; throttling (503 SlowDown, 429) and 5xx are retried with
back-off within the request's deadline.  The proxy's egress settings
(``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``) apply, as to its other fetches.
"""

from __future__ import annotations

import hashlib
from collections import deque
from datetime import datetime
from typing import Any, AsyncIterable, AsyncIterator
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

import attrs
import treq
from treq.client import HTTPClient
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError, TimeoutError
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed
from twisted.web.http_headers import Headers
from zope.interface import implementer

from athens.storage.awscreds import CredentialSettings, CredentialSource
from athens.storage.bucket import IBucket, Listing, ObjectExists
from athens.storage.interface import NotFound, StorageError, StorageUnavailable, rechunk
from athens.storage.objhttp import BodyPipe, StreamBlob, content_length

#: Multipart part size: S3's minimum is 5 MiB (all parts but the last); one part is held in memory.
PART = 8 << 20
#: Parts of one upload sent at once (each held in memory until the store has it).
IN_FLIGHT = 2
#: Bodies hashed in the thread pool above this size (SigV4 signs the payload's SHA-256 over plain HTTP).
HASH_OFF_THREAD = 256 << 10
#: Small objects (.info, .mod, the deletions token) larger than this are refused.
MAX_SMALL = 16 << 20
#: Read-ahead of a zip being served: the connection is paused above this many buffered bytes.
#: Attempts for a request the store throttles or fails with a 5xx.
ATTEMPTS = 4
_NET_ERRORS = (ConnectError, ConnectingCancelledError, DNSLookupError, TimeoutError, ResponseFailed,
               defer.TimeoutError, ConnectionError)


class S3Error(StorageError):
    """The store refused a request for a reason of its own (its code and message)."""


@attrs.frozen
class S3Settings:
    """Where the bucket is and how to reach it: built from ``[Storage.S3]`` or ``[Storage.Minio]``."""

    bucket: str
    region: str = "us-east-1"
    #: ``https://host[:port]`` or ``http://...``; empty: AWS's endpoint for the region.
    endpoint: str = ""
    #: ``https://endpoint/bucket/key`` rather than ``https://bucket.endpoint/key``.
    path_style: bool = False
    credentials: CredentialSettings = CredentialSettings()
    #: Seconds a request may take to answer (``Timeout``).
    timeout: float = 300.0

    @property
    def base(self) -> str:
        return (self.endpoint or f"https://s3.{self.region}.amazonaws.com").rstrip("/")

    def url(self, key: str = "", query: str = "") -> str:
        """The object's URL (``key`` empty: the bucket's), path-style or virtual-hosted."""
        parts = urlsplit(self.base)
        path = quote(key, safe="/~")
        if self.path_style:
            url = f"{self.base}/{self.bucket}/{path}" if key else f"{self.base}/{self.bucket}"
        else:
            url = f"{parts.scheme}://{self.bucket}.{parts.netloc}{parts.path}/{path}"
        return url + ("?" + query if query else "")


def _query(**params: str | None) -> str:
    """A query string as SigV4 wants it: every name and value encoded, nothing left ambiguous."""
    return "&".join(f"{quote(k.replace('_', '-'), safe='-_.~')}={quote(v, safe='-_.~')}"
                    for k, v in params.items() if v is not None)


class _Signer(S3SigV4Auth):
    """botocore's S3 signer, told the payload's hash (computed off the reactor for large bodies)."""

    def payload(self, request: AWSRequest) -> str:
        return str(request.context["payload_hash"])


def _xml(body: bytes) -> ElementTree.Element:
    root = ElementTree.fromstring(body)
    for element in root.iter():  # S3's namespace on every tag: drop it
        element.tag = element.tag.rpartition("}")[2]
    return root


def _error(status: int, body: bytes) -> tuple[str, str]:
    try:
        root = _xml(body)
        return root.findtext("Code") or str(status), root.findtext("Message") or ""
    except ElementTree.ParseError:
        return str(status), body[:200].decode("utf-8", "replace")


@implementer(IBucket)
@attrs.define
class S3Bucket:
    settings: S3Settings
    http: Any  # treq.HTTPClient
    reactor: Any
    credentials: CredentialSource = attrs.field()
    pool: Any = None
    name = "s3"

    @credentials.default
    def _credentials(self) -> CredentialSource:
        return CredentialSource(self.settings.credentials)

    @classmethod
    def connect(cls, settings: S3Settings, reactor: Any) -> "S3Bucket":
        """A client with its own connection pool, through the egress proxy the environment names."""
        from athens.fetch.upstream import make_pool

        pool = make_pool(reactor, per_host=20)
        return cls(settings, HTTPClient(pool.egress), reactor, pool=pool)

    # -- one request --

    async def _request(self, method: str, key: str = "", query: str = "", body: bytes = b"",
                       headers: dict[str, str] | None = None, stream: bool = False, ok: tuple[int, ...] = (200,)) -> Any:
        """Send a signed request, retrying throttling and 5xx; the response (its body unread if ``stream``)."""
        url = self.settings.url(key, query)
        if len(body) > HASH_OFF_THREAD:
            payload_hash = await deferToThread(lambda: hashlib.sha256(body).hexdigest())
        else:
            payload_hash = hashlib.sha256(body).hexdigest()
        delay = 0.2
        for attempt in range(ATTEMPTS):
            request = AWSRequest(method=method, url=url, headers=dict(headers or {}))
            request.context["payload_hash"] = payload_hash
            _Signer(await self.credentials.get(), "s3", self.settings.region).add_auth(request)
            sent = Headers({k: [v] for k, v in request.headers.items()})
            try:
                response = await self.http.request(method, url, headers=sent, data=body or None,
                                                   timeout=self.settings.timeout, unbuffered=True)
            except _NET_ERRORS as e:
                raise StorageUnavailable(f"s3: cannot reach {self.settings.base}: {_reason(e)}") from None
            if response.code in ok:
                return response if stream else (response, await self._content(response, MAX_SMALL))
            content = await self._content(response, 64 << 10)
            code, message = _error(response.code, content)
            retry = response.code >= 500 or response.code == 429
            if retry and attempt + 1 < ATTEMPTS:
                await deferLater(self.reactor, delay, lambda: None)
                delay *= 4
                continue
            self._raise(method, key, response.code, code, message)
        raise AssertionError("unreachable")

    def _raise(self, method: str, key: str, status: int, code: str, message: str) -> None:
        what = f"s3: {method} {self.settings.bucket}/{key}: {status} {code}" + (f" ({message})" if message else "")
        if status == 404 and code != "NoSuchBucket":
            raise NotFound(what)
        if status == 412:
            raise ObjectExists(what)
        if status in (401, 403) or status >= 500 or status == 429 or code == "NoSuchBucket":
            raise StorageUnavailable(what)
        raise S3Error(what)

    async def _content(self, response: Any, limit: int) -> bytes:
        size = response.length if isinstance(response.length, int) else None
        if size is not None and size > limit:
            response.deliverBody(_Discard())
            raise S3Error(f"s3: an answer of {size} bytes where at most {limit} were expected")
        try:
            return bytes(await treq.content(response))
        except _NET_ERRORS as e:
            raise StorageUnavailable(f"s3: the answer broke off: {_reason(e)}") from None

    # -- IBucket --

    def get(self, key: str) -> Deferred[bytes]:
        async def get() -> bytes:
            _, content = await self._request("GET", key)
            return bytes(content)

        return ensureDeferred(get())

    def open(self, key: str) -> Deferred[StreamBlob]:
        async def open_() -> StreamBlob:
            response = await self._request("GET", key, stream=True)
            size = content_length(response, "s3")
            pipe = BodyPipe(self.reactor, self.settings.timeout, "s3")
            response.deliverBody(pipe)
            return StreamBlob(pipe, size)

        return ensureDeferred(open_())

    def put(self, key: str, data: bytes, exclusive: bool = False) -> Deferred[None]:
        headers = {"If-None-Match": "*"} if exclusive else {}
        return ensureDeferred(self._request("PUT", key, body=bytes(data), headers=headers)).addCallback(lambda _: None)

    def upload(self, key: str, chunks: AsyncIterable[bytes], exclusive: bool = False) -> Deferred[int]:
        return ensureDeferred(self._upload(key, chunks, exclusive))

    async def _upload(self, key: str, chunks: AsyncIterable[bytes], exclusive: bool) -> int:
        parts = rechunk(chunks, PART)
        first = await anext(parts, b"")
        second = await anext(parts, None) if len(first) == PART else None
        if second is None:  # it fits in one request
            await self.put(key, first, exclusive)
            return len(first)
        _, answer = await self._request("POST", key, "uploads=")
        upload_id = _xml(answer).findtext("UploadId") or ""
        if not upload_id:
            raise S3Error(f"s3: no UploadId in the answer to starting an upload of {key}")
        etags: dict[int, str] = {}
        sending: deque[Deferred[None]] = deque()
        try:
            size = 0

            async def send(number: int, data: bytes) -> None:
                response, _ = await self._request("PUT", key, _query(partNumber=str(number), uploadId=upload_id),
                                                  body=data)
                etags[number] = response.headers.getRawHeaders("etag", [""])[0]

            async def every_part(read: list[bytes]) -> AsyncIterator[bytes]:
                while read:
                    yield read.pop(0)
                async for part in parts:
                    yield part

            number = 0
            read = [first, second]
            del first, second  # (held only until sent)
            async for data in every_part(read):
                # the next part is read from the stream while up to IN_FLIGHT parts go out
                number += 1
                sending.append(ensureDeferred(send(number, data)))
                size += len(data)
                del data
                if len(sending) >= IN_FLIGHT:
                    await sending.popleft()
            while sending:
                await sending.popleft()
            document = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{_escape(e)}</ETag></Part>"
                               for n, e in sorted(etags.items()))
            headers = {"If-None-Match": "*"} if exclusive else {}
            _, answer = await self._request(
                "POST", key, _query(uploadId=upload_id),
                body=f"<CompleteMultipartUpload>{document}</CompleteMultipartUpload>".encode(), headers=headers)
            if b"<Error>" in answer[:512]:  # a 200 whose body says it failed
                code, message = _error(200, answer)
                self._raise("POST", key, 412 if code == "PreconditionFailed" else 500, code, message)
            return size
        except BaseException:
            for d in sending:
                d.addErrback(lambda _: None)
                d.cancel()
            await self._abort(key, upload_id)
            raise

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self._request("DELETE", key, _query(uploadId=upload_id), ok=(200, 204, 404))
        except StorageError:
            pass  # the bucket's lifecycle rule for incomplete uploads removes it

    def exists(self, key: str) -> Deferred[bool]:
        async def head() -> bool:
            try:
                await self._request("HEAD", key)
            except NotFound:
                return False
            return True

        return ensureDeferred(head())

    def delete(self, key: str) -> Deferred[None]:
        return ensureDeferred(self._request("DELETE", key, ok=(200, 204, 404))).addCallback(lambda _: None)

    def list(self, prefix: str, delimiter: str = "", token: str = "", limit: int = 1000) -> Deferred[Listing]:
        async def page() -> Listing:
            query = _query(delimiter=delimiter or None, list_type="2", max_keys=str(limit), prefix=prefix,
                           start_after=token or None)
            _, body = await self._request("GET", "", query)
            root = _xml(body)
            keys, modified = [], {}
            for item in root.iterfind("Contents"):
                key = item.findtext("Key") or ""
                keys.append(key)
                modified[key] = _timestamp(item.findtext("LastModified") or "")
            prefixes = [p.findtext("Prefix") or "" for p in root.iterfind("CommonPrefixes")]
            truncated = (root.findtext("IsTruncated") or "").lower() == "true"
            # Continue after the last key or after everything under the last prefix.
            last = max([k for k in keys] + [p + "\U0010ffff" for p in prefixes], default="")
            return Listing(keys, prefixes, last if truncated and last else "", modified)

        return ensureDeferred(page())

    def ping(self) -> Deferred[None]:
        async def head() -> None:
            try:
                await self._request("HEAD")
            except NotFound:
                raise StorageUnavailable(f"s3: the bucket {self.settings.bucket!r} does not exist at "
                                         f"{self.settings.base}") from None

        return ensureDeferred(head())

    def close(self) -> Deferred[None]:
        if self.pool is None:
            return defer.succeed(None)
        return self.pool.closeCachedConnections()


class _Discard(Protocol):
    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        pass


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _timestamp(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _reason(e: BaseException) -> str:
    if isinstance(e, ResponseFailed):
        return "; ".join(str(r.value) for r in e.reasons) or "the connection broke"
    return str(e) or type(e).__name__
