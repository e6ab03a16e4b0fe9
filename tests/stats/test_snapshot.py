"""Tests for :mod:`ddiscover.stats.snapshot`: one reading shared for up to a second."""

from __future__ import annotations

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.stats.snapshot import Snapshots
from ddiscover.stats.state import StatsState
from tests.stats import Running, fixed_state


class SnapshotsTests(SynchronousTestCase):
    """When the live parts are read again, and how bodies are kept."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.reads: list[float] = []
        self.snapshots = Snapshots(self.clock, self.read)

    def read(self) -> StatsState:
        self.reads.append(self.clock.seconds())
        return fixed_state(now=self.clock.seconds())

    def test_read_once_per_second(self) -> None:
        """Requests within a second share one reading; the next second reads again."""
        first = self.snapshots.current()
        self.clock.advance(0.99)
        self.assertIs(self.snapshots.current(), first)
        self.clock.advance(0.01)
        self.assertIsNot(self.snapshots.current(), first)
        self.assertEqual(self.reads, [0.0, 1.0])
        self.assertEqual(len(first.rows), 13)

    def test_clock_going_back(self) -> None:
        """A snapshot from the future (a clock set back) is not served."""
        self.clock.advance(10)
        self.snapshots.current()
        self.clock = Clock()
        self.snapshots = attrs.evolve(self.snapshots, clock=self.clock)
        self.snapshots.current()
        self.assertEqual(self.reads, [10.0, 0.0])

    def test_bodies_rendered_once(self) -> None:
        """Each body is rendered once per snapshot and key."""
        renders: list[str] = []

        def render(key: str) -> bytes:
            renders.append(key)
            return key.encode()

        snapshot = self.snapshots.current()
        for key in ("csv", "json", "csv"):
            self.assertEqual(snapshot.body(key, lambda _, k=key: render(k)), key.encode())  # type: ignore[misc]
        self.assertEqual(renders, ["csv", "json"])
        self.snapshots.invalidate()
        self.snapshots.current().body("csv", lambda _: render("csv"))
        self.assertEqual(renders, ["csv", "json", "csv"])


class SharedSnapshotTests(SynchronousTestCase):
    """The stats site serves every path from one snapshot per second."""

    def test_page_csv_and_metrics_share_a_reading(self) -> None:
        """A change shows in every format only once the snapshot is a second old."""
        running = Running(self)
        running.get("/;csv")
        frontend = running.listeners.frontends()["web"]
        frontend.counters.stot = 4242
        self.assertNotIn("4242", running.get("/;csv")[2])
        self.assertNotIn("4242", running.get("/metrics")[2])
        running.reactor.advance(1)
        self.assertIn(",4242,", running.get("/;csv")[2])
        self.assertIn(
            'ddiscover_frontend_sessions_total{proxy="web"} 4242.0', running.get("/metrics")[2]
        )
