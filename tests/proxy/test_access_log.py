"""Tests for :mod:`ddiscover.proxy.access_log`: one line per finished connection, or nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import error
from twisted.logger import LogEvent, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Catalog, Service
from ddiscover.modes.tcp import Session
from ddiscover.proxy.access_log import LoggedSession
from ddiscover.proxy.listeners import Listeners
from ddiscover.proxy.service import ServiceProxy
from tests.modes.test_tcp import Harness
from tests.proxy import FakeHealth, PortsReactor, backend, make_config

A, B = backend("a", 8001), backend("b", 8002)


def logged(**config: Any) -> Harness:
    """The forwarding tests' harness, its proxy making logged sessions."""
    harness = Harness([A, B], **config)
    harness.proxy = ServiceProxy(
        "web",
        harness.reactor,
        make_config(**config),
        harness.health,
        harness.tracker,
        session=LoggedSession,
    )
    harness.proxy.update(frozenset([A, B]))
    return harness


def access(events: Sequence[LogEvent]) -> list[dict[str, Any]]:
    """The fields of each access-log event."""
    keys = ("client", "service", "server", "address", "connect_ms", "duration_ms",
            "bytes_in", "bytes_out", "termination", "retries")  # fmt: skip
    return [
        {key: event[key] for key in keys}
        for event in events
        if event.get("log_namespace") == "ddiscover.proxy.access_log"
    ]


class AccessLogTests(SynchronousTestCase):
    """Each finished session logs its client, server, timings, bytes and how it ended."""

    def test_normal_close(self) -> None:
        """A session both ends closed cleanly: ``--``, bytes each way, times in ms."""
        harness = logged()
        with capturedLogs() as events:
            client, client_t = harness.accept()
            harness.reactor.advance(0.003)
            side, backend_t = harness.succeed()
            client.dataReceived(b"request")
            side.dataReceived(b"response!")
            harness.reactor.advance(1.5)
            backend_t.loseConnection()
            backend_t.finish_close()
            client_t.finish_close()
        [line] = [e for e in events if e.get("termination")]
        self.assertEqual(
            line["log_format"],
            "{client} {service}/{server} {connect_ms}/{duration_ms} {bytes_in}/{bytes_out} "
            "{termination}",
        )
        self.assertEqual(
            access(events),
            [
                {
                    "client": "192.168.1.1:54321",
                    "service": "web",
                    "server": "a",
                    "address": "10.0.0.1:8001",
                    "connect_ms": 3,
                    "duration_ms": 1503,
                    "bytes_in": 7,
                    "bytes_out": 9,
                    "termination": "--",
                    "retries": 0,
                }
            ],
        )

    def test_no_server(self) -> None:
        """No backend UP: ``<NOSRV>``, never connected, ``SC``."""
        harness = logged()
        harness.health.up.clear()
        with capturedLogs() as events:
            _, client_t = harness.accept()
            client_t.finish_close()
        [line] = access(events)
        self.assertEqual(
            (line["server"], line["connect_ms"], line["termination"]), ("<NOSRV>", -1, "SC")
        )

    def test_every_attempt_failed(self) -> None:
        """Refused everywhere: ``SC`` with the last server tried; timed out: ``sC``."""
        for failure, termination in (
            (error.ConnectionRefusedError(), "SC"),
            (error.TimeoutError(), "sC"),
        ):
            harness = logged(retries=2)
            with capturedLogs() as events:
                harness.accept()
                harness.fail(failure)
                harness.fail(failure)
                harness.reactor.advance(0)
            [line] = access(events)
            self.assertEqual(
                (line["server"], line["termination"], line["retries"]), ("b", termination, 1)
            )

    def test_resets(self) -> None:
        """A reset from the client is ``CD``, from the server ``SD``."""
        for client_side, termination in ((True, "CD"), (False, "SD")):
            harness = logged()
            with capturedLogs() as events:
                client, _, side, _ = harness.established()
                (client if client_side else side).connectionLost(Failure(error.ConnectionLost()))
                harness.reactor.advance(0)
            [line] = access(events)
            self.assertEqual(line["termination"], termination)

    def test_idle_timeout_and_drain_deadline(self) -> None:
        """Aborted for idleness: ``cD``; at the drain deadline: ``KD``."""
        harness = logged(idle_timeout=5.0)
        with capturedLogs() as events:
            harness.established()
            harness.reactor.advance(5)
            harness.reactor.advance(0)
            harness.established()
            harness.tracker.open[0].abort()
            harness.reactor.advance(0)
        self.assertEqual([line["termination"] for line in access(events)], ["cD", "KD"])


class OffByDefaultTests(SynchronousTestCase):
    """Without ``--access-log`` the listeners hand out plain sessions: nothing to pay."""

    def proxy(self, **config: Any) -> ServiceProxy:
        reactor = PortsReactor()
        listeners = Listeners(reactor, make_config(**config), FakeHealth())
        listeners.reconcile(Catalog({"web": Service("web", 80, frozenset([A]))}))
        listeners.startService()
        self.addCleanup(listeners.stopService)
        (factory,) = [server[1] for server in reactor.tcpServers]
        assert isinstance(factory, ServiceProxy)
        return factory

    def test_off(self) -> None:
        """Plain :class:`Session`: its sides count nothing extra and it logs nothing."""
        client = self.proxy().buildProtocol(None)
        assert client is not None
        self.assertIs(type(client.session), Session)

    def test_on(self) -> None:
        """With the option, logged sessions."""
        client = self.proxy(access_log=True).buildProtocol(None)
        assert client is not None
        self.assertIs(type(client.session), LoggedSession)
