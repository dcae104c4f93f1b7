"""Build the organisation's checksum database from the configuration (``[OwnSumDB]``)."""

from __future__ import annotations

import os
from typing import Callable

from twisted.logger import Logger

from athens.config import Config, ConfigError
from athens.metrics import Metrics
from athens.singleflight.interface import ILock
from athens.sumdb._log import SumLog
from athens.sumdb._note import NoteError, SignerKey
from athens.sumdb._own import OwnSumDB
from athens.sumdb._proxy import sumdb_name
from athens.sumdb._store import ILogStore, MemoryLogStore
from athens.sumdb._verifier import ChecksumVerifier

log = Logger()

#: Where the disk storage keeps the log, under its root (a directory the module walk skips).
DISK_LOG = os.path.join(".athens-sumdb-log", "log.sqlite")


def load_signer(path: str, name: str) -> SignerKey:
    """The signer key in ``OwnSumDB.KeyFile``, for database ``name``."""
    if not path:
        raise ConfigError(f"OwnSumDB.KeyFile: required with OwnSumDB.Name (create a key pair with "
                          f"`athens-admin sumdb-key {name}`)")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(4096)
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"OwnSumDB.KeyFile: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        key = SignerKey.parse(text)
    except NoteError as e:
        raise ConfigError(f"OwnSumDB.KeyFile: {path}: {e}") from None
    if key.name != name:
        raise ConfigError(f"OwnSumDB.KeyFile: {path} holds the key of {key.name}, not of OwnSumDB.Name {name}")
    if mode & 0o077:
        log.warn("OwnSumDB.KeyFile {path} can be read by other users than its owner (chmod 600 it)", path=path)
    return key


def _disk(config: Config, name: str) -> ILogStore:
    from athens.sumdb._sqlstore import SQLLogStore

    return SQLLogStore.sqlite(os.path.join(config.disk_root, DISK_LOG), name)


def _redis(config: Config, name: str) -> ILogStore:
    from athens.storage.factory import storage_redis
    from athens.sumdb._redisstore import RedisLogStore

    return RedisLogStore(storage_redis(config), name, config.redis_key_prefix)


def _postgres(config: Config, name: str) -> ILogStore:
    from athens.sumdb._sqlstore import SQLLogStore

    if not config.postgres_url:
        raise ConfigError("Storage.Postgres.URL: required for StorageType postgres (postgresql://user@host/db)")
    return SQLLogStore.postgres(config.postgres_url, name)


#: The log lives beside the module store: in the same backend, shared by the same nodes.
LOG_STORES: dict[str, Callable[[Config, str], ILogStore]] = {
    "memory": lambda config, name: MemoryLogStore(),
    "disk": _disk,
    "redis": _redis,
    "postgres": _postgres,
}


def open_log_store(config: Config, name: str) -> ILogStore:
    build = LOG_STORES.get(config.storage_type)
    if build is None:
        raise ConfigError(f"OwnSumDB.Name: the checksum database's log cannot be kept in StorageType "
                          f"{config.storage_type} yet (it can in: {', '.join(LOG_STORES)})")
    return build(config, name)


def build_own_sumdb(config: Config, lock: ILock | None, upstream: ChecksumVerifier | None,
                    metrics: Metrics) -> OwnSumDB | None:
    """The organisation's checksum database, or None when ``OwnSumDB.Name`` is not set."""
    name = config.own_sumdb_name
    if not name:
        return None
    if name in {sumdb_name(url) for url in config.sum_dbs}:
        raise ConfigError(f"OwnSumDB.Name: {name} is also a checksum database this proxy carries (SumDBs)")
    signer = load_signer(config.own_sumdb_key_file, name)
    store = open_log_store(config, name)
    return OwnSumDB(SumLog(signer, store, lock), config.private_patterns, upstream, metrics)
