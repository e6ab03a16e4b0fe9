"""Tests for :mod:`ddiscover.stats.state`: reading the live parts of a running ddiscover."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ddiscover import __version__
from ddiscover.catalog import Rejection
from ddiscover.proxy.balancer import Admin
from tests.stats import UP, Running


class StatsSourcesTests(SynchronousTestCase):
    """``StatsSources.state`` on a ddiscover built on fakes."""

    def setUp(self) -> None:
        self.running = Running(self, stats_auth=("a", "b"), maxconn=500)

    def test_services_and_servers(self) -> None:
        """Each listened-for service with its counters, servers, health, admin and keys."""
        frontend = self.running.listeners.frontends()["web"]
        a1 = next(b for b in frontend.balancer.backends if b.id == "a1")
        frontend.balancer.set_admin(a1, Admin.DRAIN)
        state = self.running.root.sources.state()
        (web,) = state.services
        self.assertEqual((web.name, web.port, web.listener), ("web", 80, "OPEN"))
        self.assertIs(web.counters, frontend.counters)
        self.assertEqual([s.backend.id for s in web.servers], ["a1", "a2"])
        first = web.servers[0]
        self.assertEqual(first.backend.address, UP)
        self.assertIs(first.counters, frontend.servers[a1])
        self.assertEqual(first.admin, Admin.DRAIN)
        assert first.health is not None
        self.assertTrue(first.health.is_up)
        self.assertEqual(first.key.path, "/backends/web/a1")
        self.assertEqual(first.key.ttl, 30)
        self.assertEqual(first.key.seen_at, 0.0)
        self.assertEqual(web.key.path, "/backends/web/port")

    def test_process_and_registry(self) -> None:
        """The process's limits and the watch's position, at the reactor's time."""
        state = self.running.root.sources.state()
        self.assertEqual(state.now, self.running.reactor.seconds())
        process = state.process
        self.assertEqual((process.version, process.started), (__version__, 0.0))
        self.assertEqual((process.maxconn, process.connections, process.admin), (500, 0, True))
        self.assertGreater(process.fd_limit, 0)
        registry = state.registry
        self.assertEqual(
            (registry.api, registry.endpoint, registry.prefix, registry.state),
            ("v2", "http://etcd.test:2379", "/backends", "watching"),
        )
        self.assertEqual(registry.last_index, self.running.etcd.index)

    def test_rejections_grouped_by_service(self) -> None:
        """Bad keys go with their service; a rejected service gets its own entry."""
        etcd = self.running.etcd
        etcd.set("/backends/web/broken", "not-an-address")
        etcd.set("/backends/clash/port", "80")
        etcd.set("/backends/stray", "1")
        self.running.etcd_http.flush()
        self.running.reactor.advance(1)
        state = self.running.root.sources.state()
        services = {s.name: s for s in state.services}
        self.assertEqual(sorted(services), ["clash", "web"])
        self.assertEqual(
            services["web"].rejections,
            (
                Rejection(
                    "/backends/web/broken",
                    "value 'not-an-address' is not host:port: no ':port'",
                ),
            ),
        )
        clash = services["clash"]
        self.assertEqual(
            (clash.port, clash.counters, clash.listener),
            (None, None, "port 80 is already used by service web"),
        )
        self.assertEqual(clash.key.path, "/backends/clash/port")
        self.assertEqual(
            state.registry.stray,
            (Rejection("/backends/stray", "key is not inside a service directory"),),
        )
        self.assertEqual(state.registry.rejected_keys, 3)
        self.assertEqual(state.registry.events, 3)
        self.assertEqual(state.registry.last_event_at, 10.2)
