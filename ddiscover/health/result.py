"""The outcome of one connect attempt to a backend, in haproxy's vocabulary.

Health checks and the proxy's own connect attempts both produce a :class:`CheckResult`, so a
refused proxied connect counts as a failed check with the same wording in the logs.
"""

from __future__ import annotations

import enum
import errno
import os

import attrs
from twisted.internet import error
from twisted.python.failure import Failure

from ddiscover.text import clip


class CheckStatus(enum.Enum):
    """haproxy's check status codes that a TCP connect or an HTTP check can produce."""

    L4OK = "L4OK"
    L4CON = "L4CON"
    L4TOUT = "L4TOUT"
    SOCKERR = "SOCKERR"
    L7OK = "L7OK"
    L7OKC = "L7OKC"
    L7STS = "L7STS"
    L7RSP = "L7RSP"
    L7TOUT = "L7TOUT"

    @property
    def description(self) -> str:
        """haproxy's words for the status, as in its ``reason:`` log field."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    CheckStatus.L4OK: "Layer4 check passed",
    CheckStatus.L4CON: "Layer4 connection problem",
    CheckStatus.L4TOUT: "Layer4 timeout",
    CheckStatus.SOCKERR: "Socket error",
    CheckStatus.L7OK: "Layer7 check passed",
    CheckStatus.L7OKC: "Layer7 check conditionally passed",
    CheckStatus.L7STS: "Layer7 wrong status",
    CheckStatus.L7RSP: "Layer7 invalid response",
    CheckStatus.L7TOUT: "Layer7 timeout",
}

_LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@attrs.frozen
class CheckResult:
    """One connect outcome: its status, the detail (``"Connection refused"``), its duration."""

    status: CheckStatus
    info: str = ""
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is CheckStatus.L4OK

    @property
    def counts(self) -> bool:
        """Whether this says anything about the backend; our own resource errors do not."""
        return self.status is not CheckStatus.SOCKERR


def classify_failure(failure: Failure, duration: float = 0.0) -> CheckResult:
    """Map a failed connect to a result; local errors such as EMFILE become ``SOCKERR``.

    Twisted reports socket errors from ``connect()`` as ``ConnectError`` carrying the errno in
    ``osError``; ``ConnectionRefusedError`` and ``TimeoutError`` are its subclasses.
    """
    exc = failure.value
    if isinstance(exc, error.ConnectionRefusedError):
        return CheckResult(CheckStatus.L4CON, "Connection refused", duration)
    if isinstance(exc, error.TimeoutError):
        return CheckResult(CheckStatus.L4TOUT, "", duration)
    code = getattr(exc, "osError", None)
    if isinstance(code, int):
        status = CheckStatus.SOCKERR if code in _LOCAL_ERRNOS else CheckStatus.L4CON
        return CheckResult(status, os.strerror(code), duration)
    return CheckResult(CheckStatus.L4CON, clip(str(exc) or type(exc).__name__), duration)
