"""One reading of the stats, shared by every request for up to a second.

Reading the live parts and building the rows costs the reactor time proportional to the
number of servers (thousands of rows at 1,000 services), and the page, its exports and
``/metrics`` are each asked for every few seconds.  :class:`Snapshots` reads and builds once
per ``max_age`` seconds of the injected clock and keeps each rendered body with the
:class:`Snapshot` it came from, so a second request within that time costs a lookup.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IReactorTime

from ddiscover.stats.rows import Row, build_rows
from ddiscover.stats.state import StatsState

MAX_AGE = 1.0
"""Seconds a snapshot is served before the next request reads the live parts again."""


@attrs.define
class Snapshot:
    """A :class:`StatsState`, its rows, and the bodies rendered from them so far."""

    state: StatsState
    rows: tuple[Row, ...]
    _bodies: dict[object, bytes] = attrs.field(factory=dict)

    def body(self, key: object, render: Callable[[Snapshot], bytes]) -> bytes:
        """The body ``render`` makes of this snapshot, rendered once per ``key``."""
        cached = self._bodies.get(key)
        if cached is None:
            cached = self._bodies[key] = render(self)
        return cached


@attrs.define
class Snapshots:
    """Hands out the current :class:`Snapshot`, reading ``read`` again when it is too old."""

    clock: IReactorTime
    read: Callable[[], StatsState]
    max_age: float = MAX_AGE
    _current: Snapshot | None = None

    def current(self) -> Snapshot:
        """The snapshot at most ``max_age`` seconds old (by the clock), reading if needed."""
        now = self.clock.seconds()
        current = self._current
        if current is None or not 0 <= now - current.state.now < self.max_age:
            state = self.read()
            current = self._current = Snapshot(state, build_rows(state))
        return current

    def invalidate(self) -> None:
        """Forget the current snapshot, after a change the next request must show."""
        self._current = None

    def state(self) -> StatsState:
        """The current snapshot's state."""
        return self.current().state
