"""Least connections, weighted, ties in round-robin: O(log n) per pick and per session change.

The server chosen is the one whose load after taking the connection, ``(sessions + 1) /
weight``, is lowest, as haproxy's ``leastconn`` computes it: so idle servers fill in
proportion to their weights, and a server holding long sessions is avoided until the others
catch up.  Among servers with the same load the one picked least recently goes first, which
is round-robin among equals.  Suited to long sessions (databases, WebSockets); a per-host
proxy sees only its own connections, as the fabio maintainers point out, but that is enough
to even out this host's share.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from ddiscover.catalog import Address
from ddiscover.proxy.balance.heap import MemberHeap
from ddiscover.proxy.balance.member import Member


class LeastConn:
    """Weighted least connections; see the module docstring."""

    def __init__(self) -> None:
        self._loads = MemberHeap()
        self._last: dict[Member, int] = {}
        self._picks = 0

    def rebuild(self, members: Sequence[Member]) -> None:
        """Nothing to do: members come and go through join and leave."""

    def _key(self, member: Member) -> tuple[object, ...]:
        return (member.load, self._last.get(member, 0), member.order)

    def join(self, member: Member) -> None:
        self._loads.set(member, self._key(member))

    def leave(self, member: Member) -> None:
        self._loads.discard(member)
        self._last.pop(member, None)

    def reweight(self, member: Member) -> None:
        self._loads.set(member, self._key(member))

    loaded = reweight

    def pick(self, client: str, exclude: Collection[Address]) -> Member | None:
        """The least loaded member; the pool's ``loaded`` call that follows re-keys it."""
        member = self._loads.first(exclude)
        if member is not None:
            self._picks += 1
            self._last[member] = self._picks
        return member
