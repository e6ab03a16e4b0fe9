"""Tests for :mod:`ddiscover.proxy.listeners` on a memory reactor with fake ports."""

from __future__ import annotations

import errno

from twisted.internet.address import IPv4Address
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Address, Backend, Catalog, Service
from ddiscover.proxy.listeners import FULL, OPEN, STOP, Listeners
from ddiscover.proxy.relay import ClientSide
from ddiscover.proxy.service import ServiceProxy
from tests.proxy import FakeHealth, FakeTCPTransport, PortsReactor, backend, make_config

A, B = backend("a", 8001), backend("b", 8002)


def catalog(*services: tuple[str, int, frozenset[Backend]]) -> Catalog:
    """A catalog of (name, port, backends) triples."""
    return Catalog({name: Service(name, port, backends) for name, port, backends in services})


class Harness:
    """Listeners on a PortsReactor, every backend UP."""

    def __init__(self, retry_interval: float = 5.0, **config) -> None:
        self.reactor = PortsReactor()
        self.health = FakeHealth([A.address, B.address])
        config.setdefault("interface", "127.0.0.2")
        self.listeners = Listeners(
            self.reactor, make_config(**config), self.health, retry_interval=retry_interval
        )

    def proxy(self, number: int) -> ServiceProxy:
        """The factory most recently listening on port ``number``."""
        factory = [f for port, f, _, _ in self.reactor.tcpServers if port == number][-1]
        assert isinstance(factory, ServiceProxy)
        return factory

    def accept(self, number: int) -> tuple[ClientSide, FakeTCPTransport]:
        """A client accepted on port ``number`` (its backend connect stays in flight)."""
        client = self.proxy(number).buildProtocol(IPv4Address("TCP", "192.0.2.1", 40000))
        assert client is not None
        transport = FakeTCPTransport(self.reactor)
        transport.connect(client)
        return client, transport

    def listening(self) -> dict[int, bool]:
        """Port number -> whether it is accepting, for ports still bound."""
        return {n: p.reading for n, p in self.reactor.ports.items() if p.bound}


class ReconcileTests(SynchronousTestCase):
    """Ports follow the catalog."""

    def test_opens_on_start(self) -> None:
        """A catalog reconciled before start is listened for once the service starts, on the
        configured interface and backlog."""
        harness = Harness(backlog=5000)
        harness.listeners.reconcile(catalog(("web", 80, frozenset({A}))))
        self.assertEqual(harness.reactor.tcpServers, [])
        self.assertEqual(harness.listeners.frontends()["web"].state, STOP)
        harness.listeners.startService()
        [(port, factory, backlog, interface)] = harness.reactor.tcpServers
        self.assertEqual((port, backlog, interface), (80, 5000, "127.0.0.2"))
        self.assertIsInstance(factory, ServiceProxy)
        frontend = harness.listeners.frontends()["web"]
        self.assertEqual((frontend.port, frontend.state, frontend.listening), (80, OPEN, True))
        self.assertEqual(frontend.balancer.backends, (A,))

    def test_opens_live_and_logs(self) -> None:
        """A service added while running gets its port at once, logged once."""
        harness = Harness()
        harness.listeners.startService()
        with capturedLogs() as events:
            harness.listeners.reconcile(catalog(("web", 80, frozenset({A}))))
        self.assertEqual(harness.listening(), {80: True})
        [event] = events
        self.assertEqual(
            (event["service"], event["interface"], event["port"]), ("web", "127.0.0.2", 80)
        )

    def test_backend_change_keeps_listener(self) -> None:
        """A change of backends only updates the balancer: same port, same factory."""
        harness = Harness()
        harness.listeners.startService()
        harness.listeners.reconcile(catalog(("web", 80, frozenset({A}))))
        factory = harness.proxy(80)
        harness.listeners.reconcile(catalog(("web", 80, frozenset({A, B}))))
        self.assertEqual(len(harness.reactor.tcpServers), 1)
        self.assertIs(harness.listeners.frontends()["web"].balancer, factory.balancer)
        self.assertEqual(factory.balancer.backends, (A, B))
        self.assertEqual(set(factory.servers), {A, B})

    def test_port_change(self) -> None:
        """A new port closes the old one and opens the new one with the same factory."""
        harness = Harness()
        harness.listeners.startService()
        harness.listeners.reconcile(catalog(("web", 80, frozenset({A}))))
        factory = harness.proxy(80)
        harness.listeners.reconcile(catalog(("web", 81, frozenset({A}))))
        harness.reactor.advance(0)
        self.assertEqual(harness.listening(), {81: True})
        self.assertIs(harness.proxy(81), factory)
        self.assertEqual(harness.listeners.frontends()["web"].port, 81)

    def test_port_swap_waits_for_close(self) -> None:
        """Two services swapping ports bind once the old sockets are closed, with no
        "address in use" and no retry."""
        harness = Harness()
        harness.listeners.startService()
        harness.listeners.reconcile(catalog(("a", 80, frozenset({A})), ("b", 81, frozenset({B}))))
        a, b = harness.proxy(80), harness.proxy(81)
        with capturedLogs() as events:
            harness.listeners.reconcile(
                catalog(("a", 81, frozenset({A})), ("b", 80, frozenset({B})))
            )
            harness.reactor.advance(0)
        self.assertEqual(harness.listening(), {80: True, 81: True})
        self.assertIs(harness.proxy(80), b)
        self.assertIs(harness.proxy(81), a)
        self.assertEqual([e["log_level"].name for e in events], ["info"] * 4)
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_removed_service_keeps_connections(self) -> None:
        """A removed service stops listening at once; its open connection carries on."""
        harness = Harness()
        harness.listeners.startService()
        harness.listeners.reconcile(catalog(("web", 80, frozenset({A}))))
        _, client_t = harness.accept(80)
        harness.listeners.reconcile(catalog())
        self.assertFalse(harness.reactor.ports[80].reading)
        self.assertEqual(harness.listeners.frontends(), {})
        self.assertEqual(harness.listeners.active, 1)
        self.assertFalse(client_t.disconnecting)
        harness.reactor.advance(0)
        self.assertEqual(harness.listening(), {})
        self.assertEqual(harness.listeners.active, 1)

    def test_not_running_does_not_listen(self) -> None:
        """After stopService, catalogs are remembered but nothing is opened."""
        harness = Harness()
        harness.listeners.startService()
        harness.listeners.stopService()
        harness.listeners.reconcile(catalog(("web", 80, frozenset({A}))))
        self.assertEqual(harness.reactor.tcpServers, [])
        self.assertEqual(harness.listeners.frontends()["web"].state, STOP)


class BindFailureTests(SynchronousTestCase):
    """Ports that cannot be bound."""

    def test_logged_once_retried_and_isolated(self) -> None:
        """A busy port is logged once, shows why, is retried on the clock, does not stop the
        other services, and its eventual success is logged once."""
        harness = Harness(retry_interval=5.0)
        harness.reactor.busy[80] = OSError(errno.EADDRINUSE, "Address already in use")
        harness.listeners.startService()
        with capturedLogs() as events:
            harness.listeners.reconcile(
                catalog(("web", 80, frozenset({A})), ("api", 81, frozenset({B})))
            )
            for _ in range(3):
                harness.reactor.advance(5.0)
        self.assertEqual(harness.listening(), {81: True})
        self.assertEqual(
            harness.listeners.frontends()["web"].state,
            "cannot listen on 127.0.0.2:80: [Errno 98] Address already in use",
        )
        self.assertFalse(harness.listeners.frontends()["web"].listening)
        failures = [e for e in events if e["log_level"].name == "error"]
        self.assertEqual(len(failures), 1)
        self.assertEqual(
            failures[0]["log_format"],
            "service {service}: cannot listen on {interface}:{port}: {error}; "
            "retrying every {retry}s",
        )
        self.assertEqual(
            (failures[0]["service"], failures[0]["port"], failures[0]["retry"]), ("web", 80, 5.0)
        )

        del harness.reactor.busy[80]
        with capturedLogs() as events:
            harness.reactor.advance(5.0)
            harness.reactor.advance(5.0)
        self.assertEqual(harness.listening(), {80: True, 81: True})
        self.assertEqual(harness.listeners.frontends()["web"].state, OPEN)
        [event] = events
        self.assertEqual((event["service"], event["failures"]), ("web", 4))
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_raw_listen_error_contained(self) -> None:
        """An OSError from listen() itself is handled like a bind failure."""
        harness = Harness()
        harness.reactor.failing[80] = OSError(errno.EADDRINUSE, "Address already in use")
        harness.listeners.startService()
        harness.listeners.reconcile(
            catalog(("web", 80, frozenset({A})), ("api", 81, frozenset({B})))
        )
        self.assertEqual(harness.listening(), {81: True})
        self.assertEqual(
            harness.listeners.frontends()["web"].state,
            "cannot listen on 127.0.0.2:80: [Errno 98] Address already in use",
        )
        del harness.reactor.failing[80]
        harness.reactor.advance(5.0)
        self.assertEqual(harness.listening(), {80: True, 81: True})

    def test_removed_service_stops_retrying(self) -> None:
        """Removing a service whose port could not be bound cancels the retry."""
        harness = Harness()
        harness.reactor.busy[80] = OSError(errno.EACCES, "Permission denied")
        harness.listeners.startService()
        harness.listeners.reconcile(catalog(("web", 80, frozenset({A}))))
        self.assertEqual(len(harness.reactor.getDelayedCalls()), 1)
        harness.listeners.reconcile(catalog())
        self.assertEqual(harness.reactor.getDelayedCalls(), [])


class MaxconnTests(SynchronousTestCase):
    """The global connection cap pauses accepting on every port."""

    def test_pause_and_resume(self) -> None:
        """At maxconn every port stops accepting (nothing is closed); one close resumes."""
        harness = Harness(maxconn=2)
        harness.listeners.startService()
        harness.listeners.reconcile(
            catalog(("web", 80, frozenset({A})), ("api", 81, frozenset({B})))
        )
        harness.accept(80)
        self.assertEqual(harness.listening(), {80: True, 81: True})
        with capturedLogs() as events:
            _, client_t = harness.accept(81)
        self.assertEqual(harness.listening(), {80: False, 81: False})
        self.assertEqual(harness.listeners.active, 2)
        self.assertEqual({f.state for f in harness.listeners.frontends().values()}, {FULL})
        self.assertEqual(events[0]["maxconn"], 2)

        harness.listeners.reconcile(
            catalog(
                ("web", 80, frozenset({A})),
                ("api", 81, frozenset({B})),
                ("new", 82, frozenset({A})),
            )
        )
        self.assertEqual(harness.listening(), {80: False, 81: False, 82: False})

        client_t.abortConnection()
        harness.reactor.advance(0)
        self.assertEqual(harness.listeners.active, 1)
        self.assertEqual(harness.listening(), {80: True, 81: True, 82: True})
        self.assertEqual({f.state for f in harness.listeners.frontends().values()}, {OPEN})


class DrainTests(SynchronousTestCase):
    """stopService stops listening, drains, and aborts at the deadline."""

    def test_no_connections(self) -> None:
        """Without connections, stopping fires once the ports are closed."""
        harness = Harness()
        harness.listeners.startService()
        harness.listeners.reconcile(catalog(("web", 80, frozenset({A}))))
        stopped = harness.listeners.stopService()
        self.assertNoResult(stopped)
        harness.reactor.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(harness.listening(), {})
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_connections_finish_in_time(self) -> None:
        """Stopping waits for open connections, which keep working meanwhile."""
        harness = Harness(drain_timeout=8.0)
        harness.listeners.startService()
        harness.listeners.reconcile(catalog(("web", 80, frozenset({A}))))
        _, client_t = harness.accept(80)
        stopped = harness.listeners.stopService()
        self.assertFalse(harness.reactor.ports[80].reading)
        harness.reactor.advance(7)
        self.assertNoResult(stopped)
        self.assertFalse(client_t.disconnecting)
        client_t.loseConnection()
        client_t.finish_close()
        self.successResultOf(stopped)
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_deadline_aborts_the_rest(self) -> None:
        """At drain_timeout the remaining connections are aborted; stopping fires once they
        are all closed."""
        harness = Harness(drain_timeout=8.0)
        harness.listeners.startService()
        harness.listeners.reconcile(
            catalog(("web", 80, frozenset({A})), ("api", 81, frozenset({B})))
        )
        transports = [harness.accept(80)[1], harness.accept(81)[1]]
        stopped = harness.listeners.stopService()
        harness.reactor.advance(7.5)
        self.assertNoResult(stopped)
        with capturedLogs() as events:
            harness.reactor.advance(0.5)
        self.assertEqual([t.aborted for t in transports], [True, True])
        self.assertEqual(events[0]["count"], 2)
        self.successResultOf(stopped)
        self.assertEqual(harness.listeners.active, 0)
        self.assertEqual([c.stoppedConnecting for c in harness.reactor.connectors], [True] * 2)
        self.assertEqual(harness.reactor.getDelayedCalls(), [])


class HoldTests(SynchronousTestCase):
    """Clients arriving while every backend waits for its first check are held, not closed."""

    def setUp(self) -> None:
        self.harness = Harness(connect_timeout=5.0)
        self.health = self.harness.health
        self.health.up.clear()
        self.health.pending.update({A.address, B.address})
        self.harness.listeners.reconcile(catalog(("web", 80, frozenset({A, B}))))
        self.harness.listeners.startService()

    def accept_held(self) -> tuple[ClientSide, FakeTCPTransport]:
        """A client accepted on port 80, held: paused, open, no connect attempt."""
        client, transport = self.harness.accept(80)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(self.harness.reactor.tcpClients, [])
        return client, transport

    def test_forwarded_once_a_backend_is_up(self) -> None:
        """Held clients go, in arrival order and round robin, to the first backend UP."""
        first, _ = self.accept_held()
        second, _ = self.accept_held()
        self.assertEqual(self.harness.proxy(80).waiting, 2)
        self.health.change(B.address, up=True)
        self.assertEqual(
            [(host, port) for host, port, *_ in self.harness.reactor.tcpClients],
            [("10.0.0.1", 8002), ("10.0.0.1", 8002)],
        )
        self.assertEqual(self.harness.proxy(80).waiting, 0)
        self.assertEqual(first.session.server, B)  # type: ignore[attr-defined]
        self.assertEqual(second.session.server, B)  # type: ignore[attr-defined]

    def test_closed_once_every_first_check_failed(self) -> None:
        """A held client waits while any first check is to come, then is closed ``SC``."""
        client, transport = self.accept_held()
        self.health.change(A.address, up=False)
        self.assertFalse(transport.disconnecting)
        with capturedLogs() as events:
            self.health.change(B.address, up=False)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(client.session.termination, "SC")  # type: ignore[attr-defined]
        self.assertEqual(
            [e["log_format"] for e in events], ["service {service} has no server available!"]
        )
        transport.finish_close()
        self.assertEqual(self.harness.listeners.active, 0)

    def test_closed_after_connect_timeout(self) -> None:
        """A client held ``connect_timeout`` seconds without a backend UP is closed ``sQ``."""
        client, transport = self.accept_held()
        self.harness.reactor.advance(4.9)
        self.assertFalse(transport.disconnecting)
        with capturedLogs() as events:
            self.harness.reactor.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(client.session.termination, "sQ")  # type: ignore[attr-defined]
        self.assertEqual(len(events), 1)
        self.assertIn("no server came UP within {timeout}s", events[0]["log_format"])
        transport.finish_close()
        self.assertEqual(self.harness.listeners.active, 0)

    def test_aborted_while_held(self) -> None:
        """A held client aborted (the drain deadline) leaves the queue and its timer."""
        client, _ = self.accept_held()
        client.session.abort()  # type: ignore[attr-defined]
        self.harness.reactor.advance(0)
        self.assertEqual(self.harness.proxy(80).waiting, 0)
        self.assertEqual(self.harness.reactor.getDelayedCalls(), [])
        self.assertEqual(self.harness.listeners.active, 0)
        self.health.change(A.address, up=True)
        self.assertEqual(self.harness.reactor.tcpClients, [])

    def test_not_held_without_pending_backend(self) -> None:
        """With every backend checked and none UP, a client is closed at once, as before."""
        self.health.pending.clear()
        _, transport = self.harness.accept(80)
        self.assertTrue(transport.disconnecting)


class BudgetTests(SynchronousTestCase):
    """Listeners are budgeted against the open-files limit, per registry service and in all."""

    def test_excess_ports_of_one_service_refused(self) -> None:
        """Under a 1,024 limit a port key listing 40 ports gets 30 listeners (one line for the
        rest, once); the other services are listened for as usual."""
        harness = Harness(fd_limit=1024)
        services = [(f"app:{40000 + i}", 40000 + i, frozenset({A})) for i in range(40)]
        wanted = catalog(*services, ("web", 80, frozenset({B})))
        listeners = harness.listeners
        with capturedLogs() as events:
            listeners.reconcile(listeners.budgeted(wanted))
            listeners.startService()
            budgeted = listeners.budgeted(wanted)
            listeners.reconcile(budgeted)
        listening = sorted(harness.listening())
        self.assertEqual(listening, [80, *range(40000, 40030)])
        errors = [e for e in events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["service"], "app")
        self.assertIn("not listening on 10 of its ports (40030 and more)", errors[0]["reason"])
        self.assertEqual([r.key for r in budgeted.rejections], ["app"])
        self.assertIn("web", harness.listeners.frontends())

    def test_total_budget(self) -> None:
        """Services past the total budget (122 listeners under 1,024) are refused too, the
        ones already listening kept first."""
        harness = Harness(fd_limit=1024)
        harness.listeners.startService()
        harness.listeners.reconcile(catalog(("web", 80, frozenset({A}))))
        services = [(f"s{i:03}", 20000 + i, frozenset({A})) for i in range(130)]
        wanted = catalog(*services, ("web", 80, frozenset({A})))
        with capturedLogs() as events:
            harness.listeners.reconcile(harness.listeners.budgeted(wanted))
        self.assertEqual(len(harness.listening()), 122)
        self.assertIn(80, harness.listening())
        self.assertEqual(len([e for e in events if e["log_level"].name == "error"]), 9)

    def test_unknown_limit_not_budgeted(self) -> None:
        """Without a known fd limit (fd_limit 0) every service is listened for."""
        harness = Harness()
        services = [(f"app:{40000 + i}", 40000 + i, frozenset({A})) for i in range(40)]
        wanted = catalog(*services)
        self.assertIs(harness.listeners.budgeted(wanted), wanted)


class LoopTests(SynchronousTestCase):
    """A backend at one of our own listeners is refused before anything else sees it."""

    def test_own_listener_refused(self) -> None:
        """On 127.0.0.2, a backend at 127.0.0.2:80 for a service on port 80 is left out."""
        harness = Harness()
        own = Backend("self", Address("127.0.0.2", 80))
        result = harness.listeners.budgeted(catalog(("web", 80, frozenset({A, own}))))
        self.assertEqual(result.services["web"].backends, frozenset({A}))
        self.assertEqual([r.key for r in result.rejections], ["web/self"])
