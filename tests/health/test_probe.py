"""The TCP connect check shared by the health checker and the registrar."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Address
from ddiscover.health.probe import connect_check
from ddiscover.health.result import CheckStatus
from tests.fake_endpoints import FakeEndpoints

WEB = Address("web.example", 8080)


class ConnectCheckTests(SynchronousTestCase):
    """Every way a connect can end is a result; only cancellation propagates."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoints = FakeEndpoints()
        self.checking = Deferred.fromCoroutine(connect_check(self.endpoints(WEB, 1.0), self.clock))

    def test_connected(self) -> None:
        """A connect that succeeds is L4OK, and the check hangs up at once."""
        self.clock.advance(0.25)
        transport = self.endpoints.last(WEB).succeed()
        result = self.successResultOf(self.checking)
        self.assertEqual((result.status, result.duration), (CheckStatus.L4OK, 0.25))
        self.assertTrue(transport.disconnecting)

    def test_refused(self) -> None:
        """A refused connect is L4CON "Connection refused"."""
        self.endpoints.last(WEB).refuse()
        result = self.successResultOf(self.checking)
        self.assertEqual((result.status, result.info), (CheckStatus.L4CON, "Connection refused"))

    def test_name_not_resolved(self) -> None:
        """A hostname that does not resolve (an ``OSError``, not a ``ConnectError``) is a failed
        check too, not an exception that would end the caller's loop."""
        self.endpoints.last(WEB).not_resolved()
        result = self.successResultOf(self.checking)
        self.assertEqual(result.status, CheckStatus.L4CON)
        self.assertIn("web.example", result.info)

    def test_cancelled(self) -> None:
        """Cancelling the check cancels the connect and propagates as cancellation."""
        self.checking.cancel()
        self.assertTrue(self.endpoints.last(WEB).cancelled)
        self.failureResultOf(self.checking, ConnectingCancelledError)
