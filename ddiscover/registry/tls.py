"""TLS for ``https://`` etcd endpoints: the CA to trust and our client certificate, checked.

The only module of the registry that imports OpenSSL's certificate handling; the options call
:func:`tls_policy` once at parse time, so an unusable file stops the command with one line.
"""

from __future__ import annotations

from typing import Any

from OpenSSL.crypto import FILETYPE_PEM
from OpenSSL.crypto import Error as OpenSSLError
from twisted.internet.ssl import (
    Certificate,
    KeyPair,
    PrivateCertificate,
    optionsForClientTLS,
)
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from ddiscover.registry.access import TLSFiles
from ddiscover.registry.errors import TLSFileError


@implementer(IPolicyForHTTPS)
class _ClientCertificatePolicy:
    """Verifies the server against ``trust_root`` and presents ``certificate`` to it."""

    def __init__(self, trust_root: Certificate | None, certificate: PrivateCertificate) -> None:
        self._trust_root = trust_root
        self._certificate = certificate

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:  # noqa: N802 (Twisted's)
        return optionsForClientTLS(
            hostname.decode("ascii"),
            trustRoot=self._trust_root,
            clientCertificate=self._certificate,
        )


def _read(which: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSFileError(which, path, f"cannot be read: {e.strerror}") from None


def _certificate(which: str, path: str) -> Certificate:
    try:
        return Certificate.loadPEM(_read(which, path))
    except OpenSSLError:
        raise TLSFileError(which, path, "holds no PEM certificate") from None


def _load(files: TLSFiles) -> tuple[Certificate | None, PrivateCertificate | None]:
    """The CA to trust and our certificate with its key, each checked on its own."""
    trust = _certificate("cafile", files.cafile) if files.cafile else None
    if not files.certfile:
        return trust, None
    certificate = _certificate("certfile", files.certfile)
    which, path = ("keyfile", files.keyfile) if files.keyfile else ("certfile", files.certfile)
    try:
        key = KeyPair.load(_read(which, path), FILETYPE_PEM)
    except OpenSSLError:
        raise TLSFileError(which, path, "holds no PEM private key") from None
    if not certificate.getPublicKey().matches(key):
        raise TLSFileError(which, path, f"is not the key of {files.certfile!r}")
    return trust, PrivateCertificate.fromCertificateAndKeyPair(certificate, key)


def tls_policy(files: TLSFiles) -> IPolicyForHTTPS:
    """The TLS policy for ``files``; raises :class:`TLSFileError` on an unusable file."""
    trust, certificate = _load(files)
    if certificate is not None:
        return _ClientCertificatePolicy(trust, certificate)
    if trust is None:
        return BrowserLikePolicyForHTTPS()
    return BrowserLikePolicyForHTTPS(trustRoot=trust)
