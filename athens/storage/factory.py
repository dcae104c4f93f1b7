"""Open the storage backend the configuration names."""

from __future__ import annotations

from athens.config import Config, ConfigError
from athens.storage.interface import IStorage


def open_storage(config: Config) -> IStorage:
    if config.storage_type == "memory":
        from athens.storage.memory import MemoryStorage

        return MemoryStorage()
    if config.storage_type == "disk":
        from athens.storage.disk import DiskStorage

        try:
            return DiskStorage(config.disk_root)
        except OSError as e:
            raise ConfigError(f"Storage.Disk.RootPath: cannot use {config.disk_root!r}: {e.strerror}") from None
    raise ConfigError(f"StorageType: {config.storage_type!r} is not supported")
