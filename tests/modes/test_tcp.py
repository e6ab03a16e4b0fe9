"""Tests for :mod:`ddiscover.modes.tcp` and its relay, on fake transports and a memory reactor.

Each test drives the two protocols the way ``tcp.Connection`` would (``dataReceived``,
``readConnectionLost``, ``writeConnectionLost``, ``connectionLost``) and checks what they do to
the transports, the counters, the health view and the session tracker.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import cast

from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Backend
from ddiscover.health.result import CheckStatus
from ddiscover.modes.tcp import Session
from ddiscover.proxy.relay import BackendSide, ClientSide
from ddiscover.proxy.service import ServiceProxy
from tests.proxy import FakeHealth, FakeTCPTransport, RecordingTracker, backend, make_config

A, B, C = backend("a", 8001), backend("b", 8002), backend("c", 8003)


def formats(events: Sequence[LogEvent]) -> list[str]:
    """The ``log_format`` of each event."""
    return [event["log_format"] for event in events]


class Harness:
    """A ServiceProxy on a memory reactor, with helpers to accept and connect."""

    def __init__(self, backends: Sequence[Backend], up: Sequence[Backend] | None = None, **config):
        self.reactor = MemoryReactorClock()
        self.health = FakeHealth(b.address for b in (backends if up is None else up))
        self.tracker = RecordingTracker()
        self.proxy = ServiceProxy(
            "web", self.reactor, make_config(**config), self.health, self.tracker
        )
        self.proxy.update(frozenset(backends))

    def accept(self) -> tuple[ClientSide, FakeTCPTransport]:
        """A new client connection."""
        client = self.proxy.buildProtocol(IPv4Address("TCP", "192.0.2.1", 40000))
        assert client is not None
        transport = FakeTCPTransport(self.reactor)
        transport.connect(client)
        return client, transport

    def attempts(self) -> list[tuple[str, int, float]]:
        """Every connectTCP so far as (host, port, timeout)."""
        return [(host, port, timeout) for host, port, _, timeout, _ in self.reactor.tcpClients]

    def succeed(self, index: int = -1) -> tuple[BackendSide, FakeTCPTransport]:
        """Let connect attempt ``index`` succeed."""
        host, port, factory, _, _ = self.reactor.tcpClients[index]
        side = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert isinstance(side, BackendSide)
        transport = FakeTCPTransport(self.reactor)
        transport.connect(side)
        return side, transport

    def fail(self, exception: Exception, index: int = -1) -> None:
        """Let connect attempt ``index`` fail with ``exception``."""
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(self.reactor.connectors[index], Failure(exception))

    def established(
        self,
    ) -> tuple[ClientSide, FakeTCPTransport, BackendSide, FakeTCPTransport]:
        """A client connected through to the next backend."""
        client, client_t = self.accept()
        side, backend_t = self.succeed()
        return client, client_t, side, backend_t


class ConnectTests(SynchronousTestCase):
    """Accepting a client and connecting it to a backend."""

    def test_client_paused_until_backend_connects(self) -> None:
        """The client is not read until the backend is connected and both producers are
        registered; both sockets get TCP_NODELAY and keepalive."""
        harness = Harness([A], connect_timeout=2.5)
        client, client_t = harness.accept()
        self.assertEqual(client_t.producerState, "paused")
        self.assertEqual((client_t.nodelay, client_t.keepalive), (True, True))
        self.assertEqual(harness.attempts(), [("10.0.0.1", 8001, 2.5)])

        backend, backend_t = harness.succeed()
        self.assertEqual((backend_t.nodelay, backend_t.keepalive), (True, True))
        self.assertIs(client_t.producer, backend)
        self.assertIs(backend_t.producer, client)
        self.assertEqual(client_t.producerState, "producing")
        self.assertEqual(client_t.calls, ["pauseProducing", "registerProducer", "resumeProducing"])

    def test_bytes_both_ways(self) -> None:
        """Bytes from either end reach the other and are counted per service and backend."""
        harness = Harness([A])
        client, client_t, side, backend_t = harness.established()
        client.dataReceived(b"request")
        side.dataReceived(b"response!")
        self.assertEqual(backend_t.value(), b"request")
        self.assertEqual(client_t.value(), b"response!")
        for counters in (harness.proxy.counters, harness.proxy.servers[A]):
            self.assertEqual((counters.bin, counters.bout), (7, 9))

    def test_round_robin_across_clients(self) -> None:
        """Successive clients go to successive backends."""
        harness = Harness([A, B])
        for _ in range(3):
            harness.accept()
        self.assertEqual([port for _, port, _ in harness.attempts()], [8001, 8002, 8001])

    def test_session_counters(self) -> None:
        """scur, smax and stot follow sessions per service and per backend; the tracker
        sees every session open and close."""
        harness = Harness([A])
        _, client_t, _, backend_t = harness.established()
        harness.established()
        service, server = harness.proxy.counters, harness.proxy.servers[A]
        for counters in (service, server):
            self.assertEqual((counters.scur, counters.smax, counters.stot), (2, 2, 2))
        self.assertEqual(len(harness.tracker.open), 2)

        backend_t.loseConnection()
        backend_t.finish_close()
        client_t.finish_close()
        for counters in (service, server):
            self.assertEqual((counters.scur, counters.smax, counters.stot), (1, 2, 2))
        self.assertEqual((len(harness.tracker.open), len(harness.tracker.closed)), (1, 1))


class NoServerTests(SynchronousTestCase):
    """A client arriving while no backend is UP."""

    def test_accept_and_close(self) -> None:
        """The client is closed at once, without a connect attempt."""
        harness = Harness([A], up=[])
        _, client_t = harness.accept()
        self.assertEqual(harness.attempts(), [])
        self.assertTrue(client_t.disconnecting)
        self.assertFalse(client_t.aborted)
        client_t.finish_close()
        self.assertEqual(len(harness.tracker.closed), 1)
        self.assertEqual(harness.proxy.counters.scur, 0)
        self.assertEqual(harness.proxy.counters.stot, 1)

    def test_logged_once_per_outage(self) -> None:
        """ "no server available" is logged for the first client of an outage only, and
        again after a connection has reached a backend since."""
        harness = Harness([A], up=[])
        with capturedLogs() as events:
            harness.accept()
            harness.accept()
            harness.health.up.add(A.address)
            harness.established()
            harness.health.up.clear()
            harness.accept()
        warnings = [e for e in events if e["log_format"].endswith("has no server available!")]
        self.assertEqual(len(warnings), 2)
        self.assertEqual(warnings[0]["service"], "web")
        self.assertEqual(warnings[0]["log_level"].name, "warn")


class RedispatchTests(SynchronousTestCase):
    """Connect failures: reporting, retrying elsewhere, giving up."""

    def test_refused_then_timeout_then_success(self) -> None:
        """Each failure is reported and the next backend is tried; the client only ever
        sees the backend that accepted."""
        harness = Harness([A, B, C], retries=3)
        _, client_t = harness.accept()
        harness.fail(error.ConnectionRefusedError())
        harness.reactor.advance(1.5)
        harness.fail(error.TimeoutError())
        backend, _ = harness.succeed()

        self.assertEqual([port for _, port, _ in harness.attempts()], [8001, 8002, 8003])
        self.assertEqual(
            [(address, r.status, r.info) for address, r in harness.health.reports],
            [
                (A.address, CheckStatus.L4CON, "Connection refused"),
                (B.address, CheckStatus.L4TOUT, ""),
            ],
        )
        self.assertEqual(harness.health.reports[1][1].duration, 1.5)
        self.assertFalse(client_t.disconnecting)
        self.assertIs(client_t.producer, backend)
        servers = harness.proxy.servers
        self.assertEqual(harness.proxy.counters.wredis, 2)
        self.assertEqual([servers[b].wredis for b in (A, B, C)], [1, 1, 0])
        self.assertEqual([servers[b].stot for b in (A, B, C)], [1, 1, 1])
        self.assertEqual([servers[b].scur for b in (A, B, C)], [0, 0, 1])
        self.assertEqual(harness.proxy.counters.econ, 0)

    def test_sockerr_not_reported(self) -> None:
        """Our own EMFILE is not held against the backend, but the next one is still tried."""
        harness = Harness([A, B])
        harness.accept()
        harness.fail(error.ConnectBindError(errno.EMFILE, "Too many open files"))
        self.assertEqual(harness.health.reports, [])
        self.assertEqual([port for _, port, _ in harness.attempts()], [8001, 8002])
        self.assertEqual(harness.proxy.counters.wredis, 1)
        self.assertEqual(harness.proxy.servers[A].wredis, 0)

    def test_attempts_capped_and_client_aborted(self) -> None:
        """After ``retries`` attempts in all, the client is aborted and econ counted."""
        harness = Harness([A, B, C], retries=2)
        _, client_t = harness.accept()
        with capturedLogs() as events:
            harness.fail(error.ConnectionRefusedError())
            harness.fail(error.ConnectionRefusedError())
        self.assertEqual(len(harness.attempts()), 2)
        self.assertEqual(len(harness.health.reports), 2)
        self.assertTrue(client_t.aborted)
        self.assertEqual(client_t.value(), b"")
        self.assertEqual(harness.proxy.counters.econ, 1)
        self.assertEqual(harness.proxy.servers[B].econ, 1)
        self.assertIn("attempts", formats(events)[-1])
        self.assertEqual(events[-1]["attempts"], 2)
        harness.reactor.advance(0)
        self.assertEqual(len(harness.tracker.closed), 1)
        self.assertEqual([c.scur for c in harness.proxy.servers.values()], [0, 0, 0])

    def test_same_backend_retried_when_all_tried(self) -> None:
        """With every UP backend tried, the next attempt goes to one of them again."""
        harness = Harness([A], retries=3)
        harness.accept()
        harness.fail(error.ConnectionRefusedError())
        harness.fail(error.ConnectionRefusedError())
        harness.succeed()
        self.assertEqual([port for _, port, _ in harness.attempts()], [8001] * 3)
        self.assertEqual(harness.proxy.counters.wretr, 2)
        self.assertEqual(harness.proxy.servers[A].wretr, 2)
        self.assertEqual(harness.proxy.counters.wredis, 0)

    def test_gives_up_when_health_marks_last_backend_down(self) -> None:
        """If the report takes the only backend DOWN, nothing is left to try."""
        harness = Harness([A], retries=3)

        def report_down(address, result):
            harness.health.up.discard(address)

        harness.health.report = report_down  # type: ignore[method-assign]
        _, client_t = harness.accept()
        harness.fail(error.ConnectionRefusedError())
        self.assertEqual(len(harness.attempts()), 1)
        self.assertTrue(client_t.aborted)

    def test_client_lost_during_connect_cancels_it(self) -> None:
        """Aborting a session whose connect is in flight stops the connect; the failure
        that stopping causes is ignored."""
        harness = Harness([A, B])
        harness.accept()
        session = harness.tracker.open[0]
        session.abort()
        harness.reactor.advance(0)
        connector = harness.reactor.connectors[0]
        self.assertTrue(connector.stoppedConnecting)
        self.assertEqual(harness.tracker.open, [])
        harness.fail(error.UserError())
        self.assertEqual(len(harness.attempts()), 1)
        self.assertEqual(harness.health.reports, [])
        self.assertEqual(harness.proxy.servers[A].scur, 0)
        self.assertEqual(harness.reactor.getDelayedCalls(), [])


class HalfCloseTests(SynchronousTestCase):
    """A FIN from one end is passed on while the other direction keeps flowing."""

    def test_client_fin_half_closes_backend(self) -> None:
        """The client's FIN unregisters it from the backend transport, then half-closes
        that; the backend's reply still reaches the client."""
        harness = Harness([A])
        client, client_t, side, backend_t = harness.established()
        client.readConnectionLost()
        self.assertEqual(backend_t.calls[-2:], ["unregisterProducer", "loseWriteConnection"])
        self.assertIsNone(backend_t.producer)
        self.assertFalse(backend_t.disconnecting)
        self.assertIs(client_t.producer, side)
        side.dataReceived(b"the whole reply")
        self.assertEqual(client_t.value(), b"the whole reply")
        self.assertFalse(client_t.disconnecting)

    def test_backend_fin_half_closes_client(self) -> None:
        """The backend's FIN half-closes the client, and the client can still send."""
        harness = Harness([A])
        client, client_t, side, backend_t = harness.established()
        side.readConnectionLost()
        self.assertEqual(client_t.calls[-2:], ["unregisterProducer", "loseWriteConnection"])
        client.dataReceived(b"more")
        self.assertEqual(backend_t.value(), b"more")

    def test_sockets_close_when_both_directions_done(self) -> None:
        """Each socket is closed once it has both sent and received its FIN."""
        harness = Harness([A])
        client, client_t, side, backend_t = harness.established()
        client.readConnectionLost()
        side.writeConnectionLost()
        self.assertFalse(backend_t.disconnecting)
        side.readConnectionLost()
        self.assertTrue(backend_t.disconnecting)
        self.assertFalse(backend_t.aborted)
        backend_t.finish_close()
        client.writeConnectionLost()
        self.assertTrue(client_t.disconnecting)
        client_t.finish_close()
        self.assertFalse(client_t.aborted)
        self.assertEqual(harness.tracker.open, [])
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_repeated_fin_ignored(self) -> None:
        """A second readConnectionLost does nothing."""
        harness = Harness([A])
        client, _, _, backend_t = harness.established()
        client.readConnectionLost()
        calls = list(backend_t.calls)
        client.readConnectionLost()
        self.assertEqual(backend_t.calls, calls)


class CloseTests(SynchronousTestCase):
    """A clean close or a reset of one socket closes the other the same way."""

    def test_clean_close_flushes_peer(self) -> None:
        """A socket closed cleanly closes its peer after a flush, not with an abort, and
        unregisters first so the flush can finish."""
        harness = Harness([A])
        _, client_t, side, backend_t = harness.established()
        side.dataReceived(b"last words")
        backend_t.loseConnection()
        backend_t.finish_close()
        self.assertEqual(client_t.calls[-2:], ["unregisterProducer", "loseConnection"])
        self.assertFalse(client_t.aborted)
        self.assertEqual(client_t.value(), b"last words")
        self.assertEqual(harness.proxy.counters.srv_abrt, 0)

    def test_backend_reset_resets_client(self) -> None:
        """A backend reset aborts the client (which resets it), after unregistering."""
        harness = Harness([A])
        _, client_t, side, _ = harness.established()
        side.connectionLost(Failure(error.ConnectionLost()))
        self.assertEqual(client_t.calls[-2:], ["unregisterProducer", "abortConnection"])
        self.assertEqual(harness.proxy.counters.srv_abrt, 1)
        self.assertEqual(harness.proxy.servers[A].srv_abrt, 1)
        harness.reactor.advance(0)
        self.assertEqual(harness.tracker.open, [])
        self.assertEqual(harness.proxy.counters.cli_abrt, 0)

    def test_client_reset_resets_backend(self) -> None:
        """A client reset aborts the backend."""
        harness = Harness([A])
        client, _, _, backend_t = harness.established()
        client.connectionLost(Failure(error.ConnectionLost()))
        self.assertTrue(backend_t.aborted)
        self.assertEqual(harness.proxy.counters.cli_abrt, 1)
        harness.reactor.advance(0)
        self.assertEqual(harness.tracker.open, [])
        self.assertEqual(harness.reactor.getDelayedCalls(), [])


class IdleTimeoutTests(SynchronousTestCase):
    """Closing sessions where nothing moved for idle_timeout."""

    def test_idle_session_aborted(self) -> None:
        """After idle_timeout without a read, both sockets are aborted."""
        harness = Harness([A], idle_timeout=10)
        _, client_t, _, backend_t = harness.established()
        harness.reactor.advance(9)
        self.assertFalse(client_t.aborted)
        harness.reactor.advance(1)
        self.assertTrue(client_t.aborted)
        self.assertTrue(backend_t.aborted)
        harness.reactor.advance(0)
        self.assertEqual(harness.tracker.open, [])
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_activity_postpones(self) -> None:
        """Reads in either direction push the deadline back, with a single timer."""
        harness = Harness([A], idle_timeout=10)
        client, client_t, side, _ = harness.established()
        harness.reactor.advance(6)
        client.dataReceived(b"x")
        harness.reactor.advance(4)
        self.assertFalse(client_t.aborted)
        self.assertEqual(len(harness.reactor.getDelayedCalls()), 1)
        harness.reactor.advance(5)
        side.dataReceived(b"y")
        harness.reactor.advance(9)
        self.assertFalse(client_t.aborted)
        harness.reactor.advance(1)
        self.assertTrue(client_t.aborted)

    def test_disabled(self) -> None:
        """An idle_timeout of 0 arms no timer."""
        harness = Harness([A], idle_timeout=0)
        harness.established()
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_timer_cancelled_on_close(self) -> None:
        """A session that closes leaves no timer behind."""
        harness = Harness([A], idle_timeout=10)
        _, _, side, _ = harness.established()
        side.connectionLost(Failure(error.ConnectionLost()))
        harness.reactor.advance(0)
        self.assertEqual(harness.reactor.getDelayedCalls(), [])


class UpdateTests(SynchronousTestCase):
    """Backend changes under open sessions."""

    def test_counters_survive_update(self) -> None:
        """A kept backend keeps its counters; a removed one's open session still counts."""
        harness = Harness([A, B])
        _, _, side, _ = harness.established()
        counters_a, counters_b = harness.proxy.servers[A], harness.proxy.servers[B]
        harness.proxy.update(frozenset({B, C}))
        self.assertNotIn(A, harness.proxy.servers)
        self.assertIs(harness.proxy.servers[B], counters_b)
        side.dataReceived(b"abc")
        self.assertEqual(counters_a.bout, 3)
        harness.proxy.update(frozenset({A, B, C}))
        self.assertIsNot(harness.proxy.servers[A], counters_a)


class LoopAtAcceptTests(SynchronousTestCase):
    """A client whose address is our own end of a backend socket to this port is refused."""

    def test_only_a_full_match_is_a_loop(self) -> None:
        """The same host and port toward another destination port is an ordinary client
        (the kernel reuses local ports across destinations); toward this port, a loop."""
        harness = Harness([A])
        harness.proxy.own_ends, harness.proxy.port = {}, 80
        client, _, _, _ = harness.established()
        session = cast(Session, client.session)
        peer = IPv4Address("TCP", "192.0.2.1", 40000)
        harness.proxy.own_ends[("192.0.2.1", 40000, 8001)] = session
        self.assertIsNotNone(harness.proxy.buildProtocol(peer))
        harness.proxy.own_ends[("192.0.2.1", 40000, 80)] = session
        with capturedLogs() as events:
            self.assertIsNone(harness.proxy.buildProtocol(peer))
            self.assertIsNone(harness.proxy.buildProtocol(peer))
        self.assertEqual(len(events), 1)
        self.assertIn("loops back into ddiscover", events[0]["log_format"])
