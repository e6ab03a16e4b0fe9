"""Round-robin over the backends of one service that the health checker says are UP.

Health is consulted at pick time and never cached, so a backend that goes DOWN stops getting
connections from the next pick on.  The backends are kept sorted so the rotation order does
not depend on the order etcd listed them in, and a catalog update resumes the rotation after
the backend picked last instead of starting over (which would pile the first connections after
every update onto the first backend).

An operator can take a backend out of the rotation (``DRAIN`` or ``MAINT``, haproxy's admin
states) without touching etcd; open connections to it are left to finish either way.  The
admin state lasts as long as the backend stays in the service.
"""

from __future__ import annotations

import enum
from bisect import bisect_right
from collections.abc import Callable, Collection
from typing import Protocol

from ddiscover.catalog import Address, Backend
from ddiscover.health.result import CheckResult
from ddiscover.health.state import HealthRecord

HealthSubscriber = Callable[[Address, HealthRecord, HealthRecord], None]
"""Called with ``(address, old, new)`` when an address's health changes."""


class HealthView(Protocol):
    """What the proxy needs of the health checker."""

    def is_up(self, address: Address) -> bool:
        """Whether ``address`` may receive new connections now."""

    def is_pending(self, address: Address) -> bool:
        """Whether ``address`` is new to the catalog and waits for its first check."""

    def subscribe(self, callback: HealthSubscriber) -> None:
        """Call ``callback`` on every change of health (UP<->DOWN, and first results)."""

    def report(self, address: Address, result: CheckResult) -> None:
        """Count a failed proxied connect to ``address`` like a failed health check."""


class Admin(enum.Enum):
    """A backend's admin state, as haproxy names it; only ``READY`` backends are chosen."""

    READY = "READY"
    DRAIN = "DRAIN"
    MAINT = "MAINT"


class Balancer:
    """Round-robin choice among one service's UP backends whose admin state is ``READY``."""

    def __init__(self, health: HealthView) -> None:
        self._health = health
        self._backends: tuple[Backend, ...] = ()
        self._next = 0
        self._last: Backend | None = None
        self._held: dict[Backend, Admin] = {}

    @property
    def backends(self) -> tuple[Backend, ...]:
        """Every backend of the service, UP or not, in rotation order."""
        return self._backends

    def update(self, backends: frozenset[Backend]) -> None:
        """Replace the backend set, keeping the rotation where it was.

        The next pick is the first backend that sorts after the one picked last, whether or
        not that one is still present.
        """
        ordered = tuple(sorted(backends))
        if ordered and self._last is not None:
            self._next = bisect_right(ordered, self._last) % len(ordered)
        else:
            self._next = 0
        self._backends = ordered
        self._held = {b: admin for b, admin in self._held.items() if b in backends}

    def admin(self, backend: Backend) -> Admin:
        """The admin state of ``backend``."""
        return self._held.get(backend, Admin.READY)

    def set_admin(self, backend: Backend, admin: Admin) -> None:
        """Set the admin state of one of the backends; others are ignored."""
        if admin is Admin.READY:
            self._held.pop(backend, None)
        elif backend in self._backends:
            self._held[backend] = admin

    def choose(self, exclude: Collection[Address] = ()) -> Backend | None:
        """The next UP, READY backend in turn whose address is not in ``exclude``, or ``None``."""
        backends = self._backends
        held = self._held
        count = len(backends)
        for step in range(count):
            index = (self._next + step) % count
            backend = backends[index]
            if (
                backend.address in exclude
                or (held and backend in held)
                or not self._health.is_up(backend.address)
            ):
                continue
            self._next = (index + 1) % count
            self._last = backend
            return backend
        return None

    def available(self) -> int:
        """How many backends may be chosen now: UP and READY."""
        held, health = self._held, self._health
        return sum(1 for b in self._backends if b not in held and health.is_up(b.address))

    def pending(self) -> bool:
        """Whether a READY backend still waits for its first check, so may soon be UP."""
        held, health = self._held, self._health
        return any(b not in held and health.is_pending(b.address) for b in self._backends)

    def up_count(self) -> int:
        """How many of the backends are UP now."""
        return sum(1 for backend in self._backends if self._health.is_up(backend.address))
