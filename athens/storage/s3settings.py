"""
S3 and MinIO settings from Athens' keys, and the start-up check of the bucket.

``[Storage.S3]`` and ``[Storage.Minio]`` are read only here, and checked only
when ``StorageType`` names them (Athens' own sample file, with its
placeholders, loads whatever the storage type).  The check at start-up is one
signed ``HEAD`` of the bucket, blocking (the reactor is not running yet):
the daemon refuses to start with one line naming the key to fix.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit

from athens.config import Config, ConfigError
from athens.storage.awscreds import CredentialSettings, loader
from athens.storage.s3 import S3Settings, _error, _Signer


def s3_settings(config: Config) -> S3Settings:
    """``StorageType = "s3"``: Athens' ``[Storage.S3]``."""
    if not config.s3_bucket:
        raise ConfigError("Storage.S3.Bucket (ATHENS_S3_BUCKET_NAME): required for StorageType s3")
    if not config.s3_region:
        raise ConfigError("Storage.S3.Region (AWS_REGION): required for StorageType s3")
    endpoint = config.s3_endpoint.strip()
    if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ConfigError(f"Storage.S3.Endpoint (AWS_ENDPOINT): {endpoint!r} is not an http(s) URL")
    credentials_url = ""
    if config.s3_credentials_endpoint or config.s3_container_credentials_relative_uri:
        credentials_url = config.s3_credentials_endpoint.rstrip("/") + config.s3_container_credentials_relative_uri
        if urlsplit(credentials_url).scheme not in ("http", "https"):
            raise ConfigError(f"Storage.S3.CredentialsEndpoint (AWS_CREDENTIALS_ENDPOINT): {credentials_url!r} "
                              "is not an http(s) URL (with AwsContainerCredentialsRelativeURI appended)")
    credentials = CredentialSettings(config.s3_key, config.s3_secret, config.s3_token,
                                     config.s3_use_default_configuration, credentials_url)
    if not (credentials.use_default_chain or credentials.endpoint or (credentials.key and credentials.secret)):
        raise ConfigError("Storage.S3.Key and Storage.S3.Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): "
                          "required unless UseDefaultConfiguration or CredentialsEndpoint is set")
    return S3Settings(config.s3_bucket, config.s3_region, endpoint, config.s3_force_path_style, credentials,
                      float(config.timeout))


def minio_settings(config: Config) -> S3Settings:
    """``StorageType = "minio"``: Athens' ``[Storage.Minio]`` (a host:port endpoint, path-style requests)."""
    for value, key in ((config.minio_endpoint, "Endpoint (ATHENS_MINIO_ENDPOINT)"),
                       (config.minio_key, "Key (ATHENS_MINIO_ACCESS_KEY_ID)"),
                       (config.minio_secret, "Secret (ATHENS_MINIO_SECRET_ACCESS_KEY)"),
                       (config.minio_bucket, "Bucket (ATHENS_MINIO_BUCKET_NAME)")):
        if not value:
            raise ConfigError(f"Storage.Minio.{key}: required for StorageType minio")
    host = config.minio_endpoint.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
    if not host or "/" in host:
        raise ConfigError(f"Storage.Minio.Endpoint: {config.minio_endpoint!r} is not host:port")
    scheme = "https" if config.minio_enable_ssl else "http"
    return S3Settings(config.minio_bucket, config.minio_region or "us-east-1", f"{scheme}://{host}", True,
                      CredentialSettings(config.minio_key, config.minio_secret), float(config.timeout))


def check_bucket(settings: S3Settings, section: str, create: bool = False) -> None:
    """
    A signed ``HEAD`` of the bucket, blocking; ``create``: make it if it is
    missing (as Athens' minio storage does).  Raises ConfigError naming the key.
    """
    try:
        credentials = loader(settings.credentials)()
    except Exception as e:  # botocore's many errors, files, HTTP: all say the same to the operator
        raise ConfigError(f"{section}: cannot get credentials from {settings.credentials.describe()}: {e}") from None
    if credentials is None:
        raise ConfigError(f"{section}: no credentials found ({settings.credentials.describe()})")
    frozen = credentials.get_frozen_credentials()
    status, code, message = _send(settings, frozen, "HEAD", b"")
    if status == 404 and create:
        body = b""
        if settings.region != "us-east-1":
            body = (f"<CreateBucketConfiguration><LocationConstraint>{settings.region}"
                    f"</LocationConstraint></CreateBucketConfiguration>").encode()
        status, code, message = _send(settings, frozen, "PUT", body)
    if status in (200, 204):
        return
    where = f"{settings.bucket!r} at {settings.base}"
    if status == 0:
        raise ConfigError(f"{section}.Endpoint: cannot reach {settings.base}: {message}")
    if status == 404:
        raise ConfigError(f"{section}.Bucket: the bucket {where} does not exist")
    if status in (401, 403):
        raise ConfigError(f"{section}.Key: the store refused the credentials for {where} "
                          f"({status} {code or 'AccessDenied'}{': ' + message if message else ''})")
    raise ConfigError(f"{section}: the bucket {where} answered {status} {code} {message}".rstrip())


def _send(settings: S3Settings, credentials: object, method: str, body: bytes) -> tuple[int, str, str]:
    """One signed request with urllib (which honours HTTP(S)_PROXY and NO_PROXY); (status, code, message)."""
    import hashlib

    from botocore.awsrequest import AWSRequest

    url = settings.url()
    request = AWSRequest(method=method, url=url)
    request.context["payload_hash"] = hashlib.sha256(body).hexdigest()
    _Signer(credentials, "s3", settings.region).add_auth(request)
    prepared = urllib.request.Request(url, data=body or None, method=method, headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(prepared, timeout=min(settings.timeout, 30)) as response:
            return response.status, "", ""
    except urllib.error.HTTPError as e:
        code, message = _error(e.code, e.read(64 << 10))
        return e.code, code if code != str(e.code) else "", message
    except (urllib.error.URLError, OSError) as e:
        return 0, "", str(getattr(e, "reason", e))

