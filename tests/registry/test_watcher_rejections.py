"""Rejected keys are logged once, only when they persist, and in one short line."""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import LogLevel

from ddiscover.catalog import Catalog
from ddiscover.registry.watcher import RegistryWatcher
from tests.registry.test_watcher import IGNORING, WatcherTestCase


class GraceTests(WatcherTestCase):
    """A rejection is an error only after it persisted for the grace (1 s); else debug."""

    def make_watcher(self, on_catalog: Callable[[Catalog], None]) -> RegistryWatcher:
        return RegistryWatcher(self.client, self.clock, "/backends/", on_catalog, publish_window=0)

    def test_transient_no_port_key(self) -> None:
        """The registrar's id key before its port key is no error: debug only."""
        self.watcher.startService()
        self.etcd.set("/backends/web/a", "10.0.0.1:8080")
        self.stub.flush()
        self.clock.advance(0.2)
        self.etcd.set("/backends/web/port", "80")
        self.stub.flush()
        self.clock.advance(5)
        self.assertEqual([e for e in self.logs if e["log_level"] >= LogLevel.warn], [])
        self.assertIn("web", self.watcher.catalog.services)

    def test_persisting(self) -> None:
        """A rejection still there after the grace is logged at error, once."""
        self.watcher.startService()
        self.etcd.set("/backends/web/a", "10.0.0.1:8080")
        self.stub.flush()
        self.clock.advance(0.999)
        self.assertEqual(self.logged(IGNORING), [])
        self.clock.advance(0.001)
        [error] = self.logged(IGNORING)
        self.assertEqual((error["log_level"], error["key"]), (LogLevel.error, "/backends/web"))
        self.clock.advance(10)
        self.assertEqual(len(self.logged(IGNORING)), 1)


class ShortLineTests(WatcherTestCase):
    """Hostile values are logged cut, and leave the other services alone."""

    def test_huge_value(self) -> None:
        """A 1 MB value makes a line of a few hundred characters that says its size."""
        self.register_web()
        self.etcd.set("/backends/web/huge", "x" * 10**6)
        self.watcher.startService()
        [event] = self.logged(IGNORING)
        line = IGNORING.format(key=event["key"], reason=event["reason"])
        self.assertLess(len(line), 400)
        self.assertIn("(1000000 bytes)", line)
        self.assertEqual(len(self.watcher.catalog.services["web"].backends), 1)

    def test_deep_key_and_many_ports(self) -> None:
        """A key 100 levels deep and a port key of 1,500 ports are rejected; web is served."""
        self.register_web()
        self.etcd.set("/backends/" + "d/" * 100 + "x", "10.0.0.9:80")
        self.etcd.set("/backends/many/port", ",".join(map(str, range(10000, 11500))))
        self.watcher.startService()
        self.assertEqual(set(self.watcher.catalog.services), {"web"})
        lines = [IGNORING.format(key=e["key"], reason=e["reason"]) for e in self.logged(IGNORING)]
        self.assertEqual(len(lines), 2)
        self.assertTrue(all(len(line) < 500 for line in lines), lines)
