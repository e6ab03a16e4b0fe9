"""The check loop of one address: an explicit state machine that cannot stop silently.

States: ``waiting`` for the next check (a delayed call), ``checking`` (a check in flight),
``backing_off`` after a bug (a delayed call), and ``stopped``.  Every way out of a check,
a result, an exception from the check or from counting its result, leads to a scheduled next
step; only :meth:`CheckLoop.stop` ends the loop.  A bug is reported once, with its traceback,
through ``crashed`` and the loop tries again after a growing backoff, in the manner of
Twisted's ``ClientService``.  Checks never overlap: the next one is scheduled only once the
current one has settled, counting its delay from when the check started.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from ddiscover.health.result import CheckResult

Check = Callable[[], Coroutine[Any, Any, CheckResult]]
Backoff = Callable[[int], float]
"""Seconds to wait after the ``n``-th bug in a row (``n`` from 1)."""


default_backoff: Backoff = backoffPolicy(
    initialDelay=0.5, maxDelay=60.0, factor=2.0, jitter=lambda: 0.0
)
"""1, 2, 4 ... seconds after consecutive bugs (attempts from 1), at most a minute."""


class LoopState(enum.Enum):
    """Where a :class:`CheckLoop` stands."""

    IDLE = "idle"
    WAITING = "waiting"
    CHECKING = "checking"
    BACKING_OFF = "backing off"
    STOPPED = "stopped"


class CheckLoop:
    """Runs ``check`` at the delays given, hands each result to ``count``, survives bugs.

    ``crashed(failure, retry_in)`` is told of every bug (an exception from ``check``, which
    should turn every failure into a result, or from ``count``); ``recovered()`` once a result
    is counted again after one.  Once stopped, a check that settles late is not counted.
    """

    def __init__(
        self,
        clock: IReactorTime,
        check: Check,
        count: Callable[[CheckResult], None],
        crashed: Callable[[Failure, float], None],
        recovered: Callable[[], None],
        *,
        backoff: Backoff = default_backoff,
    ) -> None:
        self.state = LoopState.IDLE
        self._clock = clock
        self._check = check
        self._bugs = 0
        self._count = count
        self._crashed = crashed
        self._recovered = recovered
        self._backoff = backoff
        self._delays: Iterator[float] = iter(())
        self._call: IDelayedCall | None = None
        self._inflight: Deferred[None] | None = None

    def start(self, delays: Iterator[float]) -> None:
        """Check after each of ``delays`` in turn (the first from now, then from each start)."""
        self._delays = delays
        self._schedule(next(delays), LoopState.WAITING)

    def stop(self) -> None:
        """Stop checking, cancelling the check under way; leaves no delayed call behind."""
        self.state = LoopState.STOPPED
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._inflight is not None:
            self._inflight.cancel()

    def _stopped(self) -> bool:
        """Whether :meth:`stop` was called (a method, so mypy does not narrow the state)."""
        return self.state is LoopState.STOPPED

    def _schedule(self, delay: float, state: LoopState) -> None:
        self.state = state
        self._call = self._clock.callLater(max(delay, 0.0), self._tick)

    def _tick(self) -> None:
        """Start one check; what follows it is :meth:`_settled`'s job."""
        self._call = None
        self.state = LoopState.CHECKING
        try:
            started = self._clock.seconds()
        except Exception:
            self._bug(Failure())
            return
        checking = Deferred.fromCoroutine(self._run(started))
        if not checking.called:
            self._inflight = checking

    async def _run(self, started: float) -> None:
        """Run the check, count its result, schedule what comes next; never raises."""
        try:
            result = await self._check()
        except (CancelledError, ConnectingCancelledError):
            return  # stop() cancelled the check under way
        except Exception:
            self._bug(Failure())
            return
        finally:
            self._inflight = None
        if self.state is LoopState.STOPPED:
            return
        try:
            self._count(result)
            if self._bugs:
                self._bugs = 0
                self._recovered()
            if self._stopped():
                return  # counting told a subscriber, which stopped the checker
            delay = next(self._delays) - (self._clock.seconds() - started)
            self._schedule(delay, LoopState.WAITING)
        except Exception:
            self._bug(Failure())

    def _bug(self, failure: Failure) -> None:
        """Report a bug and try again after a backoff that grows with bugs in a row."""
        if self.state is LoopState.STOPPED:
            return
        self._bugs += 1
        retry_in = self._backoff(self._bugs)
        try:
            self._crashed(failure, retry_in)
        finally:
            self._schedule(retry_in, LoopState.BACKING_OFF)
