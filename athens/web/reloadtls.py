"""
TLS from ``TLSCertFile``/``TLSKeyFile``, read again on SIGHUP.

Certificates are renewed (cert-manager, certbot) while the daemon runs: a
SIGHUP reads both files again, and new connections get the new certificate;
connections already open keep theirs.  Files that do not load leave the old
certificate in service, with one error line.
"""

from __future__ import annotations

import signal
from typing import Any

import attrs
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()


class TLSFilesError(Exception):
    """The certificate or key file cannot be used."""


def load_options(cert_file: str, key_file: str) -> ssl.CertificateOptions:
    try:
        with open(cert_file, "rb") as f:
            cert = f.read()
        with open(key_file, "rb") as f:
            key = f.read()
        certificate = ssl.PrivateCertificate.loadPEM(cert + b"\n" + key)
        chain = [ssl.Certificate.loadPEM(block).original for block in _pem_blocks(cert)[1:]]
    except OSError as e:
        raise TLSFilesError(f"{e.filename}: {e.strerror}") from None
    except (SSL.Error, crypto.Error, ValueError) as e:
        raise TLSFilesError(f"{cert_file} / {key_file}: not a matching PEM certificate and key ({e})") from None
    return ssl.CertificateOptions(privateKey=certificate.privateKey.original, certificate=certificate.original,
                                  extraCertChain=chain)


def _pem_blocks(data: bytes) -> list[bytes]:
    """The certificates of a chain file, leaf first."""
    marker = b"-----BEGIN CERTIFICATE-----"
    return [marker + part for part in data.split(marker)[1:]]


@implementer(IOpenSSLServerConnectionCreator)
@attrs.define
class ReloadableTLS:
    """What TLSMemoryBIOFactory asks for each new connection: made from the files as last read."""

    cert_file: str
    key_file: str
    _options: ssl.CertificateOptions = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._options = load_options(self.cert_file, self.key_file)

    def serverConnectionForTLS(self, protocol: Any) -> SSL.Connection:  # noqa: N802 - Twisted's name
        return SSL.Connection(self._options.getContext(), None)

    def reload(self) -> bool:
        try:
            self._options = load_options(self.cert_file, self.key_file)
        except TLSFilesError as e:
            log.error("SIGHUP: TLS files not reloaded, the old certificate stays in service: {error}", error=str(e))
            return False
        log.info("SIGHUP: TLS certificate reloaded from {cert}", cert=self.cert_file)
        return True

    def reload_on_sighup(self, reactor: Any) -> None:
        signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(self.reload))
