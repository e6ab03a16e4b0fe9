"""Tests for :mod:`ddiscover.health.result`: connect failures in haproxy's words."""

from __future__ import annotations

import errno

from twisted.internet import error
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.health.result import CheckResult, CheckStatus, classify_failure


def classify(exc: BaseException, duration: float = 0.0) -> CheckResult:
    """Classify ``exc`` as if a connect had failed with it."""
    return classify_failure(Failure(exc), duration)


class ClassifyFailureTests(SynchronousTestCase):
    """``classify_failure`` maps what Twisted's connectors raise to check results."""

    def test_table(self) -> None:
        """Each connect failure gets haproxy's status and info."""
        table = [
            (
                error.ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
                CheckResult(CheckStatus.L4CON, "Connection refused"),
            ),
            (error.ConnectionRefusedError(), CheckResult(CheckStatus.L4CON, "Connection refused")),
            (error.TimeoutError(), CheckResult(CheckStatus.L4TOUT, "")),
            (
                error.ConnectBindError(errno.EMFILE, "Too many open files"),
                CheckResult(CheckStatus.SOCKERR, "Too many open files"),
            ),
            (
                error.ConnectError(osError=errno.ENFILE),
                CheckResult(CheckStatus.SOCKERR, "Too many open files in system"),
            ),
            (
                error.ConnectError(osError=errno.ENOBUFS),
                CheckResult(CheckStatus.SOCKERR, "No buffer space available"),
            ),
            (
                error.NoRouteError(errno.EHOSTUNREACH, "No route to host"),
                CheckResult(CheckStatus.L4CON, "No route to host"),
            ),
            (
                error.DNSLookupError("no.such.host"),
                CheckResult(CheckStatus.L4CON, "DNS lookup failed: no.such.host."),
            ),
            (RuntimeError(), CheckResult(CheckStatus.L4CON, "RuntimeError")),
        ]
        for exc, expected in table:
            with self.subTest(repr(exc)):
                self.assertEqual(classify(exc), expected)

    def test_duration(self) -> None:
        """The duration given is kept on the result."""
        self.assertEqual(classify(error.TimeoutError(), 2.0).duration, 2.0)


class CheckResultTests(SynchronousTestCase):
    """``ok``, ``counts`` and the descriptions used in log lines."""

    def test_ok_and_counts(self) -> None:
        """Of a TCP connect's results only L4OK is ok; only SOCKERR does not count."""
        layer4 = [s for s in CheckStatus if not s.value.startswith("L7")]
        self.assertEqual(
            {s: (CheckResult(s).ok, CheckResult(s).counts) for s in layer4},
            {
                CheckStatus.L4OK: (True, True),
                CheckStatus.L4CON: (False, True),
                CheckStatus.L4TOUT: (False, True),
                CheckStatus.SOCKERR: (False, False),
            },
        )

    def test_descriptions(self) -> None:
        """Descriptions are haproxy's ``reason:`` words."""
        self.assertEqual(
            [s.description for s in CheckStatus],
            [
                "Layer4 check passed",
                "Layer4 connection problem",
                "Layer4 timeout",
                "Socket error",
                "Layer7 check passed",
                "Layer7 check conditionally passed",
                "Layer7 wrong status",
                "Layer7 invalid response",
                "Layer7 timeout",
            ],
        )
