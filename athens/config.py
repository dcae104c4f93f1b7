"""
Configuration under Athens' names.

Values come, each overriding the one before, from the defaults, a TOML file
(Athens' keys: ``Port``, ``StorageType``, ``[Storage.Disk] RootPath``...),
Athens' environment variables (``ATHENS_PORT``, ...) and the command line.
A wrong value raises :class:`ConfigError` naming the key, so the daemon stops
at start-up rather than misbehave later.
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Any, Callable, Mapping

import attrs

from athens.athenskeys import ENV_VARS as ATHENS_ENV_VARS
from athens.athenskeys import is_athens_key

STORAGE_TYPES = ("memory", "disk", "redis", "postgres", "s3", "minio", "gcp", "azureblob")
SINGLE_FLIGHT_TYPES = ("memory", "redis", "redis-sentinel", "etcd")
#: Athens' IndexType values ("" is "none" there); every one but "none" is answered from the store here.
INDEX_TYPES = {"": "none", "none": "none", "memory": "memory", "mysql": "mysql", "postgres": "postgres",
               "storage": "storage"}
#: Athens storage types this proxy does not implement: named so the error can say so.
ATHENS_ONLY_STORAGE = {
    "mongo": "no MongoDB server can be installed where this proxy is built and tested, and storage that is not "
             "tested against a real server is not offered",
    "external": "Athens' external storage protocol is not implemented",
}
LOG_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
    "fatal": "critical",
    "panic": "critical",
}
LOG_FORMATS = ("plain", "json")


class ConfigError(ValueError):
    """A configuration value is wrong; the message starts with the key's name."""


def default_disk_root() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "athens-py", "storage")


@attrs.frozen
class Config:
    port: str = ":3000"
    unix_socket: str = ""
    storage_type: str = "disk"
    disk_root: str = attrs.field(factory=default_disk_root)
    log_level: str = "info"
    log_format: str = "plain"
    timeout: int = 300
    shutdown_timeout: int = 60
    # -- filling the cache from the origin --
    go_binary: str = "go"
    go_env: tuple[str, ...] = ("GOPROXY=direct",)
    go_get_workers: int = 10
    go_get_dir: str = ""
    stash_timeout: int = 300
    netrc_path: str = ""
    github_token: str = attrs.field(default="", repr=False)
    hgrc_path: str = ""
    no_sum_patterns: tuple[str, ...] = ()
    download_mode: str = "sync"
    download_url: str = ""
    network_mode: str = "strict"
    filter_file: str = ""
    global_endpoint: str = ""
    list_cache_ttl: int = 60
    #: /index: "none" answers nothing (Athens' default); anything else (and unset) answers from the store.
    index_type: str = "storage"
    redirect_code: int = 301
    path_prefix: str = ""
    client_idle_timeout: int = 60
    fill_after_client_leaves: bool = True
    validator_hook: str = ""
    robots_file: str = ""
    home_template_path: str = "/var/lib/athens/home.html"
    trace_exporter: str = ""
    trace_exporter_url: str = ""
    trace_sampling_fraction: float = 1.0
    basic_auth_user: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    force_ssl: bool = False
    #: ``prometheus`` serves ``/metrics``; empty turns it off (Athens' names).
    stats_exporter: str = "prometheus"
    #: Requests to upstream proxies in flight at once, per upstream (Athens: protocol operations at once).
    protocol_workers: int = 30
    basic_auth_pass: str = attrs.field(default="", repr=False)
    sum_dbs: tuple[str, ...] = ("https://sum.golang.org",)
    sum_db_keys: tuple[str, ...] = ()
    verify_checksums: bool = True
    # -- the organisation's own checksum database (off without a name) --
    own_sumdb_name: str = ""
    own_sumdb_key_file: str = ""
    own_sumdb_patterns: tuple[str, ...] = ()
    # -- the vulnerability database and its policy --
    vulndb_url: str = "https://vuln.go.dev"
    vulndb_refresh: int = 3600
    vuln_policy: str = "off"
    vuln_policy_patterns: tuple[str, ...] = ()
    vuln_policy_ignore: tuple[str, ...] = ()
    # -- shared storage and single-flight across nodes --
    redis_storage_endpoint: str = ""
    redis_storage_password: str = attrs.field(default="", repr=False)
    redis_key_prefix: str = "athens:"
    postgres_url: str = attrs.field(default="", repr=False)
    postgres_max_connections: int = 8
    # -- S3 and MinIO storage (athens.storage.s3.S3Settings reads and checks these) --
    s3_region: str = ""
    s3_key: str = ""
    s3_secret: str = attrs.field(default="", repr=False)
    s3_token: str = attrs.field(default="", repr=False)
    s3_bucket: str = ""
    s3_force_path_style: bool = False
    s3_use_default_configuration: bool = False
    s3_credentials_endpoint: str = ""
    s3_container_credentials_relative_uri: str = ""
    s3_endpoint: str = ""
    minio_endpoint: str = ""
    minio_key: str = ""
    minio_secret: str = attrs.field(default="", repr=False)
    minio_enable_ssl: bool = False
    minio_bucket: str = ""
    minio_region: str = ""
    single_flight_type: str = "memory"
    redis_endpoint: str = "127.0.0.1:6379"
    redis_password: str = attrs.field(default="", repr=False)
    lock_ttl: int = 900
    lock_timeout: int = 15
    lock_max_retries: int = 10
    sentinel_endpoints: tuple[str, ...] = ("127.0.0.1:26379",)
    sentinel_master: str = "redis-1"
    sentinel_password: str = attrs.field(default="", repr=False)
    sentinel_db: int = 0
    etcd_endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    prefetch_endpoint: bool = False
    # -- Google Cloud Storage and Azure Blob (StorageType gcp, azureblob) --
    gcp_project: str = ""
    gcp_bucket: str = ""
    gcp_json_key: str = attrs.field(default="", repr=False)
    azure_account_name: str = ""
    azure_account_key: str = attrs.field(default="", repr=False)
    azure_managed_identity_resource_id: str = ""
    azure_credential_scope: str = ""
    azure_container_name: str = ""
    azure_endpoint: str = ""

    @property
    def private_patterns(self) -> tuple[str, ...]:
        """Modules no public checksum database is asked about: ``NoSumPatterns`` and ``OwnSumDB.Patterns``."""
        return self.no_sum_patterns + self.own_sumdb_patterns

    def redis_for_storage(self) -> tuple[str, str]:
        """Storage Redis: its own endpoint, else the single-flight one (one variable sets up both)."""
        if self.redis_storage_endpoint:
            return self.redis_storage_endpoint, self.redis_storage_password
        return self.redis_endpoint, self.redis_storage_password or self.redis_password
    #: Where the values came from and what was ignored, for the start-up log.
    notes: tuple[str, ...] = ()
    #: Names in the file or the environment that nobody reads: logged as warnings, one a name.
    warnings: tuple[str, ...] = ()

    def listen_endpoint(self) -> str:
        """The Twisted endpoint string for ``Port`` / ``UnixSocket``, with TLS when both TLS files are set."""
        if self.unix_socket:
            return "unix:" + _endpoint_escape(self.unix_socket)
        endpoint = port_to_endpoint(self.port)
        if self.tls_cert_file and self.tls_key_file:
            endpoint = "ssl:" + endpoint.removeprefix("tcp:")
            endpoint += f":privateKey={_endpoint_escape(self.tls_key_file)}:certKey={_endpoint_escape(self.tls_cert_file)}"
        return endpoint


def _endpoint_escape(value: str) -> str:
    """Backslash and colon are special in Twisted endpoint strings."""
    return value.replace("\\", "\\\\").replace(":", r"\:")


# --- value parsers: (key, raw) -> value, raising ConfigError ----------------


def _string(key: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{key}: expected a string, got {raw!r}")
    return raw


def _positive_int(key: str, raw: Any) -> int:
    try:
        value = int(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or value <= 0:
        raise ConfigError(f"{key}: expected a positive whole number, got {raw!r}")
    return value


def _non_negative_int(key: str, raw: Any) -> int:
    return 0 if raw in (0, "0") else _positive_int(key, raw)


def _port(key: str, raw: Any) -> str:
    text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else _string(key, raw)
    try:
        port_to_endpoint(text)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None
    return text


def _choice(choices: Mapping[str, str] | tuple[str, ...], extra: str = "") -> Callable[[str, Any], str]:
    def parse(key: str, raw: Any) -> str:
        value = _string(key, raw).strip().lower()
        if value == "" and "plain" in choices:
            value = "plain"
        if value not in choices:
            if value in ATHENS_ONLY_STORAGE:
                raise ConfigError(f"{key}: {raw!r} is an Athens storage this proxy does not support: "
                                  f"{ATHENS_ONLY_STORAGE[value]} (use one of: {', '.join(choices)})")
            raise ConfigError(f"{key}: {raw!r} is not one of: {', '.join(choices)}{extra}")
        return choices[value] if isinstance(choices, Mapping) else value

    return parse


def _string_list(separator: str) -> Callable[[str, Any], tuple[str, ...]]:
    """A TOML list of strings, or (from the environment) one string split on ``separator``."""

    def parse(key: str, raw: Any) -> tuple[str, ...]:
        if isinstance(raw, str):
            raw = [part.strip() for part in raw.split(separator)]
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise ConfigError(f"{key}: expected a list of strings, got {raw!r}")
        return tuple(item for item in raw if item)

    return parse


def _env_assignments(key: str, raw: Any) -> tuple[str, ...]:
    items = _string_list(";")(key, raw)
    for item in items:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"{key}: {item!r} is not NAME=value")
    return items


def _download_mode(key: str, raw: Any) -> str:
    value = _string(key, raw).strip()
    modes = ("sync", "async", "redirect", "async_redirect", "none", "passthrough")
    if not value.startswith(("file:", "custom:")) and value not in modes:
        raise ConfigError(f"{key}: {raw!r} is not {', '.join(modes)}, file:<path> or custom:<base64>")
    return value


def _sum_db_keys(key: str, raw: Any) -> tuple[str, ...]:
    from athens.sumdb import parse_key

    items = _string_list(",")(key, raw)
    for item in items:
        try:
            parse_key(item)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None
    return items


def _sumdb_name(key: str, raw: Any) -> str:
    value = _string(key, raw).strip()
    if value and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._~:-]*$", value):
        raise ConfigError(f"{key}: {raw!r} is not a checksum database name like sum.example.com")
    return value


def _path_prefix(key: str, raw: Any) -> str:
    value = _string(key, raw).strip().strip("/")
    if value and not re.match(r"^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$", value):
        raise ConfigError(f"{key}: {raw!r} is not a URL path like /athens")
    return "/" + value if value else ""


def _bool(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return raw.strip().lower() in ("true", "1", "yes")
    raise ConfigError(f"{key}: expected true or false, got {raw!r}")


def _fraction(key: str, raw: Any) -> float:
    try:
        value = float(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key}: expected a fraction from 0 to 1, got {raw!r}")
    return value


def _stats_exporter(key: str, raw: Any) -> str:
    value = _string(key, raw)
    if value not in ("prometheus", ""):
        raise ConfigError(f"{key}: {value!r} is not supported here: \"prometheus\" (/metrics) or \"\" (off)")
    return value


def _redirect_code(key: str, raw: Any) -> int:
    try:
        code = int(raw)
    except (TypeError, ValueError):
        code = 0
    if code not in (301, 302, 303, 307, 308):
        raise ConfigError(f"{key}: {raw!r} is not a redirect status (301, 302, 303, 307, 308)")
    return code


def _url(key: str, raw: Any) -> str:
    value = _string(key, raw).strip()
    if value and not re.match(r"^https?://[^\s/]+", value):
        raise ConfigError(f"{key}: {raw!r} is not an http(s) URL")
    return value


def _vulndb_url(key: str, raw: Any) -> str:
    """An http(s) URL, or ``off`` (or nothing): no upstream, the database only from ``athens-admin vulndb import``."""
    value = _string(key, raw).strip()
    return "" if value.lower() in ("", "off", "none") else _url(key, value).rstrip("/")


def _path(key: str, raw: Any) -> str:
    value = _string(key, raw)
    if "\x00" in value:
        raise ConfigError(f"{key}: NUL byte in path")
    return os.path.expanduser(value)


_PORT = re.compile(r"^(?:(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]*):)?(?P<port>[0-9]+)$")


def port_to_endpoint(port: str) -> str:
    """Athens' ``Port`` (``:3000``, ``3000``, ``127.0.0.1:3000``, ``[::1]:3000``) as a Twisted endpoint."""
    m = _PORT.match(port.strip())
    if not m or not 0 < int(m.group("port")) < 65536:
        raise ValueError(f"{port!r} is not a port (like :3000 or 127.0.0.1:3000)")
    host = (m.group("host") or "").strip("[]")
    endpoint = f"tcp:{int(m.group('port'))}"
    if host:
        endpoint += ":interface=" + host.replace(":", r"\:")
    return endpoint


@attrs.frozen
class Key:
    toml: tuple[str, ...]
    env: tuple[str, ...]
    attr: str
    parse: Callable[[str, Any], Any]

    @property
    def name(self) -> str:
        return ".".join(self.toml)


KEYS: tuple[Key, ...] = (
    Key(("Port",), ("ATHENS_PORT", "PORT"), "port", _port),
    Key(("UnixSocket",), ("ATHENS_UNIX_SOCKET",), "unix_socket", _path),
    Key(("StorageType",), ("ATHENS_STORAGE_TYPE",), "storage_type", _choice(STORAGE_TYPES)),
    Key(("Storage", "Disk", "RootPath"), ("ATHENS_DISK_STORAGE_ROOT",), "disk_root", _path),
    Key(("LogLevel",), ("ATHENS_LOG_LEVEL",), "log_level", _choice(LOG_LEVELS)),
    Key(("LogFormat",), ("ATHENS_LOG_FORMAT",), "log_format", _choice(LOG_FORMATS)),
    Key(("Timeout",), ("ATHENS_TIMEOUT",), "timeout", _positive_int),
    Key(("ShutdownTimeout",), ("ATHENS_SHUTDOWN_TIMEOUT",), "shutdown_timeout", _positive_int),
    Key(("GoBinary",), ("GO_BINARY_PATH",), "go_binary", _string),
    Key(("GoBinaryEnvVars",), ("ATHENS_GO_BINARY_ENV_VARS",), "go_env", _env_assignments),
    Key(("GoGetWorkers",), ("ATHENS_GOGET_WORKERS",), "go_get_workers", _positive_int),
    Key(("GoGetDir",), ("ATHENS_GOGET_DIR",), "go_get_dir", _path),
    Key(("StashTimeout",), ("ATHENS_STASH_TIMEOUT",), "stash_timeout", _positive_int),
    Key(("NETRCPath",), ("ATHENS_NETRC_PATH",), "netrc_path", _path),
    Key(("GithubToken",), ("ATHENS_GITHUB_TOKEN",), "github_token", _string),
    Key(("HGRCPath",), ("ATHENS_HGRC_PATH",), "hgrc_path", _path),
    Key(("NoSumPatterns",), ("ATHENS_GONOSUM_PATTERNS",), "no_sum_patterns", _string_list(",")),
    Key(("DownloadMode",), ("ATHENS_DOWNLOAD_MODE",), "download_mode", _download_mode),
    Key(("DownloadURL",), ("ATHENS_DOWNLOAD_URL",), "download_url", _url),
    Key(("NetworkMode",), ("ATHENS_NETWORK_MODE",), "network_mode", _choice(("strict", "offline", "fallback"))),
    Key(("FilterFile",), ("ATHENS_FILTER_FILE",), "filter_file", _path),
    Key(("GlobalEndpoint",), ("ATHENS_GLOBAL_ENDPOINT",), "global_endpoint", _url),
    Key(("ListCacheTTL",), ("ATHENS_LIST_CACHE_TTL",), "list_cache_ttl", _positive_int),
    Key(("IndexType",), ("ATHENS_INDEX_TYPE",), "index_type", _choice(INDEX_TYPES)),
    Key(("PathPrefix",), ("ATHENS_PATH_PREFIX",), "path_prefix", _path_prefix),
    Key(("ValidatorHook",), ("ATHENS_PROXY_VALIDATOR",), "validator_hook", _url),
    Key(("FillAfterClientLeaves",), ("ATHENS_FILL_AFTER_CLIENT_LEAVES",), "fill_after_client_leaves", _bool),
    Key(("ClientIdleTimeout",), ("ATHENS_CLIENT_IDLE_TIMEOUT",), "client_idle_timeout", _positive_int),
    Key(("RobotsFile",), ("ATHENS_ROBOTS_FILE",), "robots_file", _path),
    Key(("HomeTemplatePath",), ("ATHENS_HOME_TEMPLATE_PATH",), "home_template_path", _path),
    Key(("TraceExporter",), ("ATHENS_TRACE_EXPORTER",), "trace_exporter", _string),
    Key(("TraceExporterURL",), ("ATHENS_TRACE_EXPORTER_URL",), "trace_exporter_url", _url),
    Key(("TraceSamplingFraction",), ("ATHENS_TRACE_SAMPLING_FRACTION",), "trace_sampling_fraction", _fraction),
    Key(("BasicAuthUser",), ("BASIC_AUTH_USER",), "basic_auth_user", _string),
    Key(("TLSCertFile",), ("ATHENS_TLSCERT_FILE",), "tls_cert_file", _path),
    Key(("TLSKeyFile",), ("ATHENS_TLSKEY_FILE",), "tls_key_file", _path),
    Key(("ForceSSL",), ("PROXY_FORCE_SSL",), "force_ssl", _bool),
    Key(("StatsExporter",), ("ATHENS_STATS_EXPORTER",), "stats_exporter", _stats_exporter),
    Key(("ProtocolWorkers",), ("ATHENS_PROTOCOL_WORKERS",), "protocol_workers", _positive_int),
    Key(("BasicAuthPass",), ("BASIC_AUTH_PASS",), "basic_auth_pass", _string),
    Key(("SumDBs",), ("ATHENS_SUM_DBS",), "sum_dbs", _string_list(",")),
    Key(("SumDBKeys",), ("ATHENS_SUM_DB_KEYS",), "sum_db_keys", _sum_db_keys),
    Key(("VerifyChecksums",), ("ATHENS_VERIFY_CHECKSUMS",), "verify_checksums", _bool),
    Key(("OwnSumDB", "Name"), ("ATHENS_OWN_SUMDB_NAME",), "own_sumdb_name", _sumdb_name),
    Key(("OwnSumDB", "KeyFile"), ("ATHENS_OWN_SUMDB_KEY_FILE",), "own_sumdb_key_file", _path),
    Key(("OwnSumDB", "Patterns"), ("ATHENS_OWN_SUMDB_PATTERNS",), "own_sumdb_patterns", _string_list(",")),
    Key(("VulnDBURL",), ("ATHENS_VULNDB_URL",), "vulndb_url", _vulndb_url),
    Key(("VulnDBRefresh",), ("ATHENS_VULNDB_REFRESH",), "vulndb_refresh", _positive_int),
    Key(("VulnPolicy",), ("ATHENS_VULN_POLICY",), "vuln_policy", _choice(("off", "warn", "deny"))),
    Key(("VulnPolicyPatterns",), ("ATHENS_VULN_POLICY_PATTERNS",), "vuln_policy_patterns", _string_list(",")),
    Key(("VulnPolicyIgnore",), ("ATHENS_VULN_POLICY_IGNORE",), "vuln_policy_ignore", _string_list(",")),
    Key(("DownloadRedirectCode",), ("ATHENS_DOWNLOAD_REDIRECT_CODE",), "redirect_code", _redirect_code),
    Key(("Storage", "Redis", "Endpoint"), ("ATHENS_STORAGE_REDIS_ENDPOINT",), "redis_storage_endpoint", _string),
    Key(("Storage", "Redis", "Password"), ("ATHENS_STORAGE_REDIS_PASSWORD",), "redis_storage_password", _string),
    Key(("Storage", "Redis", "KeyPrefix"), ("ATHENS_STORAGE_REDIS_KEY_PREFIX",), "redis_key_prefix", _string),
    Key(("Storage", "Postgres", "URL"), ("ATHENS_STORAGE_POSTGRES_URL",), "postgres_url", _string),
    Key(("Storage", "Postgres", "MaxConnections"), ("ATHENS_STORAGE_POSTGRES_MAX_CONNECTIONS",),
        "postgres_max_connections", _positive_int),
    # S3 and MinIO storage: Athens' keys and variables (AWS_* as the AWS SDK reads them).
    Key(("Storage", "S3", "Region"), ("AWS_REGION",), "s3_region", _string),
    Key(("Storage", "S3", "Key"), ("AWS_ACCESS_KEY_ID",), "s3_key", _string),
    Key(("Storage", "S3", "Secret"), ("AWS_SECRET_ACCESS_KEY",), "s3_secret", _string),
    Key(("Storage", "S3", "Token"), ("AWS_SESSION_TOKEN",), "s3_token", _string),
    Key(("Storage", "S3", "Bucket"), ("ATHENS_S3_BUCKET_NAME",), "s3_bucket", _string),
    Key(("Storage", "S3", "ForcePathStyle"), ("AWS_FORCE_PATH_STYLE",), "s3_force_path_style", _bool),
    Key(("Storage", "S3", "UseDefaultConfiguration"), ("AWS_USE_DEFAULT_CONFIGURATION",),
        "s3_use_default_configuration", _bool),
    Key(("Storage", "S3", "CredentialsEndpoint"), ("AWS_CREDENTIALS_ENDPOINT",), "s3_credentials_endpoint", _string),
    Key(("Storage", "S3", "AwsContainerCredentialsRelativeURI"), ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",),
        "s3_container_credentials_relative_uri", _string),
    Key(("Storage", "S3", "Endpoint"), ("AWS_ENDPOINT",), "s3_endpoint", _string),
    Key(("Storage", "Minio", "Endpoint"), ("ATHENS_MINIO_ENDPOINT",), "minio_endpoint", _string),
    Key(("Storage", "Minio", "Key"), ("ATHENS_MINIO_ACCESS_KEY_ID",), "minio_key", _string),
    Key(("Storage", "Minio", "Secret"), ("ATHENS_MINIO_SECRET_ACCESS_KEY",), "minio_secret", _string),
    Key(("Storage", "Minio", "EnableSSL"), ("ATHENS_MINIO_USE_SSL",), "minio_enable_ssl", _bool),
    Key(("Storage", "Minio", "Bucket"), ("ATHENS_MINIO_BUCKET_NAME",), "minio_bucket", _string),
    Key(("Storage", "Minio", "Region"), ("ATHENS_MINIO_REGION",), "minio_region", _string),
    Key(("SingleFlightType",), ("ATHENS_SINGLE_FLIGHT_TYPE",), "single_flight_type", _choice(SINGLE_FLIGHT_TYPES)),
    Key(("SingleFlight", "Redis", "Endpoint"), ("ATHENS_REDIS_ENDPOINT",), "redis_endpoint", _string),
    # Athens reads these for Sentinel under [SingleFlight.RedisSentinel], from the same variables as Redis
    # (before the Redis keys here, so that a variable still wins over the file).
    Key(("SingleFlight", "RedisSentinel", "RedisPassword"), (), "redis_password", _string),
    Key(("SingleFlight", "RedisSentinel", "LockConfig", "TTL"), (), "lock_ttl", _positive_int),
    Key(("SingleFlight", "RedisSentinel", "LockConfig", "Timeout"), (), "lock_timeout", _positive_int),
    Key(("SingleFlight", "RedisSentinel", "LockConfig", "MaxRetries"), (), "lock_max_retries", _positive_int),
    Key(("SingleFlight", "RedisSentinel", "DB"), ("ATHENS_REDIS_SENTINEL_DB",), "sentinel_db", _non_negative_int),
    Key(("SingleFlight", "Redis", "Password"), ("ATHENS_REDIS_PASSWORD",), "redis_password", _string),
    Key(("SingleFlight", "Redis", "LockConfig", "TTL"), ("ATHENS_REDIS_LOCK_TTL",), "lock_ttl", _positive_int),
    Key(("SingleFlight", "Redis", "LockConfig", "Timeout"), ("ATHENS_REDIS_LOCK_TIMEOUT",), "lock_timeout",
        _positive_int),
    Key(("SingleFlight", "Redis", "LockConfig", "MaxRetries"), ("ATHENS_REDIS_LOCK_MAX_RETRIES",),
        "lock_max_retries", _positive_int),
    Key(("SingleFlight", "RedisSentinel", "Endpoints"), ("ATHENS_REDIS_SENTINEL_ENDPOINTS",), "sentinel_endpoints",
        _string_list(",")),
    Key(("SingleFlight", "RedisSentinel", "MasterName"), ("ATHENS_REDIS_SENTINEL_MASTER_NAME",), "sentinel_master",
        _string),
    Key(("SingleFlight", "RedisSentinel", "SentinelPassword"), ("ATHENS_REDIS_SENTINEL_PASSWORD",),
        "sentinel_password", _string),
    Key(("PrefetchEndpoint",), ("ATHENS_PREFETCH_ENDPOINT",), "prefetch_endpoint", _bool),
    Key(("SingleFlight", "Etcd", "Endpoints"), ("ATHENS_ETCD_ENDPOINTS",), "etcd_endpoints", _string_list(",")),
    # -- Google Cloud Storage and Azure Blob: Athens' names (ProjectID is accepted and unused, as the bucket
    # exists already); Storage.AzureBlob.Endpoint / ATHENS_AZURE_ENDPOINT are ours (Athens has no emulator
    # setting); Athens' TOML decoder ignores case, and its config.dev.toml spells ManagedIdentityResourceId --
    Key(("Storage", "GCP", "ProjectID"), ("GOOGLE_CLOUD_PROJECT",), "gcp_project", _string),
    Key(("Storage", "GCP", "Bucket"), ("ATHENS_STORAGE_GCP_BUCKET",), "gcp_bucket", _string),
    Key(("Storage", "GCP", "JSONKey"), ("ATHENS_STORAGE_GCP_JSON_KEY",), "gcp_json_key", _string),
    Key(("Storage", "AzureBlob", "AccountName"), ("ATHENS_AZURE_ACCOUNT_NAME",), "azure_account_name", _string),
    Key(("Storage", "AzureBlob", "AccountKey"), ("ATHENS_AZURE_ACCOUNT_KEY",), "azure_account_key", _string),
    Key(("Storage", "AzureBlob", "ManagedIdentityResourceId"), (), "azure_managed_identity_resource_id", _string),
    Key(("Storage", "AzureBlob", "ManagedIdentityResourceID"), ("ATHENS_AZURE_MANAGED_IDENTITY_RESOURCE_ID",),
        "azure_managed_identity_resource_id", _string),
    Key(("Storage", "AzureBlob", "CredentialScope"), ("ATHENS_AZURE_CREDENTIAL_SCOPE",), "azure_credential_scope",
        _string),
    Key(("Storage", "AzureBlob", "ContainerName"), ("ATHENS_AZURE_CONTAINER_NAME",), "azure_container_name", _string),
    Key(("Storage", "AzureBlob", "Endpoint"), ("ATHENS_AZURE_ENDPOINT",), "azure_endpoint", _url),
)

def _lookup(table: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = table
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _leaves(table: Mapping[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, value in table.items():
        if isinstance(value, Mapping) and value:
            found += _leaves(value, path + (name,))
        else:
            found.append(path + (name,))
    return found


def _unused_keys(table: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Athens keys this version does not use, and keys that are nobody's (typos), sections included."""
    used = {k.toml for k in KEYS}
    unused, typos = [], []
    for leaf in _leaves(table):
        if leaf in used:
            continue
        name = ".".join(leaf)
        (unused if is_athens_key(name) else typos).append(name)
    return unused, typos


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``ATHENS_*`` variables that neither this proxy nor Athens reads."""
    ours = {env for k in KEYS for env in k.env}
    return sorted(v for v in environ if v.startswith("ATHENS_") and v not in ours and v not in ATHENS_ENV_VARS)


def load(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """
    Build the configuration.  ``path`` None means ``athens.toml`` in the
    working directory if there is one (as Athens does), else defaults.
    ``overrides`` are attribute names from the command line.
    """
    environ = os.environ if environ is None else environ
    notes: list[str] = []
    warnings: list[str] = []
    table: Mapping[str, Any] = {}
    if path is None and os.path.isfile("athens.toml"):
        path = "athens.toml"
    if path is not None:
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"config file {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: {e}") from None
        notes.append(f"configuration file: {path}")
        unused, typos = _unused_keys(table)
        if unused:
            sections = sorted({name.split(".", 1)[0] for name in unused})
            notes.append(f"{len(unused)} Athens keys are accepted but not used by this version (in: "
                         f"{', '.join(sections)})")
        warnings += [f"{path}: {name} is not a key of athens-py or Athens (a typo?): ignored" for name in typos]
    warnings += [f"{name} is not a variable athens-py or Athens reads (a typo?): ignored"
                 for name in _unknown_variables(environ)]

    values: dict[str, Any] = {}
    for key in KEYS:
        raw = _lookup(table, key.toml)
        if raw is not None:
            values[key.attr] = key.parse(key.name, raw)
        for env in key.env:
            if environ.get(env):
                values[key.attr] = key.parse(env, environ[env])
                break
    for attr, raw in (overrides or {}).items():
        if raw is not None:
            key = next(k for k in KEYS if k.attr == attr)
            values[attr] = key.parse("--" + attr.replace("_", "-"), raw)
    return Config(**values, notes=tuple(notes), warnings=tuple(warnings))
