"""
What an object store offers (S3, Google Cloud Storage, Azure Blob): the one
interface each client implements, so that one ``ObjectStorage`` lays out
versions in Athens' layout on any of them.

Keys are ``/``-separated strings; each method returns a Deferred.  Objects
are written whole: a reader sees the old object, the new one, or none, never
part of one, which is what the commit point of a version relies on.
"""

from __future__ import annotations

from typing import AsyncIterable

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from athens.storage.interface import StorageError


class ObjectExists(StorageError):
    """An exclusive write found an object already under its key (another writer was first)."""


@attrs.frozen
class Listing:
    """One page of keys under a prefix, in key order."""

    keys: list[str]
    #: With a delimiter: the distinct prefixes up to and including it ("dirs").
    prefixes: list[str]
    #: Pass back to get the next page; ``""`` when this page is the last.
    next_token: str
    #: When each of ``keys`` was last written (epoch seconds, the store's clock).
    modified: dict[str, float] = attrs.field(factory=dict)


class IBucket(Interface):
    name = Attribute("The backend's name for logs and /readyz (s3, gcp, azureblob).")

    def get(key: str) -> Deferred[bytes]:
        """A small object's bytes; fails with storage.interface.NotFound."""

    def open(key: str) -> Deferred[object]:
        """A storage.interface.Blob reading the object as a stream; fails with NotFound."""

    def put(key: str, data: bytes, exclusive: bool = False) -> Deferred[None]:
        """
        Write a small object whole.  ``exclusive``: only if no object is there
        (fails with ObjectExists otherwise), decided by the store atomically.
        """

    def upload(key: str, chunks: AsyncIterable[bytes], exclusive: bool = False) -> Deferred[int]:
        """
        Write an object from a stream of any length with flat memory (multipart
        where the store has it); its size.  If ``chunks`` fails or the upload is
        cancelled, nothing is left under ``key`` and the error propagates.
        ``exclusive`` as for :meth:`put`, checked when the object is complete.
        """

    def exists(key: str) -> Deferred[bool]:
        """Whether an object is stored under ``key``."""

    def delete(key: str) -> Deferred[None]:
        """Remove an object; nothing if it is absent."""

    def list(prefix: str, delimiter: str = "", token: str = "", limit: int = 1000) -> Deferred[Listing]:
        """One page of the keys that start with ``prefix``; never the whole bucket at once."""

    def ping() -> Deferred[None]:
        """Fails with StorageUnavailable unless the bucket can be read now."""

    def close() -> Deferred[None]:
        """Release connections at shutdown."""
