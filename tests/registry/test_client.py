"""Tests for the request layer :class:`ddiscover.registry.client.EtcdHTTP`: its headers
timeout is ``Deferred.addTimeout`` on the injected clock, told apart from the caller's cancel
whatever treq turns a cancel into."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hyperlink import URL
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import ResponseNeverReceived

from ddiscover.registry.client import EtcdHTTP, HTTPClientLike
from ddiscover.registry.errors import RegistryUnavailable

FIRST = URL.from_text("http://etcd-a.test:2379")
SECOND = URL.from_text("http://etcd-b.test:2379")

# What treq's request Deferred fails with when cancelled, by stage.
CANCELS: list[Callable[[], BaseException]] = [
    CancelledError,
    lambda: ConnectingCancelledError(FIRST),
    lambda: ResponseNeverReceived([Failure(CancelledError())]),
]


class PendingHTTP:
    """An HTTP client whose requests never answer; cancelling one fails it with ``cancel()``."""

    def __init__(self, cancel: Callable[[], BaseException]) -> None:
        self.cancel = cancel
        self.timeouts: list[float | None] = []

    def request(self, method: str, url: str, /, **kwargs: Any) -> Deferred[Any]:
        """A request that waits until cancelled."""
        self.timeouts.append(kwargs["timeout"])
        return Deferred(lambda d: d.errback(self.cancel()))


class HeadersTimeoutTests(SynchronousTestCase):
    """The headers timeout, and cancellation, whatever the cancel becomes."""

    def etcd(self, cancel: Callable[[], BaseException]) -> tuple[EtcdHTTP, PendingHTTP, Clock]:
        """An EtcdHTTP on two endpoints, over a client that never answers."""
        http = PendingHTTP(cancel)
        clock = Clock()
        client: HTTPClientLike = http
        return EtcdHTTP(client, clock, (FIRST, SECOND), request_timeout=5.0), http, clock

    def test_timeout(self) -> None:
        """No headers within the request timeout is unavailability and the next endpoint."""
        for cancel in CANCELS:
            with self.subTest(cancel=cancel):
                etcd, http, clock = self.etcd(cancel)
                d = Deferred.fromCoroutine(etcd.send("GET", ("v2", "keys")))
                clock.advance(4.9)
                self.assertNoResult(d)
                clock.advance(0.1)
                failure = self.failureResultOf(d, RegistryUnavailable)
                self.assertEqual(failure.value.problem, "no response within 5s")
                self.assertEqual(etcd.endpoint, SECOND)
                self.assertEqual(clock.getDelayedCalls(), [])
                self.assertEqual(http.timeouts, [None])

    def test_cancel(self) -> None:
        """The caller's cancel is CancelledError, leaves no timer, and keeps the endpoint."""
        for cancel in CANCELS:
            with self.subTest(cancel=cancel):
                etcd, _, clock = self.etcd(cancel)
                d = Deferred.fromCoroutine(etcd.send("GET", ("v2", "keys")))
                clock.advance(1)
                d.cancel()
                self.failureResultOf(d, CancelledError)
                self.assertEqual(etcd.endpoint, FIRST)
                self.assertEqual(clock.getDelayedCalls(), [])
