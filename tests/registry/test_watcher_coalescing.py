"""A burst of changes is applied together: at most one catalog per publish window."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Catalog
from ddiscover.registry.layout import Entry
from ddiscover.registry.values import Snapshot
from ddiscover.registry.watcher import RegistryWatcher
from tests.registry.test_watcher_supervision import WEB_KEYS, FakeClient, put


class CoalescingTests(SynchronousTestCase):
    """The first change after a quiet spell goes out at once, the rest of a burst together."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.client = FakeClient()
        self.published: list[Catalog] = []
        self.watcher = RegistryWatcher(
            self.client, self.clock, "/backends", self.published.append, publish_window=0.05
        )
        self.watcher.startService()
        keys = dict(WEB_KEYS)
        keys["/backends/big/port"] = Entry("81", 3)
        keys.update(
            {f"/backends/big/b{n}": Entry(f"10.1.0.{n + 1}:80", 4 + n) for n in range(200)}
        )
        self.client.snapshots[-1].callback(Snapshot(300, keys))
        self.addCleanup(lambda: self.successResultOf(self.watcher.stopService()))
        self.on_changes = self.client.watches[-1][1]

    def test_burst(self) -> None:
        """100 events in one window: one catalog at once, one more at the end of the window."""
        self.clock.advance(10)
        for n in range(100):
            self.on_changes([put(f"/backends/web/x{n}", f"10.0.1.{n + 1}:8080", 301 + n)], 301 + n)
        self.assertEqual(len(self.published), 2)
        self.assertEqual(len(self.published[-1].services["web"].backends), 2)
        self.clock.advance(0.04)
        self.assertEqual(len(self.published), 2)
        self.clock.advance(0.02)
        self.assertEqual(len(self.published), 3)
        self.assertEqual(len(self.published[-1].services["web"].backends), 101)
        self.assertIs(self.published[-1].services["big"], self.published[0].services["big"])
        self.assertEqual(self.watcher.last_index, 400)

    def test_quiet_then_change(self) -> None:
        """After a quiet window the next change is published without delay."""
        self.on_changes([put("/backends/web/x", "10.0.1.1:8080", 301)], 301)
        self.assertEqual(len(self.published), 1)  # inside the window of the listing
        self.clock.advance(0.05)
        self.assertEqual(len(self.published), 2)
        self.clock.advance(1)
        self.on_changes([put("/backends/web/y", "10.0.1.2:8080", 302)], 302)
        self.assertEqual(len(self.published), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_work_per_event(self) -> None:
        """An event in web re-derives web alone, not the 200 backends of big."""
        self.clock.advance(1)
        layout = self.watcher._layout
        before = layout.work
        self.on_changes([put("/backends/web/x", "10.0.1.1:8080", 301)], 301)
        self.assertLess(layout.work - before, 5)
