"""Source hashing: the same client IP goes to the same server, consistently.

Every server owns points on a hash ring (160 per unit of weight, as ketama does, cut down in
proportion when the ring would pass :data:`MAX_POINTS`), placed by hashing its registry id,
so every ddiscover host builds the same ring and sends a given client to the same server.  A
client's IP is hashed onto the ring and goes to the owner of the next point clockwise that may
be chosen now; a server that is DOWN (or excluded for a redispatch) is simply walked past, so
its clients spread over the others and come back when it does, and nobody else moves.  Adding
or removing a server moves only the clients between its points and their predecessors: about
``1/N`` of them.  This is haproxy's ``hash-type consistent`` and Envoy's ring hash; the hash is
BLAKE2b, identical on every host and Python (unlike ``hash()``).

Slow start does not apply: ramping a server's points would move clients back and forth
during the ramp, against what ``source`` is for.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Collection, Sequence

from ddiscover.catalog import Address
from ddiscover.proxy.balance.member import Member

POINTS_PER_WEIGHT = 160
MAX_POINTS = 1 << 16


def key_hash(text: str) -> int:
    """The 64-bit ring position of ``text``."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _points(identity: str, count: int) -> list[int]:
    """``count`` ring positions for a server, eight from each 64-byte BLAKE2b digest."""
    points: list[int] = []
    block = 0
    while len(points) < count:
        digest = hashlib.blake2b(f"{identity}#{block}".encode(), digest_size=64).digest()
        points.extend(int.from_bytes(digest[i : i + 8], "big") for i in range(0, 64, 8))
        block += 1
    return points[:count]


class SourceHash:
    """Consistent hashing of the client IP over the servers' registry ids."""

    def __init__(self) -> None:
        self._shape: tuple[tuple[str, int], ...] = ()
        self._positions: list[int] = []
        self._owners: list[Member] = []

    def rebuild(self, members: Sequence[Member]) -> None:
        """Place every server of the service on the ring, whatever its state."""
        shape = tuple((m.backend.id, m.weight) for m in members)
        if shape == self._shape:
            # The same servers: keep the ring, but point it at the current members.
            by_id = {m.backend.id: m for m in members}
            self._owners = [by_id[owner.backend.id] for owner in self._owners]
            return
        self._shape = shape
        total = POINTS_PER_WEIGHT * sum(m.weight for m in members)
        scale = min(1.0, MAX_POINTS / total) if total else 1.0
        ring: list[tuple[int, int, int, Member]] = []
        for member in members:
            if member.weight:
                count = max(1, round(POINTS_PER_WEIGHT * member.weight * scale))
                points = _points(member.backend.id, count)
                ring.extend((point, member.order, k, member) for k, point in enumerate(points))
        ring.sort()
        self._positions = [entry[0] for entry in ring]
        self._owners = [entry[3] for entry in ring]

    def join(self, member: Member) -> None:
        """Routable members are found by walking the ring."""

    def leave(self, member: Member) -> None:
        """Members that are not routable are walked past."""

    def reweight(self, member: Member) -> None:
        """Slow start does not move points (see the module docstring)."""

    def loaded(self, member: Member) -> None:
        """Sessions do not matter to a hash."""

    def pick(self, client: str, exclude: Collection[Address]) -> Member | None:
        owners = self._owners
        if not owners:
            return None
        start = bisect.bisect_right(self._positions, key_hash(client))
        for step in range(len(owners)):
            member = owners[(start + step) % len(owners)]
            if member.routable and not (exclude and member.address in exclude):
                return member
        return None
