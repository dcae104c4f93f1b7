"""Storage backends behind one interface (:class:`IStorage`)."""

from athens.storage.interface import Blob, IStorage, NotFound, StorageError, StorageUnavailable

__all__ = ["Blob", "IStorage", "NotFound", "StorageError", "StorageUnavailable"]
