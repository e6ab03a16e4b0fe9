"""When ddiscover last read each registry key from etcd, for the stats page's TTL and "seen".

:class:`Sightings` wraps the registry client the watcher uses (any
:class:`~ddiscover.registry.client.RegistryClient`) and notes the reactor time of every key
in each listing and each change, forgetting keys that are removed.  With the TTL etcd sent
along (v2), that gives the TTL left now; for every key it gives how long ago etcd last
confirmed it.  It changes nothing the watcher sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hyperlink import URL
from twisted.internet.interfaces import IReactorTime

from ddiscover.registry.client import Change, ChangeHandler, RegistryClient, Snapshot


class Sightings:
    """A :class:`RegistryClient` that remembers when each key was last read."""

    def __init__(self, client: RegistryClient, clock: IReactorTime) -> None:
        self._client = client
        self._clock = clock
        self._seen: dict[str, float] = {}

    @property
    def seen(self) -> Mapping[str, float]:
        """The reactor time each key present in etcd was last listed or changed."""
        return self._seen

    @property
    def endpoint(self) -> URL:
        """The endpoint in use."""
        return self._client.endpoint

    @property
    def api(self) -> str:
        """The etcd API in use."""
        return self._client.api

    async def snapshot(self) -> Snapshot:
        """List every key, and note them all as seen now."""
        snapshot = await self._client.snapshot()
        self._seen = dict.fromkeys(snapshot.entries, self._clock.seconds())
        return snapshot

    async def watch(self, index: int, on_changes: ChangeHandler) -> None:
        """Watch from ``index``, noting each change before the watcher applies it."""

        def noted(changes: Sequence[Change], reached: int) -> None:
            self._note(changes)
            on_changes(changes, reached)

        await self._client.watch(index, noted)

    def _note(self, changes: Sequence[Change]) -> None:
        now = self._clock.seconds()
        for change in changes:
            if change.removes and change.is_dir:
                inside = change.key.rstrip("/") + "/"
                for key in [k for k in self._seen if k.startswith(inside)]:
                    del self._seen[key]
            elif change.removes:
                self._seen.pop(change.key, None)
            elif change.entry is not None:
                self._seen[change.key] = now
