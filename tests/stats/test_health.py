"""Tests for ``/health`` (:mod:`ddiscover.stats.web`): 200 only when the view is current."""

from __future__ import annotations

import json
from typing import cast

import attrs
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.registry.watcher import RegistryWatcher, WatchState
from ddiscover.stats.web import not_in_sync
from tests.stats import Running


@attrs.define
class _Watcher:
    """The watcher attributes ``/health`` reads, set by hand."""

    state: WatchState = WatchState.WATCHING
    alive: bool = True
    in_sync: bool = False
    last_sync_at: float | None = 100.0
    last_error: object = None


def reason(**fields: object) -> str | None:
    return not_in_sync(cast(RegistryWatcher, _Watcher(**fields)), now=190.0)  # type: ignore[arg-type]


class NotInSyncTests(SynchronousTestCase):
    """The one line that says why the view of etcd may be stale."""

    def test_in_sync(self) -> None:
        """In sync: no reason."""
        self.assertIsNone(reason(in_sync=True))

    def test_reasons(self) -> None:
        """Each way of being out of sync names itself, with the last error when known."""
        self.assertEqual(reason(), "no word from etcd for 90s")
        self.assertEqual(
            reason(state=WatchState.UNREACHABLE, last_error="connection refused"),
            "registry watch is unreachable: connection refused",
        )
        self.assertEqual(
            reason(alive=False, last_error=RecursionError("too deep")),
            "the registry watch loop is not running: too deep",
        )
        self.assertEqual(
            reason(state=WatchState.STARTING, alive=False, last_sync_at=None),
            "registry watch is starting",
        )
        self.assertEqual(reason(last_sync_at=None), "no listing of etcd has completed yet")

    def test_long_error_is_clipped(self) -> None:
        """A 1 MB error text becomes a couple of hundred characters and its size."""
        text = reason(state=WatchState.UNREACHABLE, last_error="x" * 10**6)
        assert text is not None
        self.assertLess(len(text), 400)
        self.assertIn("1000000 bytes", text)


class HealthTests(SynchronousTestCase):
    """``/health`` and the registry gauges on a ddiscover built on fakes."""

    def test_in_sync_is_200(self) -> None:
        """Watching, confirmed recently: 200 with the watch's state and the age of the sync."""
        self.running = Running(self)
        code, _, body = self.running.get("/health")
        self.assertEqual(code, 200)
        document = json.loads(body)
        self.assertEqual(document["status"], "serving")
        self.assertIsNone(document["reason"])
        registry = document["registry"]
        self.assertEqual((registry["alive"], registry["in_sync"]), (True, True))
        self.assertAlmostEqual(registry["last_sync_age"], 10.2)
        metrics = self.running.get("/metrics")[2]
        self.assertIn("ddiscover_registry_alive 1.0", metrics)
        self.assertIn("ddiscover_registry_in_sync 1.0", metrics)
        self.assertIn("ddiscover_registry_last_sync_age_seconds 10.", metrics)
        self.assertIn("<b>in sync = </b>yes; confirmed 10s ago", self.running.get("/")[2])

    def test_stopped_watch_is_503(self) -> None:
        """A watch that stopped is not in sync: 503 with the reason, gauges at 0."""
        self.running = Running(self)
        watcher = self.running.root.sources.watcher
        watcher.stopService()
        self.running.reactor.advance(1)
        code, _, body = self.running.get("/health")
        self.assertEqual(code, 503)
        document = json.loads(body)
        self.assertEqual(document["status"], "degraded")
        self.assertIn("registry watch", document["reason"])
        self.assertFalse(document["registry"]["in_sync"])
        metrics = self.running.get("/metrics")[2]
        self.assertIn("ddiscover_registry_in_sync 0.0", metrics)
        self.assertIn("ddiscover_registry_alive 0.0", metrics)
