"""The member heap: re-keying, removal, exclusion, and bounded memory."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.proxy.balance.heap import MemberHeap
from ddiscover.proxy.balance.member import Member
from tests.proxy.balance.support import backend


def _member(name: str, order: int) -> Member:
    return Member(backend(name), 1, False, order)


class MemberHeapTests(SynchronousTestCase):
    """The smallest key first, whatever was re-keyed or removed before."""

    def test_order_and_rekey(self) -> None:
        """Re-keying moves a member; removal drops it; exclusion skips without losing it."""
        heap = MemberHeap()
        a, b, c = _member("a", 0), _member("b", 1), _member("c", 2)
        for member, key in ((a, 3), (b, 1), (c, 2)):
            heap.set(member, (key,))
        self.assertIs(heap.first(), b)
        heap.set(b, (5,))
        self.assertIs(heap.first(), c)
        self.assertIs(heap.first(exclude={c.address}), a)
        self.assertIs(heap.first(), c)
        heap.discard(c)
        heap.discard(c)
        self.assertEqual((heap.first(), len(heap), heap.lead(b)), (a, 2, 5))

    def test_memory_bounded(self) -> None:
        """Stale entries are compacted away, so the heap stays near its live size."""
        heap = MemberHeap()
        members = [_member(f"m{i}", i) for i in range(10)]
        for step in range(10_000):
            heap.set(members[step % 10], (step % 7, step))
        self.assertLessEqual(len(heap._heap), 2 * len(heap) + 17)
        self.assertEqual(len(heap), 10)
