"""Power of two choices: draw two servers at random by weight, take the less loaded one.

haproxy's ``random(2)`` and Envoy's least-request: two distinct servers are drawn, each with
probability proportional to its effective weight, and the one with fewer sessions per unit of
weight wins, the first drawn on a tie (haproxy compares ``served / weight`` the same way), so
idle servers are chosen in proportion to their weights and busy ones hold sessions in that
proportion.  It spreads load almost as evenly as least
connections while never sending every new connection to the same momentarily idlest server,
which is what herds a fleet of proxies that each see only their own connections.

Draws by weight go through a Fenwick tree of integer weights (``weight * throttle``), so a
draw and a weight change are both O(log n).  The random source is injected.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Collection, Sequence
from itertools import accumulate

from ddiscover.catalog import Address
from ddiscover.proxy.balance.member import Member


class _Fenwick:
    """Prefix sums of integer weights over slots, updated and searched in O(log n)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.total = 0
        self._tree = [0] * (size + 1)

    def add(self, slot: int, delta: int) -> None:
        self.total += delta
        index = slot + 1
        while index <= self.size:
            self._tree[index] += delta
            index += index & -index

    def find(self, target: int) -> int:
        """The slot whose weight covers ``target`` (``0 <= target < total``)."""
        position = 0
        step = 1 << self.size.bit_length()
        while step:
            following = position + step
            if following <= self.size and self._tree[following] <= target:
                position = following
                target -= self._tree[following]
            step >>= 1
        return position


def _lighter(first: Member, second: Member) -> Member:
    """The one of two drawn members with fewer sessions per unit of weight; the first on a tie."""
    if second.sessions * first.units < first.sessions * second.units:
        return second
    return first


def _weight(member: Member) -> int:
    return member.weight * member.throttle


class TwoChoices:
    """Random with two draws; see the module docstring."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._tree = _Fenwick(8)
        self._slots: list[Member | None] = [None] * 8
        self._slot_of: dict[Member, tuple[int, int]] = {}
        self._free = list(range(7, -1, -1))

    def rebuild(self, members: Sequence[Member]) -> None:
        """Nothing to do: members come and go through join and leave."""

    def join(self, member: Member) -> None:
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._slots[slot] = member
        self._slot_of[member] = (slot, _weight(member))
        self._tree.add(slot, _weight(member))

    def _grow(self) -> None:
        """Double the slots, rebuilding the tree (amortised O(1) per join)."""
        size = self._tree.size * 2
        tree = _Fenwick(size)
        for slot, weight in self._slot_of.values():
            tree.add(slot, weight)
        self._slots.extend([None] * (size - len(self._slots)))
        self._free = list(range(size - 1, self._tree.size - 1, -1))
        self._tree = tree

    def leave(self, member: Member) -> None:
        found = self._slot_of.pop(member, None)
        if found is not None:
            slot, weight = found
            self._tree.add(slot, -weight)
            self._slots[slot] = None
            self._free.append(slot)

    def reweight(self, member: Member) -> None:
        found = self._slot_of.get(member)
        if found is not None:
            slot, weight = found
            self._slot_of[member] = (slot, _weight(member))
            self._tree.add(slot, _weight(member) - weight)

    def loaded(self, member: Member) -> None:
        """Sessions are read at pick time."""

    def _draw(self) -> Member:
        member = self._slots[self._tree.find(self._rng.randrange(self._tree.total))]
        assert member is not None
        return member

    def pick(self, client: str, exclude: Collection[Address]) -> Member | None:
        if exclude:
            return self._pick_among([m for m in self._slot_of if m.address not in exclude])
        if self._tree.total == 0:
            return None
        first = self._draw()
        if len(self._slot_of) == 1:
            return first
        slot, weight = self._slot_of[first]
        self._tree.add(slot, -weight)
        try:
            second = self._draw()
        finally:
            self._tree.add(slot, weight)
        return _lighter(first, second)

    def _pick_among(self, members: list[Member]) -> Member | None:
        """The same choice among a few members, in O(n): used for redispatches only."""
        if len(members) <= 1:
            return members[0] if members else None
        members.sort(key=lambda m: m.order)
        cumulative = list(accumulate(_weight(m) for m in members))
        first = bisect.bisect_right(cumulative, self._rng.randrange(cumulative[-1]))
        rest = members[:first] + members[first + 1 :]
        cumulative = list(accumulate(_weight(m) for m in rest))
        second = rest[bisect.bisect_right(cumulative, self._rng.randrange(cumulative[-1]))]
        return _lighter(members[first], second)
