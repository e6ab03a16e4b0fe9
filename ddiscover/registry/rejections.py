"""Logging the registry keys the layout rejects: once each, and only if they persist.

A registrar writes a service's keys one by one, so a key can be rejected for a moment (a
backend before its port key: "no port key") and fine an instant later.  A new rejection is
logged at debug at once and at error only if it is still there ``grace`` seconds later; it is
logged again if it goes away and comes back.
"""

from __future__ import annotations

from collections.abc import Set

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ddiscover._log import make_logger
from ddiscover.catalog import Rejection
from ddiscover.text import CLIP, clip

log = make_logger()

IGNORING = "ignoring {key}: {reason}"


def _order(rejection: Rejection) -> tuple[str, str]:
    return (rejection.key, rejection.reason)


class RejectionLog:
    """Logs each rejection once it has persisted for ``grace`` seconds (on ``clock``)."""

    def __init__(self, clock: IReactorTime, grace: float) -> None:
        self._clock = clock
        self._grace = grace
        self._current: Set[Rejection] = frozenset()
        self._pending: dict[Rejection, float] = {}
        self._reported: set[Rejection] = set()
        self._call: IDelayedCall | None = None

    def update(self, current: Set[Rejection]) -> None:
        """Note the rejections in force now."""
        if current is self._current:
            return
        self._current = current
        self._reported &= current
        for gone in [r for r in self._pending if r not in current]:
            del self._pending[gone]
            log.debug("{key} is fine now", key=clip(gone.key))
        now = self._clock.seconds()
        for rejection in sorted(current - self._reported - self._pending.keys(), key=_order):
            if self._grace <= 0:
                self._log(rejection)
                continue
            log.debug(
                "{key} rejected for now ({reason}); logged if it persists",
                key=clip(rejection.key),
                reason=clip(rejection.reason, 4 * CLIP),
            )
            self._pending[rejection] = now
        self._schedule()

    def stop(self) -> None:
        """Cancel the pending check."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _log(self, rejection: Rejection) -> None:
        self._reported.add(rejection)
        # Reasons quote values already cut to CLIP characters; this is only a backstop.
        log.error(IGNORING, key=clip(rejection.key), reason=clip(rejection.reason, 4 * CLIP))

    def _schedule(self) -> None:
        if self._call is None and self._pending:
            due = min(self._pending.values()) + self._grace
            self._call = self._clock.callLater(max(0.0, due - self._clock.seconds()), self._check)

    def _check(self) -> None:
        self._call = None
        now = self._clock.seconds()
        due = [r for r, since in self._pending.items() if now - since >= self._grace]
        for rejection in sorted(due, key=_order):
            del self._pending[rejection]
            self._log(rejection)
        self._schedule()
