"""The whole of ddiscover in the test process, on the real reactor, in front of a real etcd.

:class:`InProcessTestCase` starts an etcd per test, captures every log line, and builds
ddiscover with :func:`~ddiscover.app.build_service`; subclasses pick their settings.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

from hyperlink import URL
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from ddiscover.app import build_service
from ddiscover.catalog import Address
from ddiscover.config import Config
from ddiscover.health.checker import HealthChecker
from ddiscover.health.probe import EndpointFactory
from ddiscover.proxy.listeners import Listeners
from ddiscover.proxy.reactor import ProxyReactor
from ddiscover.registry.options import EtcdAccess
from ddiscover.registry.watcher import RegistryWatcher
from tests.integration.etcd import EtcdProcess
from tests.integration.support import eventually, free_port


def address(text: str) -> Address:
    """``host:port`` as an :class:`Address`."""
    host, _, port = text.rpartition(":")
    return Address(host, int(port))


class InProcessTestCase(TestCase):
    """A real etcd, a free service port, captured log lines, and ddiscover on demand."""

    timeout = 60
    api = "v2"
    #: Config fields of this test class, over the common ones in :meth:`start`.
    settings: ClassVar[dict[str, Any]] = {}

    def setUp(self) -> None:
        self.etcd = EtcdProcess.started(self)
        self.port = free_port()
        self.logged: list[str] = []

        def observe(event: LogEvent) -> None:
            text = formatEvent(event)
            if text:
                self.logged.append(text)

        observer = cast(ILogObserver, observe)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def start(self, endpoint_for: EndpointFactory | None = None, **overrides: Any) -> None:
        """Build and start ddiscover on loopback, stopped in cleanup."""
        settings: dict[str, Any] = {
            "etcd": (URL.from_text(self.etcd.url),),
            "interface": "127.0.0.1",
            "stats_port": 0,
            "etcd_timeout": 0.5,
            "watch_timeout": 5.0,
            "etcd_access": EtcdAccess(api=self.api),
            **self.settings,
            **overrides,
        }
        self.root: MultiService = build_service(
            Config(**settings), cast(ProxyReactor, reactor), endpoint_for=endpoint_for
        )
        self.root.startService()
        self.addCleanup(self.root.stopService)
        watcher = self.root.getServiceNamed("registry")
        listeners = self.root.getServiceNamed("listeners")
        health = self.root.getServiceNamed("health")
        assert isinstance(watcher, RegistryWatcher)
        assert isinstance(listeners, Listeners)
        assert isinstance(health, HealthChecker)
        self.watcher, self.listeners, self.health = watcher, listeners, health

    async def all_up(self, *addresses: str) -> None:
        """Wait until the health checker has every one of these ``host:port`` backends UP."""
        await eventually(lambda: all(self.health.is_up(address(a)) for a in addresses))

    def put(self, key: str, value: str) -> None:
        """Write a key through the API under test."""
        if self.api == "v3":
            self.etcd.put3(key, value)
        else:
            self.etcd.put(key, value)

    def delete(self, key: str, recursive: bool = False) -> None:
        """Delete a key, or everything under it, through the API under test."""
        if self.api == "v3":
            self.etcd.delete3(key + "/" if recursive else key, prefix=recursive)
        else:
            self.etcd.delete(key, recursive=recursive)

    def register(self, service: str, port: int, **backends: str) -> None:
        """Write a service's port key and ``id=host:port`` backend keys."""
        self.put(f"/backends/{service}/port", str(port))
        for backend_id, value in backends.items():
            self.put(f"/backends/{service}/{backend_id}", value)
