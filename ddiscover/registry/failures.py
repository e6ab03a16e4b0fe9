"""Short descriptions of network failures, looking inside Twisted's wrapper exceptions."""

from __future__ import annotations

from OpenSSL.SSL import Error as TLSError
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.web.client import RequestTransmissionFailed, ResponseFailed

from ddiscover.registry.errors import one_line

# What the network, not our code, can make a request fail with.
NETWORK_ERRORS = (
    ConnectError,
    ConnectionClosed,
    ResponseFailed,
    RequestTransmissionFailed,
    OSError,
)


def _tls_reasons(error: TLSError) -> str:
    """OpenSSL's reasons (``certificate verify failed``, ``tls alert bad certificate``)."""
    queue = error.args[0] if error.args else None
    if isinstance(queue, list):
        reasons = [str(entry[-1]) for entry in queue if isinstance(entry, tuple) and entry]
        if reasons:
            return "; ".join(reasons)
    return one_line(str(error)) or "no reason given"


def describe(error: BaseException) -> str:
    """A short description of a network failure, looking inside Twisted's wrapper exceptions.

    A failed TLS handshake says so, with OpenSSL's reason: a server that wants a client
    certificate answers ``tls alert bad certificate``, an untrusted server certificate is
    ``certificate verify failed``.
    """
    if isinstance(error, ResponseFailed | RequestTransmissionFailed) and error.reasons:
        tls = [r.value for r in error.reasons if isinstance(r.value, TLSError)]
        if tls:
            return f"TLS handshake failed: {_tls_reasons(tls[0])}"
        inner = "; ".join(one_line(r.getErrorMessage()) or r.type.__name__ for r in error.reasons)
        return f"{type(error).__name__}: {inner}"
    if isinstance(error, TLSError):
        return f"TLS handshake failed: {_tls_reasons(error)}"
    return one_line(str(error)).rstrip(".") or type(error).__name__
