"""The watch loop: keep an up-to-date copy of the keys under the prefix, and publish catalogs.

A supervised loop in the spirit of Twisted's ``ClientService``: list every key (a snapshot),
then watch for changes (a v2 long-poll or a v3 watch stream, through the
:class:`~ddiscover.registry.client.RegistryClient` both clients satisfy), applying each batch
to a :class:`~ddiscover.registry.layout.Layout`.  Whatever goes wrong but cancellation (etcd
out of reach, a body no decoder expected, a bug here or in the consumer of catalogs) is logged
once, backed off and followed by a full listing; the last catalog stays in force meanwhile, so
listeners are never torn down for a registry failure.  If the loop itself ever ends on a bug,
it is restarted after a backoff: no state means "silently stopped".

Catalogs are published at most once per ``publish_window`` seconds: the first change after a
quiet spell goes out at once, the rest of a burst together at the end of the window.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hyperlink import URL
from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from ddiscover._log import make_logger
from ddiscover.catalog import Catalog
from ddiscover.registry.errors import IndexCleared, RegistryError
from ddiscover.registry.layout import Entry, Layout, normalise_prefix
from ddiscover.registry.rejections import RejectionLog
from ddiscover.registry.values import Change, RegistryClient
from ddiscover.text import clip

log = make_logger()


def _jitter() -> float:
    return random.uniform(0.0, 0.25)


DEFAULT_BACKOFF: Callable[[int], float] = backoffPolicy(
    initialDelay=0.5, maxDelay=30.0, factor=2.0, jitter=_jitter
)

#: Seconds between two published catalogs while changes keep coming.
PUBLISH_WINDOW = 0.05


class WatchState(enum.Enum):
    """Where the watch loop is; the value is the word the stats page shows."""

    STARTING = "starting"  # the first listing is in flight
    WATCHING = "watching"  # the view matched etcd and a watch is in flight
    RESYNCING = "resyncing"  # listing again after etcd's history moved past our index
    UNREACHABLE = "unreachable"  # backing off after etcd could not be read
    BACKING_OFF = "backing off"  # backing off after an unexpected error (logged with traceback)
    STOPPED = "stopped"


class _FaultError(Exception):
    """Raised in the loop when applying or publishing failed outside it (already recorded)."""


def describe(failure: Failure) -> str:
    """A short one-line description of ``failure`` for ``last_error``."""
    value = failure.value
    text = " ".join(str(value).split())
    return clip(f"{type(value).__name__}: {text}" if text else type(value).__name__)


class RegistryWatcher(Service):
    """Watches the prefix in etcd and calls ``on_catalog`` with each new catalog.

    ``backoff(attempt)`` gives the delay before retry ``attempt`` (0 for the first) after any
    failure.  Public, read by /health and the stats page: ``state``, ``state_since``,
    ``alive``, ``in_sync``, ``last_sync_at``, ``last_error``, ``last_index``,
    ``last_event_at``, ``events``, ``resyncs``, ``catalog``, ``entries``, ``seen``.
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
        publish_window: float = PUBLISH_WINDOW,
        rejection_grace: float = 1.0,
    ) -> None:
        self._client = client
        self._clock = clock
        self._prefix = normalise_prefix(prefix)
        self._on_catalog = on_catalog
        self._backoff = backoff
        self._sync_deadline = sync_deadline
        self._window = publish_window
        self._rejections = RejectionLog(clock, rejection_grace)
        self._entries: dict[str, Entry] = {}
        self._seen: dict[str, float] = {}
        self._layout = Layout(self._prefix)
        self._published = False
        self._published_at: float | None = None
        self._publish_call: IDelayedCall | None = None
        self._restart_call: IDelayedCall | None = None
        self._running: Deferred[None] | None = None
        self._request: Deferred[Any] | None = None
        self._fault: Failure | None = None
        self._logged_error: str | None = None
        self._next_index: int | None = None
        self.catalog = Catalog()
        self.state = WatchState.STOPPED
        self.state_since = clock.seconds()
        self.last_index: int | None = None
        self.last_event_at: float | None = None
        self.last_sync_at: float | None = None
        self.last_error: str | None = None
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
        if not self.running:
            return False
        loop_runs = self._running is not None and not self._running.called
        return loop_runs or self._restart_call is not None

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
        self._start_loop()

    def stopService(self) -> Deferred[None]:
        """Abort the request in flight and any pending retry; fires once stopped."""
        super().stopService()
        running, self._running = self._running, None
        for call in (self._publish_call, self._restart_call):
            if call is not None and call.active():
                call.cancel()
        self._publish_call = self._restart_call = None
        self._rejections.stop()
        self._set_state(WatchState.STOPPED)
        if running is None or running.called:
            return succeed(None)
        running.cancel()
        return running

    def _start_loop(self) -> None:
        self._restart_call = None
        self._next_index = None
        running = self._running = Deferred.fromCoroutine(self._run())
        running.addErrback(self._crashed, running)

    def _crashed(self, failure: Failure, running: Deferred[None]) -> None:
        """The loop ended on a bug of its own: log it and start it again after a backoff."""
        if not self.running or running is not self._running:
            return
        log.failure("the etcd watch loop stopped on a bug; restarting it", failure=failure)
        self.last_error = describe(failure)
        self._set_state(WatchState.BACKING_OFF)
        self._restart_call = self._clock.callLater(self._backoff(0), self._start_loop)

    def _set_state(self, state: WatchState) -> None:
        if state is not self.state:
            self.state = state
            self.state_since = self._clock.seconds()

    async def _call(self, request: Any) -> Any:
        """Await ``request`` as a Deferred that a fault outside the loop can cancel."""
        self._request = ensureDeferred(request)
        try:
            return await self._request
        finally:
            self._request = None
            if self._fault is not None:
                fault, self._fault = self._fault, None
                raise _FaultError() from fault.value

    def _interrupt(self, failure: Failure) -> None:
        """Log a failure met outside the loop's own awaits, and make the loop resync."""
        self._report(failure)
        self._fault = failure
        if self._request is not None and not self._request.called:
            self._request.cancel()

    def _report(self, failure: Failure) -> None:
        """Log an unexpected failure with its traceback, once for each new error."""
        error = describe(failure)
        if error != self._logged_error:
            self._logged_error = error
            log.failure(
                "the etcd watch failed ({error}); backing off, then listing again",
                failure=failure,
                error=error,
            )
        self.last_error = error

    async def _run(self) -> None:
        """List, then watch for changes; list again after any gap.

        ``self.running`` is checked before each request, because ``on_catalog`` may stop the
        service while this coroutine is running rather than waiting, and then cancelling it
        reaches nothing.
        """
        failures = 0
        while self.running:
            try:
                if self._next_index is None:
                    self._next_index = await self._sync() + 1
                    failures = 0
                    continue
                await self._call(self._client.watch(self._next_index, self._apply))
                continue
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
                self.last_error = clip(e.problem)
                if self.state is not WatchState.UNREACHABLE:
                    self._set_state(WatchState.UNREACHABLE)
                    log.warn(
                        "etcd {endpoint} unreachable: {error}; "
                        "keeping the last known {services} services",
                        endpoint=e.endpoint.to_text(),
                        error=e.problem,
                        services=len(self.catalog.services),
                    )
            except _FaultError:
                self._set_state(WatchState.BACKING_OFF)
            except CancelledError:
                if not self.running:
                    raise  # stopService cancelled us
                # A request cancelled by something else (a timeout in a library) is a
                # failure like any other: ending the loop here would end it silently.
                self._report(Failure())
                self._set_state(WatchState.BACKING_OFF)
            except Exception:
                self._report(Failure())
                self._set_state(WatchState.BACKING_OFF)
            self._next_index = None
            await deferLater(self._clock, self._backoff(failures))
            failures += 1

    async def _sync(self) -> int:
        """Replace the cached keys with a fresh listing, publish, and return its index."""
        snapshot = await self._call(self._client.snapshot())
        recovered = self.state in (WatchState.UNREACHABLE, WatchState.BACKING_OFF)
        self._entries = dict(snapshot.entries)
        self._seen = dict.fromkeys(self._entries, self._clock.seconds())
        self._layout = Layout(self._prefix)
        for key, entry in self._entries.items():
            self._layout.set(key, entry)
        self._set_state(WatchState.WATCHING)
        self.last_index = snapshot.index
        self.last_sync_at = self._clock.seconds()
        self.last_error = None
        if recovered:
            self.resyncs += 1
            log.info(
                "etcd {endpoint} reachable again; resynced",
                endpoint=self._client.endpoint.to_text(),
            )
        self._publish()
        if self._fault is not None:
            fault, self._fault = self._fault, None
            raise _FaultError() from fault.value
        return snapshot.index

    def _apply(self, changes: Sequence[Change], index: int) -> None:
        """Apply one batch of changes, and publish now or at the end of the window.

        The next watch starts after ``index``, even when the batch is empty (a v3 progress
        notification), so a quiet prefix does not fall behind a compaction.
        """
        try:
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
                self._changed()
        except Exception:
            self._interrupt(Failure())

    def _apply_one(self, change: Change, now: float) -> bool:
        """Apply one change to the cached keys; whether a value actually changed."""
        if change.removes and change.is_dir:
            inside = change.key.rstrip("/") + "/"
            gone = [key for key in self._entries if key.startswith(inside)]
            for key in gone:
                del self._entries[key]
                del self._seen[key]
                self._layout.remove(key)
            return bool(gone)
        if change.removes:
            self._seen.pop(change.key, None)
            if self._entries.pop(change.key, None) is None:
                return False
            self._layout.remove(change.key)
            return True
        if change.entry is not None:
            before = self._entries.get(change.key)
            self._entries[change.key] = change.entry
            self._seen[change.key] = now
            if before is not None and before.value == change.entry.value:
                return False
            self._layout.set(change.key, change.entry)
            return True
        return False  # a directory was created: no key, nothing to build

    def _changed(self) -> None:
        """Publish now if the window since the last catalog is over, else at its end."""
        if self._publish_call is not None:
            return
        last = self._published_at
        wait = 0.0 if last is None else last + self._window - self._clock.seconds()
        if wait <= 0:
            self._publish()
        else:
            self._publish_call = self._clock.callLater(wait, self._publish_later)

    def _publish_later(self) -> None:
        self._publish_call = None
        try:
            self._publish()
        except Exception:
            self._interrupt(Failure())

    def _publish(self) -> None:
        """Build the catalog from the layout; note new rejections; publish if it changed."""
        if self._publish_call is not None:
            self._publish_call.cancel()
            self._publish_call = None
        catalog = self._layout.build(self.catalog)
        self._rejections.update(catalog.rejections)
        if self._published and catalog == self.catalog:
            return
        self.catalog = catalog
        self._published = True
        self._published_at = self._clock.seconds()
        try:
            self._on_catalog(catalog)
        except Exception:
            self._published = False  # publish again after the resync, whatever it finds
            self._interrupt(Failure())
        else:
            self._logged_error = None
