"""A min-heap of members keyed by tuples, with re-keying and removal in O(log n).

``heapq`` (in C) does the work; a member's old entry is left in place and marked stale when
it is re-keyed or removed, skipped when it reaches the top, and the heap is compacted when
stale entries outnumber live ones, so memory stays within twice the live size.  Each entry
carries a running number before the member, so two entries never compare members.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection
from itertools import count

from ddiscover.catalog import Address
from ddiscover.proxy.balance.member import Member


class MemberHeap:
    """Members ordered by a key; the smallest key is chosen first."""

    def __init__(self) -> None:
        self._heap: list[list[object]] = []
        self._entries: dict[Member, list[object]] = {}
        self._count = count()

    def __len__(self) -> int:
        return len(self._entries)

    def lead(self, member: Member) -> object:
        """The first element of ``member``'s key, without building the whole key."""
        return self._entries[member][0]

    def set(self, member: Member, key: tuple[object, ...]) -> None:
        """Insert ``member`` under ``key``, or move it there."""
        old = self._entries.get(member)
        if old is not None and self._heap and self._heap[0] is old:
            # The usual case right after a pick: re-key the top entry in place.
            old[: len(key)] = key
            heapq.heapreplace(self._heap, old)
            return
        entry: list[object] = [*key, next(self._count), member]
        self._entries[member] = entry
        if old is not None:
            old[-1] = None
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 2 * len(self._entries) + 16:
            self._heap = [e for e in self._heap if e[-1] is not None]
            heapq.heapify(self._heap)

    def discard(self, member: Member) -> None:
        """Remove ``member`` if it is held."""
        old = self._entries.pop(member, None)
        if old is not None:
            old[-1] = None

    def first(self, exclude: Collection[Address] = ()) -> Member | None:
        """The member with the smallest key whose address is not in ``exclude``."""
        heap = self._heap
        skipped: list[list[object]] = []
        found: Member | None = None
        while heap:
            member = heap[0][-1]
            if member is None:
                heapq.heappop(heap)
            elif exclude and member.address in exclude:  # type: ignore[attr-defined]
                skipped.append(heapq.heappop(heap))
            else:
                assert isinstance(member, Member)
                found = member
                break
        for entry in skipped:
            heapq.heappush(heap, entry)
        return found
