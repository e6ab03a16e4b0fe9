"""One reading of the stats, shared by every request for up to a second, made in slices.

Reading the live parts and building the rows costs the reactor time proportional to the
number of servers (thousands of rows at 1,000 services), and the page, its exports and
``/metrics`` are each asked for every few seconds.  :class:`Snapshots` reads and builds once
per ``max_age`` seconds of the injected clock and keeps each rendered body with the
:class:`Snapshot` it came from, so a second request within that time costs a lookup.

Nothing big is done in one reactor turn, since every turn the stats take stalls every
proxied connection: the rows are built a few services per turn, and each body is made by a
generator of slices that a :class:`~twisted.internet.task.Cooperator` on the injected clock
runs one slice per turn, each slice written at once to every request waiting for that body.
One build is in flight at a time, shared by the requests that come meanwhile; a body whose
readers all went away stops being made (and is made anew for the next one).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import CooperativeTask, Cooperator, TaskStopped
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from ddiscover._log import make_logger
from ddiscover.stats.rows import Row, build_rows, row_slices
from ddiscover.stats.state import StatsState

MAX_AGE = 1.0
"""Seconds a snapshot is served before the next request reads the live parts again."""

log = make_logger()

Slices = Callable[["Snapshot"], Iterator[bytes]]
"""What makes a body of a snapshot, a slice at a time."""


def _one_slice_per_turn() -> Callable[[], bool]:
    return lambda: True


def cooperator(clock: IReactorTime) -> Cooperator:
    """A cooperator that runs one unit of work per reactor turn of ``clock``."""
    return Cooperator(
        terminationPredicateFactory=_one_slice_per_turn,
        scheduler=lambda work: clock.callLater(0, work),
    )


@attrs.define(eq=False)
class _Body:
    """A body being made or made: its slices so far and the requests still reading it."""

    chunks: list[bytes] = attrs.field(factory=list)
    readers: list[Request] = attrs.field(factory=list)
    done: bool = False
    task: CooperativeTask | None = None

    def finish_readers(self) -> None:
        """End every request still reading this body."""
        readers, self.readers = self.readers, []
        for reader in readers:
            reader.finish()

    def add(self, request: Request) -> None:
        for chunk in self.chunks:
            request.write(chunk)
        if self.done:
            request.finish()
            return
        self.readers.append(request)

    def make(self, slices: Iterator[bytes]) -> Iterator[None]:
        for chunk in slices:
            self.chunks.append(chunk)
            for reader in tuple(self.readers):
                reader.write(chunk)
            yield None
        self.done = True
        self.finish_readers()


@attrs.define
class Snapshot:
    """A :class:`StatsState`, its rows, and the bodies rendered from them so far."""

    state: StatsState
    rows: tuple[Row, ...]
    _cooperator: Cooperator | None = None
    _bodies: dict[object, _Body] = attrs.field(factory=dict)

    def body(self, key: object, render: Callable[[Snapshot], bytes]) -> bytes:
        """The body ``render`` makes of this snapshot at once, rendered once per ``key``."""
        made = self._bodies.get(key)
        if made is None or not made.done:
            made = self._bodies[key] = _Body([render(self)], done=True)
        return b"".join(made.chunks)

    def stream(self, key: object, slices: Slices, request: Request) -> None:
        """Write the body ``slices`` makes to ``request`` as it is made, then finish it.

        The body is made once per ``key``, one slice per reactor turn; requests for it
        meanwhile get the slices made so far and then the others as they come.
        """
        made = self._bodies.get(key)
        if made is None:
            made = self._bodies[key] = _Body()
            work = made.make(slices(self))
            if self._cooperator is None:
                for _ in work:
                    pass
            else:
                made.task = self._cooperator.cooperate(work)
                made.task.whenDone().addErrback(self._failed, key, made)
        made.add(request)
        if not made.done:
            request.notifyFinish().addErrback(lambda _: self._gone(key, made, request))

    def _gone(self, key: object, made: _Body, request: Request) -> None:
        """A reader disconnected: the last one gone stops the work on its body."""
        if request in made.readers:
            made.readers.remove(request)
        if made.readers or made.done or made.task is None:
            return
        made.task.stop()
        if self._bodies.get(key) is made:
            del self._bodies[key]

    def _failed(self, failure: Failure, key: object, made: _Body) -> None:
        if failure.check(TaskStopped):
            return
        log.failure("stats body {key} could not be made", failure=failure, key=str(key))
        if self._bodies.get(key) is made:
            del self._bodies[key]
        made.finish_readers()


@attrs.define
class Snapshots:
    """Hands out the current :class:`Snapshot`, reading ``read`` again when it is too old."""

    clock: IReactorTime
    read: Callable[[], StatsState]
    max_age: float = MAX_AGE
    #: ``read`` in steps (yielding between them, returning the state), when it has them.
    read_steps: Callable[[], Generator[None, None, StatsState]] | None = None
    _current: Snapshot | None = None
    _cooperator: Cooperator | None = None
    _building: list[Deferred[Snapshot]] | None = None

    def _valid(self) -> Snapshot | None:
        current = self._current
        if current is None or not 0 <= self.clock.seconds() - current.state.now < self.max_age:
            return None
        return current

    def current(self) -> Snapshot:
        """The snapshot at most ``max_age`` seconds old (by the clock), built at once if needed."""
        current = self._valid()
        if current is None:
            state = self.read()
            current = self._current = Snapshot(state, build_rows(state), self._work())
        return current

    def fresh(self) -> Deferred[Snapshot]:
        """The snapshot at most ``max_age`` seconds old, built in slices if needed."""
        current = self._valid()
        if current is not None:
            return succeed(current)
        waiter: Deferred[Snapshot] = Deferred()
        if self._building is None:
            self._building = [waiter]
            self._build(self._building)
        else:
            self._building.append(waiter)
        return waiter

    def _work(self) -> Cooperator:
        if self._cooperator is None:
            self._cooperator = cooperator(self.clock)
        return self._cooperator

    def _build(self, waiters: list[Deferred[Snapshot]]) -> None:
        rows: list[Row] = []
        holder: list[StatsState] = []

        def steps() -> Iterator[None]:
            if self.read_steps is None:
                holder.append(self.read())
            else:
                holder.append((yield from self.read_steps()))
            yield None
            for part in row_slices(holder[0]):
                rows.extend(part)
                yield None

        def built(_: object) -> None:
            snapshot = Snapshot(holder[0], tuple(rows), self._work())
            if self._building is waiters:
                # Not invalidated meanwhile: later requests get it too.
                self._building = None
                self._current = snapshot
            for waiter in waiters:
                waiter.callback(snapshot)

        def failed(failure: Failure) -> None:
            if self._building is waiters:
                self._building = None
            for waiter in waiters:
                waiter.errback(failure)

        self._work().cooperate(steps()).whenDone().addCallbacks(built, failed)

    def invalidate(self) -> None:
        """Forget the current snapshot, after a change the next request must show.

        A build in flight keeps serving those already waiting for it, not later requests.
        """
        self._current = None
        self._building = None

    def state(self) -> StatsState:
        """The current snapshot's state."""
        return self.current().state


def serve(snapshots: Snapshots, request: Request, key: object, slices: Slices) -> int:
    """Answer ``request`` with the body ``slices`` makes of the fresh snapshot, in slices."""
    gone: list[object] = []
    request.notifyFinish().addErrback(gone.append)

    def send(snapshot: Snapshot) -> None:
        if not gone:
            snapshot.stream(key, slices, request)

    def fail(failure: Failure) -> None:
        log.failure("stats snapshot could not be read", failure=failure)
        if not gone:
            request.setResponseCode(500)
            request.write(b"the stats could not be read\n")
            request.finish()

    snapshots.fresh().addCallbacks(send, fail)
    return NOT_DONE_YET
