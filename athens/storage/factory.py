"""Open the storage backend the configuration names."""

from __future__ import annotations

from typing import Any, Callable

from athens.config import Config, ConfigError
from athens.storage.bucket import IBucket
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
    if config.storage_type in ("s3", "minio"):
        return _object_storage(config, reactor)
    if config.storage_type == "gcp":
        from athens.storage.gcs import GCSBucket, GCSSettings

        return _objects(lambda r: GCSBucket(GCSSettings.from_config(config), r), reactor)
    if config.storage_type == "azureblob":
        from athens.storage.azure import AzureBucket, AzureSettings

        return _objects(lambda r: AzureBucket(AzureSettings.from_config(config), r), reactor)
    raise ConfigError(f"StorageType: {config.storage_type!r} is not supported")


def _object_storage(config: Config, reactor: Any) -> IStorage:
    """S3 or MinIO in Athens' layout for that type, once a signed request found the bucket."""
    try:
        from athens.storage.objects import AT_V, MINIO, ObjectStorage
        from athens.storage.s3 import S3Bucket
        from athens.storage.s3settings import check_bucket, minio_settings, s3_settings
    except ImportError as e:
        raise ConfigError(f"StorageType {config.storage_type}: {e.name} is missing (pip install 'athens-py[s3]')") \
            from None
    if reactor is None:
        from twisted.internet import reactor
    if config.storage_type == "s3":
        settings = s3_settings(config)
        check_bucket(settings, "Storage.S3")
        return ObjectStorage(S3Bucket.connect(settings, reactor), AT_V, reactor)
    settings = minio_settings(config)
    check_bucket(settings, "Storage.Minio", create=True)  # as Athens' minio storage does
    return ObjectStorage(S3Bucket.connect(settings, reactor), MINIO, reactor)


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


def _objects(bucket: Callable[[Any], IBucket], reactor: Any) -> IStorage:
    """Athens' object layout (``<module>/@v/<version>.info``...) on a bucket client."""
    from athens.storage.objects import ObjectStorage

    if reactor is None:
        from twisted.internet import reactor
    return ObjectStorage(bucket(reactor), reactor=reactor)
