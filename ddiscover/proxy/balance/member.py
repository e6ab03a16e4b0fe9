"""One server of a pool as the balancing algorithms see it, and what they all offer.

A :class:`Member` is mutable on purpose: it is the per-server state the hot path reads
(current sessions, effective weight, whether it may be chosen), updated in place by the
:class:`~ddiscover.proxy.balance.pool.Pool` when health, admin state, weight or sessions
change, so that a pick never recomputes it.  Members compare by identity.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

import attrs

from ddiscover.catalog import Address, Backend


@attrs.frozen
class ServerSpec:
    """A server as the registry and the policy describe it: which backend, its weight, its role.

    ``weight`` 0 takes no balanced traffic (haproxy's meaning); a ``backup`` server takes
    traffic only when no other server is UP.
    """

    backend: Backend
    weight: int = attrs.field(default=1, validator=attrs.validators.in_(range(257)))
    backup: bool = False


@attrs.define(eq=False)
class Member:
    """One server's live state in a pool.

    ``order`` is its rank among the pool's servers sorted by backend, the tie-breaker that
    makes every algorithm deterministic.  ``throttle`` is the slow-start percentage (100 when
    not ramping), so ``units``, the effective weight, is ``weight * throttle / 100``.
    ``routable`` says whether the algorithm may choose it now.  ``was_up`` records that it has
    been UP before, so that coming back UP (and only that) starts a slow start.
    """

    backend: Backend
    weight: int
    backup: bool
    order: int
    up: bool = False
    held: bool = False
    sessions: int = 0
    throttle: int = 100
    ramp_start: float | None = None
    was_up: bool = False
    routable: bool = False

    @property
    def address(self) -> Address:
        return self.backend.address

    @property
    def units(self) -> float:
        """The effective weight: the configured weight, ramped by slow start."""
        return self.weight * self.throttle / 100

    @property
    def load(self) -> float:
        """Sessions relative to weight, counting the next one: haproxy's leastconn key."""
        return (self.sessions + 1) / self.units


class Algorithm(Protocol):
    """A balancing algorithm over the routable members of a pool.

    The pool tells it which members become routable or stop being (``join``/``leave``), whose
    effective weight (``reweight``) or session count (``loaded``) changed, and the whole
    member list when the service's servers change (``rebuild``).  ``pick`` chooses among the
    routable members whose address is not in ``exclude``; ``client`` is the client's IP.
    """

    def rebuild(self, members: Sequence[Member]) -> None: ...

    def join(self, member: Member) -> None: ...

    def leave(self, member: Member) -> None: ...

    def reweight(self, member: Member) -> None: ...

    def loaded(self, member: Member) -> None: ...

    def pick(self, client: str, exclude: Collection[Address]) -> Member | None: ...
