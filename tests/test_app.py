"""Tests for :mod:`ddiscover.app`: the whole service tree built on fakes, driven through etcd."""

from typing import cast

from hyperlink import URL
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from ddiscover.app import build_service
from ddiscover.catalog import Address
from ddiscover.config import Config
from ddiscover.health.checker import HealthChecker
from ddiscover.proxy.listeners import Listeners
from ddiscover.proxy.reactor import ProxyReactor
from ddiscover.registry.etcd2 import HTTPClientLike
from ddiscover.registry.watcher import PUBLISH_WINDOW
from tests.fake_endpoints import FakeEndpoints
from tests.fake_etcd import FakeEtcdV2Resource
from tests.proxy import FakeTCPTransport, PortsReactor

BACKEND = Address("10.0.0.1", 8080)


class BuildServiceTests(SynchronousTestCase):
    """``build_service`` wires registry → health → listeners, and the stats port."""

    def setUp(self) -> None:
        self.etcd = FakeEtcdV2Resource()
        self.stub = StubTreq(self.etcd)
        self.reactor = PortsReactor()
        self.endpoints = FakeEndpoints()
        config = Config(etcd=(URL.from_text("http://etcd.test:2379"),), check_interval=2.0)
        self.root = build_service(
            config,
            cast(ProxyReactor, self.reactor),
            http=cast(HTTPClientLike, self.stub),
            endpoint_for=self.endpoints,
        )
        health = self.root.getServiceNamed("health")
        listeners = self.root.getServiceNamed("listeners")
        assert isinstance(health, HealthChecker)
        assert isinstance(listeners, Listeners)
        self.health, self.listeners = health, listeners

    def listening(self) -> list[tuple[int, str]]:
        return sorted(
            (port, interface)
            for port, fake in self.reactor.ports.items()
            if fake.bound
            for interface in [fake.interface]
        )

    def test_stats_port_on_its_interface(self) -> None:
        """The stats site listens on 127.0.0.1:1936 by default."""
        self.root.startService()
        self.stub.flush()
        stats = [s for s in self.reactor.tcpServers if isinstance(s[1], Site)]
        self.assertEqual([(s[0], s[3]) for s in stats], [(1936, "127.0.0.1")])

    def test_registered_service_is_checked_then_listened_for(self) -> None:
        """A service in etcd gets a listener, and its backend a check bounded by inter."""
        self.etcd.set("/backends/web/port", "80")
        self.etcd.set("/backends/web/a1", str(BACKEND))
        self.root.startService()
        self.stub.flush()
        self.assertIn((80, "0.0.0.0"), self.listening())
        self.assertEqual([s[2] for s in self.reactor.tcpServers if s[0] == 80], [4096])
        self.reactor.advance(0.2)
        attempt = self.endpoints.last(BACKEND)
        self.assertEqual(attempt.timeout, 2.0)
        self.assertFalse(self.health.is_up(BACKEND))
        attempt.succeed()
        self.assertTrue(self.health.is_up(BACKEND))
        self.assertEqual(self.listeners.frontends()["web"].balancer.up_count(), 1)

    def test_changes_in_etcd_apply_live(self) -> None:
        """A service written after start is listened for; deleting its directory closes it."""
        self.root.startService()
        self.stub.flush()
        self.assertNotIn((80, "0.0.0.0"), self.listening())
        self.etcd.set("/backends/web/port", "80")
        self.stub.flush()
        self.reactor.advance(PUBLISH_WINDOW)  # catalogs go out at most once per window
        self.assertIn((80, "0.0.0.0"), self.listening())
        self.etcd.delete("/backends/web")
        self.stub.flush()
        self.reactor.advance(PUBLISH_WINDOW)
        self.assertNotIn((80, "0.0.0.0"), self.listening())

    def test_stop_leaves_nothing_scheduled(self) -> None:
        """Stopping cancels the watch, the checks and every timer."""
        self.etcd.set("/backends/web/port", "80")
        self.etcd.set("/backends/web/a1", str(BACKEND))
        self.root.startService()
        self.stub.flush()
        self.reactor.advance(0.2)
        stopped = self.root.stopService()
        self.stub.flush()
        self.reactor.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.listening(), [])

    def test_stats_port_outlives_the_drain(self) -> None:
        """Stopping closes the service ports at once but the stats port only once the last
        proxied connection has closed, so /health can say 503 "stopping" meanwhile."""
        self.etcd.set("/backends/web/port", "80")
        self.etcd.set("/backends/web/a1", str(BACKEND))
        self.root.startService()
        self.stub.flush()
        factory = next(f for port, f, _, _ in self.reactor.tcpServers if port == 80)
        client = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 40000))
        assert client is not None
        transport = FakeTCPTransport(self.reactor)
        transport.connect(client)
        stopped = self.root.stopService()
        self.stub.flush()
        self.reactor.advance(0)
        self.assertNoResult(stopped)
        self.assertEqual(self.listening(), [(1936, "127.0.0.1")])
        transport.loseConnection()
        transport.finish_close()
        self.reactor.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(self.listening(), [])
