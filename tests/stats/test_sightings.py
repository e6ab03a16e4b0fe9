"""Tests for :mod:`ddiscover.stats.sightings`: when each registry key was last read."""

from __future__ import annotations

from collections.abc import Sequence

from hyperlink import URL
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.registry.client import Change, ChangeHandler, Snapshot
from ddiscover.registry.layout import Entry
from ddiscover.stats.sightings import Sightings


class _ScriptedClient:
    """A registry client whose listing is fixed and whose watch reports the given batches."""

    endpoint = URL.from_text("http://etcd.test:2379")
    api = "v2"

    def __init__(self, entries: dict[str, Entry], batches: Sequence[Sequence[Change]]) -> None:
        self.entries = entries
        self.batches = batches
        self.reported: list[Sequence[Change]] = []

    async def snapshot(self) -> Snapshot:
        return Snapshot(index=10, entries=self.entries)

    async def watch(self, index: int, on_changes: ChangeHandler) -> None:
        for batch in self.batches:
            on_changes(batch, index)


def entry(value: str) -> Entry:
    return Entry(value, modified_index=1, ttl=30)


def change(action: str, key: str, value: str | None = None, is_dir: bool = False) -> Change:
    return Change(action, key, is_dir, entry(value) if value else None, 11)


class SightingsTests(SynchronousTestCase):
    """Every key listed or changed is noted at the reactor's time; removed keys are forgotten."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)
        self.client = _ScriptedClient(
            {"/b/web/port": entry("80"), "/b/web/a": entry("h:1"), "/b/api/x": entry("h:2")},
            [],
        )
        self.sightings = Sightings(self.client, self.clock)

    def test_passes_through(self) -> None:
        """The endpoint, the API and the listing are the wrapped client's."""
        self.assertEqual(self.sightings.endpoint, self.client.endpoint)
        self.assertEqual(self.sightings.api, "v2")
        snapshot = self.successResultOf(Deferred.fromCoroutine(self.sightings.snapshot()))
        self.assertEqual(snapshot.entries, self.client.entries)

    def test_listing_notes_every_key(self) -> None:
        """A listing replaces what was noted: every key in it is seen now."""
        self.successResultOf(Deferred.fromCoroutine(self.sightings.snapshot()))
        self.assertEqual(dict(self.sightings.seen), dict.fromkeys(self.client.entries, 100.0))

    def test_changes(self) -> None:
        """A set is seen at its time; a delete forgets the key; a directory delete its keys."""
        self.successResultOf(Deferred.fromCoroutine(self.sightings.snapshot()))
        self.clock.advance(5)
        self.client.batches = [
            [change("set", "/b/web/a", "h:1"), change("delete", "/b/api/x")],
            [change("set", "/b/web/b", "h:3")],
        ]
        got: list[tuple[Sequence[Change], int]] = []
        self.successResultOf(
            Deferred.fromCoroutine(self.sightings.watch(11, lambda c, i: got.append((c, i))))
        )
        self.assertEqual(len(got), 2)
        self.assertEqual(
            dict(self.sightings.seen), {"/b/web/port": 100.0, "/b/web/a": 105.0, "/b/web/b": 105.0}
        )
        self.client.batches = [[change("delete", "/b/web", is_dir=True)]]
        self.successResultOf(Deferred.fromCoroutine(self.sightings.watch(12, lambda c, i: None)))
        self.assertEqual(dict(self.sightings.seen), {})
