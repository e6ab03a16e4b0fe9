"""Services of several ports through the whole of ddiscover: a real etcd, ``build_service`` on
the real reactor, and real loopback backends that greet each client with their name."""

from __future__ import annotations

from typing import Any, ClassVar

from tests.integration.backends import InProcessBackend
from tests.integration.harness import InProcessTestCase, address
from tests.integration.support import free_port, greeting


class MultiPortTests(InProcessTestCase):
    """Each listen port of a service forwards to the matching port of its backends."""

    timeout = 30
    settings: ClassVar[dict[str, Any]] = {
        "check_interval": 0.1,
        "rise": 1,
        "connect_timeout": 1.0,
        "drain_timeout": 1.0,
    }

    def setUp(self) -> None:
        super().setUp()
        self.start()

    def backend(self, name: str) -> str:
        """Start a greeting backend called ``name``; its ``host:port``."""
        return InProcessBackend.started(self, name).address

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
