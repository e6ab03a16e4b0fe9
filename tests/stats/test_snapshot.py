"""Tests for :mod:`ddiscover.stats.snapshot`: one reading shared for up to a second."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import cast

import attrs
from prometheus_client import generate_latest
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.test.requesthelper import DummyRequest

from ddiscover.stats import formats, metrics, page, rows, state
from ddiscover.stats.formats import to_csv, to_json
from ddiscover.stats.metrics import metrics_registry
from ddiscover.stats.page import View, render_page
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


class SlicedTests(SynchronousTestCase):
    """A cold request is made and written a slice per reactor turn, shared, and stoppable."""

    def setUp(self) -> None:
        self.running = Running(self)
        self.clock = self.running.reactor
        # Slices of a row or service each, so the harness's few servers make many.
        self.patch(formats, "SLICE", 1)
        self.patch(rows, "SLICE", 1)
        self.patch(state, "SLICE", 1)
        self.patch(page, "_SLICE", 1)
        self.patch(metrics, "_SAMPLES", 2)
        self.clock.advance(1.5)  # The harness's snapshot is now too old.

    def start(self, path: str) -> DummyRequest:
        request = DummyRequest([p.encode() for p in path.lstrip("/").split("/")])
        request.uri = path.encode()
        result = getChildForRequest(self.running.root, request).render(request)
        self.assertEqual(result, NOT_DONE_YET)
        return request

    def turns(self, request: DummyRequest) -> list[int]:
        """Run the reactor at this instant; how much was written at each other call in it."""
        seen: list[int] = []

        def other() -> None:
            seen.append(len(request.written))
            if not request.finished:
                self.clock.callLater(0, other)

        self.clock.callLater(0, other)
        self.clock.advance(0)
        return seen

    def test_cold_request_yields_between_slices(self) -> None:
        """The body comes in many writes, other calls run between them, the bytes unchanged."""
        for path, render in (
            ("/;csv", lambda s: to_csv(s.rows)),
            ("/;json", lambda s: to_json(s.rows)),
            ("/", lambda s: render_page(s.state, s.rows, View())),
        ):
            self.clock.advance(1.5)
            request = self.start(path)
            self.assertEqual(request.written, [])
            seen = self.turns(request)
            self.assertTrue(request.finished)
            writes = len(request.written)
            self.assertGreater(writes, 2, path)
            # Another call ran while the body was half written, more than once.
            self.assertGreater(len([n for n in seen if 0 < n < writes]), 1, path)
            snapshot = self.running.root.snapshots.current()
            self.assertEqual(b"".join(request.written), render(snapshot), path)

    def test_metrics_in_slices(self) -> None:
        """``/metrics`` too, and encoded the same as at once."""
        request = self.start("/metrics")
        seen = self.turns(request)
        self.assertTrue(request.finished)
        self.assertGreater(len([n for n in seen if 0 < n < len(request.written)]), 1)
        snapshot = self.running.root.snapshots.current()
        whole = generate_latest(metrics_registry(lambda: snapshot.state, lambda: snapshot.rows))
        body = b"".join(request.written)

        def ours(text: bytes) -> list[bytes]:
            return [line for line in text.splitlines() if line.startswith(b"ddiscover_")]

        self.assertEqual(ours(body), ours(whole))

    def test_one_build_for_concurrent_requests(self) -> None:
        """Requests during a build share it and its body; each gets the whole body."""
        reads: list[float] = []
        snapshots = self.running.root.snapshots
        steps = snapshots.read_steps
        assert steps is not None

        def read_steps() -> Generator[None, None, StatsState]:
            reads.append(self.clock.seconds())
            return (yield from steps())

        snapshots.read_steps = read_steps
        first = self.start("/;csv")
        self.clock.callLater(0, lambda: None)
        second = self.start("/;csv")
        self.turns(first)
        self.assertTrue(first.finished and second.finished)
        self.assertEqual(len(reads), 1)
        self.assertEqual(b"".join(first.written), b"".join(second.written))

    def test_disconnect_stops_the_work(self) -> None:
        """A client gone before its body is made stops the making; the next one starts anew."""
        request = self.start("/;json")

        def stop_soon() -> None:
            """The client goes away once the first slice is written."""
            if request.written and not request.finished:
                request.processingFailed(Failure(ConnectionDone()))
            elif not request.written:
                self.clock.callLater(0, stop_soon)

        self.clock.callLater(0, stop_soon)
        self.clock.advance(0)
        self.assertFalse(request.finished)
        partial = len(request.written)
        self.assertFalse(
            [c for c in self.clock.getDelayedCalls() if c.getTime() <= self.clock.seconds()]
        )
        again = self.start("/;json")
        self.turns(again)
        self.assertTrue(again.finished)
        self.assertEqual(len(request.written), partial)
        snapshot = self.running.root.snapshots.current()
        self.assertEqual(b"".join(again.written), to_json(snapshot.rows))

    def test_health_answers_during_a_build(self) -> None:
        """``/health`` is answered at once while a snapshot is being built."""
        self.start("/")
        health = self.start_health()
        self.assertIn(b'"status"', health)

    def start_health(self) -> bytes:
        request = DummyRequest([b"health"])
        result = getChildForRequest(self.running.root, request).render(request)
        assert isinstance(result, bytes)
        return result

    def test_a_body_that_fails_ends_its_requests(self) -> None:
        """A bug in a body's making is logged; its readers are ended, the next try anew."""
        snapshot = self.running.root.snapshots.current()

        def broken(_: object) -> Iterator[bytes]:
            yield b"first"
            raise ValueError("broken slice")

        request = DummyRequest([b""])
        snapshot.stream("broken", broken, cast(Request, request))
        self.clock.advance(0)
        self.assertTrue(request.finished)
        self.assertEqual(request.written, [b"first"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        again = DummyRequest([b""])
        snapshot.stream("broken", lambda _: iter([b"fixed"]), cast(Request, again))
        self.clock.advance(0)
        self.assertEqual((again.finished, again.written), (1, [b"fixed"]))
