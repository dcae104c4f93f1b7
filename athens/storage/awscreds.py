"""
AWS credentials for the S3 client, found and refreshed by botocore (AWS's own
Python library) rather than by code of ours.

Athens' two modes: with ``UseDefaultConfiguration``, the SDK's default chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, the
shared credentials file with ``AWS_PROFILE``, container credentials from
``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI``/``_FULL_URI``, EC2 instance
metadata with IMDSv2); without it, ``CredentialsEndpoint`` +
``AwsContainerCredentialsRelativeURI`` if set, else the static Key, Secret
and Token.  Looking credentials up and refreshing them does blocking HTTP and
file reads: that runs in the thread pool, only when botocore says a refresh is
due (so signing a request normally costs no thread hop).
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from botocore.credentials import ContainerProvider, Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError
from twisted.internet.threads import deferToThread

from athens.storage.interface import StorageUnavailable


@attrs.frozen
class CredentialSettings:
    """What the configuration says about credentials (Athens' ``[Storage.S3]`` keys)."""

    key: str = ""
    secret: str = attrs.field(default="", repr=False)
    token: str = attrs.field(default="", repr=False)
    use_default_chain: bool = False
    #: ``CredentialsEndpoint`` + ``AwsContainerCredentialsRelativeURI``: a container credentials URL.
    endpoint: str = ""

    def describe(self) -> str:
        """For errors and the start-up log; never the secret."""
        if self.use_default_chain:
            return "the AWS default credential chain (UseDefaultConfiguration)"
        if self.endpoint:
            return f"the credentials endpoint {self.endpoint}" + (" then the static Key" if self.key else "")
        return f"the static Key {self.key}" if self.key else "no credentials (Key and Secret are empty)"


def _default_chain() -> Credentials | None:
    import botocore.session

    return botocore.session.Session().get_credentials()


def loader(settings: CredentialSettings) -> Callable[[], Any]:
    """A blocking function that finds the credentials (None if there are none)."""

    def load() -> Any:
        if settings.use_default_chain:
            return _default_chain()
        if settings.endpoint:
            try:
                found = ContainerProvider({"AWS_CONTAINER_CREDENTIALS_FULL_URI": settings.endpoint}).load()
            except BotoCoreError:
                found = None
            if found is not None or not settings.key:
                return found
        if settings.key and settings.secret:
            return Credentials(settings.key, settings.secret, settings.token or None)
        return None

    return load


@attrs.define
class CredentialSource:
    """The credentials to sign the next request with, refreshed before they expire."""

    settings: CredentialSettings
    _credentials: Any = None

    async def get(self) -> ReadOnlyCredentials:
        try:
            if self._credentials is None:
                self._credentials = await deferToThread(loader(self.settings))
                if self._credentials is None:
                    raise StorageUnavailable(f"s3: no credentials found ({self.settings.describe()})")
            if isinstance(self._credentials, RefreshableCredentials) and self._credentials.refresh_needed():
                return await deferToThread(self._credentials.get_frozen_credentials)
            return self._credentials.get_frozen_credentials()
        except (BotoCoreError, OSError, ValueError) as e:
            raise StorageUnavailable(f"s3: cannot get credentials from {self.settings.describe()}: {e}") from None
