"""The watch loop: keep an up-to-date copy of the keys under the prefix, and publish catalogs.

One coroutine does it all: list every key (a snapshot), then watch for changes (a v2 long-poll
or a v3 watch stream, through the :class:`~ddiscover.registry.client.RegistryClient` both
clients satisfy), applying each batch to the cached keys and rebuilding the catalog with
:func:`~ddiscover.registry.layout.build_catalog`.  ``on_catalog`` is called only when the
catalog changes by value, and never with one built from a failed read: while etcd is out of
reach the last catalog stays in force and the loop retries with backoff.  After a gap (history
cleared or compacted, or etcd unreachable) it lists everything again, because nothing else is
safe: etcd may even have come back with a fresh data dir and a smaller index.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping, Sequence

from hyperlink import URL
from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from ddiscover._log import make_logger
from ddiscover.catalog import Catalog
from ddiscover.registry.client import Change, IndexCleared, RegistryClient, RegistryError
from ddiscover.registry.layout import Entry, build_catalog, normalise_prefix

log = make_logger()


def _jitter() -> float:
    return random.uniform(0.0, 0.25)


DEFAULT_BACKOFF: Callable[[int], float] = backoffPolicy(
    initialDelay=0.5, maxDelay=30.0, factor=2.0, jitter=_jitter
)


class WatchState(enum.Enum):
    """Where the watch loop is; the value is the word the stats page shows."""

    STARTING = "starting"
    WATCHING = "watching"
    RESYNCING = "resyncing"
    UNREACHABLE = "unreachable"
    STOPPED = "stopped"


class RegistryWatcher(Service):
    """Watches the prefix in etcd and calls ``on_catalog`` with each new catalog.

    ``backoff(attempt)`` gives the delay before retry ``attempt`` (0 for the first) while etcd
    is unreachable.
    """

    def __init__(
        self,
        client: RegistryClient,
        clock: IReactorTime,
        prefix: str,
        on_catalog: Callable[[Catalog], None],
        backoff: Callable[[int], float] = DEFAULT_BACKOFF,
        *,
        sync_deadline: float = 65.0,
    ) -> None:
        self._client = client
        self._clock = clock
        self._prefix = normalise_prefix(prefix)
        self._on_catalog = on_catalog
        self._backoff = backoff
        self._sync_deadline = sync_deadline
        self._entries: dict[str, Entry] = {}
        self._seen: dict[str, float] = {}
        self._published = False
        self._running: Deferred[None] | None = None
        self._next_index: int | None = None
        self.catalog = Catalog()
        self.state = WatchState.STOPPED
        self.state_since = clock.seconds()
        self.last_index: int | None = None
        self.last_event_at: float | None = None
        self.last_sync_at: float | None = None
        self.events = 0
        self.resyncs = 0

    @property
    def entries(self) -> Mapping[str, Entry]:
        """Every key under the prefix as last read from etcd, bad ones included."""
        return self._entries

    @property
    def seen(self) -> Mapping[str, float]:
        """When each key in :attr:`entries` was last listed or set (reactor time); a re-set
        of an unchanged value counts, so this shows that a registrar is still refreshing."""
        return self._seen

    @property
    def endpoint(self) -> URL:
        """The etcd endpoint in use."""
        return self._client.endpoint

    @property
    def api(self) -> str:
        """The etcd API in use: ``"v2"`` or ``"v3"`` (``"auto"`` until it is detected)."""
        return self._client.api

    @property
    def alive(self) -> bool:
        """Whether the watch loop is running: waiting on etcd, or on a retry timer."""
        return self._running is not None and not self._running.called

    @property
    def in_sync(self) -> bool:
        """Whether the cached keys are known to match etcd now.

        True only while the loop is alive and watching, and etcd confirmed the view (a
        listing, a change, or word that nothing changed) within ``sync_deadline`` seconds:
        the longest a healthy watch goes without news.
        """
        last = self.last_sync_at
        return (
            self.alive
            and self.state is WatchState.WATCHING
            and last is not None
            and self._clock.seconds() - last <= self._sync_deadline
        )

    def startService(self) -> None:
        """Start the watch loop; the first catalog is published after the first listing."""
        super().startService()
        self._set_state(WatchState.STARTING)
        self._running = Deferred.fromCoroutine(self._run())
        self._running.addErrback(self._crashed)

    def stopService(self) -> Deferred[None]:
        """Abort the request in flight and any pending retry; fires once stopped."""
        super().stopService()
        running, self._running = self._running, None
        self._set_state(WatchState.STOPPED)
        if running is None:
            return succeed(None)
        running.cancel()
        return running

    def _crashed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            log.failure("the etcd watch loop stopped on a bug", failure=failure)

    def _set_state(self, state: WatchState) -> None:
        if state is not self.state:
            self.state = state
            self.state_since = self._clock.seconds()

    async def _run(self) -> None:
        """List, then watch for changes; list again after any gap.

        ``self.running`` is checked before each request, because ``on_catalog`` may stop the
        service while this coroutine is running rather than waiting, and then cancelling it
        reaches nothing.
        """
        failures = 0
        self._next_index = None
        while self.running:
            try:
                if self._next_index is None:
                    self._next_index = await self._sync() + 1
                    failures = 0
                    continue
                await self._client.watch(self._next_index, self._apply)
            except IndexCleared as e:
                self.resyncs += 1
                self._set_state(WatchState.RESYNCING)
                log.info(
                    "etcd history no longer reaches index {index} ({error}); listing again",
                    index=self._next_index,
                    error=e.problem,
                )
                self._next_index = None
                continue
            except RegistryError as e:
                if self.state is not WatchState.UNREACHABLE:
                    self._set_state(WatchState.UNREACHABLE)
                    log.warn(
                        "etcd {endpoint} unreachable: {error}; "
                        "keeping the last known {services} services",
                        endpoint=e.endpoint.to_text(),
                        error=e.problem,
                        services=len(self.catalog.services),
                    )
                await deferLater(self._clock, self._backoff(failures))
                failures += 1
                self._next_index = None

    async def _sync(self) -> int:
        """Replace the cached keys with a fresh listing, publish, and return its index."""
        snapshot = await self._client.snapshot()
        recovered = self.state is WatchState.UNREACHABLE
        self._set_state(WatchState.WATCHING)
        self._entries = dict(snapshot.entries)
        self._seen = dict.fromkeys(self._entries, self._clock.seconds())
        self.last_index = snapshot.index
        self.last_sync_at = self._clock.seconds()
        self._rebuild()
        if recovered:
            self.resyncs += 1
            log.info(
                "etcd {endpoint} reachable again; resynced",
                endpoint=self._client.endpoint.to_text(),
            )
        return snapshot.index

    def _apply(self, changes: Sequence[Change], index: int) -> None:
        """Apply one batch of changes; rebuild once, and only if a value actually changed.

        The next watch starts after ``index``, even when the batch is empty (a v3 progress
        notification), so a quiet prefix does not fall behind a compaction.
        """
        self._next_index = index + 1
        self.last_index = index
        changed = False
        now = self._clock.seconds()
        self.last_sync_at = now
        for change in changes:
            self.events += 1
            self.last_event_at = now
            changed = self._apply_one(change, now) or changed
        if changed:
            self._rebuild()

    def _apply_one(self, change: Change, now: float) -> bool:
        """Apply one change to the cached keys; whether a value actually changed."""
        if change.removes and change.is_dir:
            inside = change.key.rstrip("/") + "/"
            gone = [key for key in self._entries if key.startswith(inside)]
            for key in gone:
                del self._entries[key]
                del self._seen[key]
            return bool(gone)
        if change.removes:
            self._seen.pop(change.key, None)
            return self._entries.pop(change.key, None) is not None
        if change.entry is not None:
            before = self._entries.get(change.key)
            self._entries[change.key] = change.entry
            self._seen[change.key] = now
            return before is None or before.value != change.entry.value
        return False  # a directory was created: no key, nothing to build

    def _rebuild(self) -> None:
        """Build the catalog from the cached keys; log new rejections; publish if it changed."""
        catalog = build_catalog(self._prefix, self._entries, previous=self.catalog)
        for rejection in sorted(
            catalog.rejections - self.catalog.rejections, key=lambda r: (r.key, r.reason)
        ):
            log.error("ignoring {key}: {reason}", key=rejection.key, reason=rejection.reason)
        if self._published and catalog == self.catalog:
            return
        self.catalog = catalog
        self._published = True
        try:
            self._on_catalog(catalog)
        except Exception:
            log.failure("publishing the catalog failed; the watch goes on")
