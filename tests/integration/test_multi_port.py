"""Services of several ports through the whole of ddiscover: a real etcd, ``build_service`` on
the real reactor, and real loopback backends that greet each client with their name."""

from __future__ import annotations

from typing import cast

from hyperlink import URL
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from ddiscover.app import build_service
from ddiscover.config import Config
from ddiscover.health.checker import HealthChecker
from ddiscover.proxy.forwarding import ProxyReactor
from ddiscover.proxy.listeners import Listeners
from tests.integration.backends import InProcessBackend
from tests.integration.etcd import EtcdProcess
from tests.integration.support import eventually, free_port, greeting
from tests.integration.test_end_to_end import address


class MultiPortTests(TestCase):
    """Each listen port of a service forwards to the matching port of its backends."""

    timeout = 30

    def setUp(self) -> None:
        self.etcd = EtcdProcess.started(self)
        config = Config(
            etcd=(URL.from_text(self.etcd.url),),
            interface="127.0.0.1",
            stats_port=0,
            check_interval=0.1,
            rise=1,
            connect_timeout=1.0,
            drain_timeout=1.0,
        )
        root = build_service(config, cast(ProxyReactor, reactor))
        root.startService()
        self.addCleanup(root.stopService)
        health, listeners = root.getServiceNamed("health"), root.getServiceNamed("listeners")
        assert isinstance(health, HealthChecker)
        assert isinstance(listeners, Listeners)
        self.health, self.listeners = health, listeners

    def backend(self, name: str) -> str:
        """Start a greeting backend called ``name``; its ``host:port``."""
        backend = InProcessBackend(reactor, name)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(backend.stop()))
        return backend.address

    async def all_up(self, *addresses: str) -> None:
        """Wait until every one of ``addresses`` is UP."""
        await eventually(lambda: all(self.health.is_up(address(a)) for a in addresses))

    async def test_one_service_two_ports(self) -> None:
        """``port`` = ``P1,P2`` and backends ``host:B1,B2``: P1 reaches B1s and P2 reaches B2s."""
        plain, tls = free_port(), free_port()
        containers = {
            c: (self.backend(f"{c}-plain"), self.backend(f"{c}-tls")) for c in ("a", "b")
        }
        self.etcd.put("/backends/web/port", f"{plain},{tls}")
        for c, (first, second) in containers.items():
            self.etcd.put(f"/backends/web/{c}", f"{first},{address(second).port}")
        await self.all_up(*(a for pair in containers.values() for a in pair))
        self.assertEqual({await greeting(plain) for _ in range(4)}, {"a-plain", "b-plain"})
        self.assertEqual({await greeting(tls) for _ in range(4)}, {"a-tls", "b-tls"})
        self.assertEqual(
            sorted(self.listeners.frontends()), sorted([f"web:{plain}", f"web:{tls}"])
        )

    async def test_registrator_names(self) -> None:
        """registrator's ``<service>-<port>`` directories are two services, each forwarding."""
        plain, tls = free_port(), free_port()
        first, second = self.backend("plain"), self.backend("tls")
        self.etcd.put(f"/backends/web-{plain}/port", str(plain))
        self.etcd.put(f"/backends/web-{plain}/a", first)
        self.etcd.put(f"/backends/web-{tls}/port", str(tls))
        self.etcd.put(f"/backends/web-{tls}/a", second)
        await self.all_up(first, second)
        self.assertEqual(await greeting(plain), "plain")
        self.assertEqual(await greeting(tls), "tls")
