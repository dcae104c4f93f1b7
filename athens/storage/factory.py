"""Open the storage backend the configuration names."""

from __future__ import annotations

from typing import Any

from athens.config import Config, ConfigError
from athens.storage.interface import IStorage


def open_storage(config: Config, reactor: Any = None) -> IStorage:
    if config.storage_type == "memory":
        from athens.storage.memory import MemoryStorage

        return MemoryStorage()
    if config.storage_type == "disk":
        from athens.storage.disk import DiskStorage

        try:
            return DiskStorage(config.disk_root)
        except OSError as e:
            raise ConfigError(f"Storage.Disk.RootPath: cannot use {config.disk_root!r}: {e.strerror}") from None
    if config.storage_type == "redis":
        from athens.storage.redis import RedisStorage

        return RedisStorage(storage_redis(config), config.redis_key_prefix)
    if config.storage_type == "postgres":
        from athens.storage.sql import PostgresStorage

        if not config.postgres_url:
            raise ConfigError("Storage.Postgres.URL: required for StorageType postgres (postgresql://user@host/db)")
        if reactor is None:
            from twisted.internet import reactor
        return PostgresStorage.connect(config.postgres_url, reactor, config.postgres_max_connections)
    raise ConfigError(f"StorageType: {config.storage_type!r} is not supported")


def storage_redis(config: Config) -> Any:
    """A connection to the store's Redis: its own endpoint, else the single-flight one, or Sentinel's master."""
    from athens.storage.redis import connect

    if not config.redis_storage_endpoint and config.single_flight_type == "redis-sentinel":
        from athens.singleflight.redis import connect_sentinel

        return connect_sentinel(config.sentinel_endpoints, config.sentinel_master, config.sentinel_password,
                                config.redis_password, config.lock_timeout, config.sentinel_db)
    endpoint, password = config.redis_for_storage()
    try:
        return connect(endpoint, password, timeout=config.lock_timeout)
    except ValueError as e:
        raise ConfigError(f"Storage.Redis.Endpoint: {e}") from None
