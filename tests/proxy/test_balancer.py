"""Tests for :mod:`ddiscover.proxy.balancer`."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.proxy.balancer import Admin, Balancer
from tests.proxy import FakeHealth, backend

A, B, C, D = (backend(name, 8000 + i) for i, name in enumerate("abcd"))


def picks(balancer: Balancer, count: int) -> list[str | None]:
    """The ids of the next ``count`` choices."""
    return [chosen.id if (chosen := balancer.choose()) else None for _ in range(count)]


class BalancerTests(SynchronousTestCase):
    """Round-robin over the UP backends of one service."""

    def setUp(self) -> None:
        self.health = FakeHealth(b.address for b in (A, B, C))
        self.balancer = Balancer(self.health)

    def test_empty(self) -> None:
        """With no backends there is nothing to choose."""
        self.assertIsNone(self.balancer.choose())
        self.assertEqual(self.balancer.up_count(), 0)

    def test_round_robin_in_sorted_order(self) -> None:
        """Backends take turns in sorted order, whatever order the set had."""
        self.balancer.update(frozenset({C, A, B}))
        self.assertEqual(picks(self.balancer, 7), list("abcabca"))
        self.assertEqual(self.balancer.backends, (A, B, C))

    def test_skips_down(self) -> None:
        """A DOWN backend is skipped, and health is read at every pick."""
        self.balancer.update(frozenset({A, B, C}))
        self.health.up.discard(B.address)
        self.assertEqual(picks(self.balancer, 4), list("acac"))
        self.assertEqual(self.balancer.up_count(), 2)
        self.health.up.add(B.address)
        self.assertEqual(picks(self.balancer, 3), list("abc"))

    def test_all_down(self) -> None:
        """With every backend DOWN, choose returns None."""
        self.balancer.update(frozenset({A, B}))
        self.health.up.clear()
        self.assertIsNone(self.balancer.choose())
        self.assertEqual(self.balancer.up_count(), 0)

    def test_exclude(self) -> None:
        """Excluded addresses are skipped; excluding every UP backend leaves nothing."""
        self.balancer.update(frozenset({A, B, C}))
        self.assertEqual(self.balancer.choose(exclude={A.address}), B)
        self.assertEqual(self.balancer.choose(exclude={C.address}), A)
        self.assertIsNone(self.balancer.choose(exclude={A.address, B.address, C.address}))
        self.assertEqual(self.balancer.choose(), B)

    def test_update_resumes_after_last_pick(self) -> None:
        """After an update, the rotation continues after the backend picked last."""
        self.balancer.update(frozenset({A, B, C}))
        self.assertEqual(picks(self.balancer, 2), list("ab"))
        self.balancer.update(frozenset({A, B, C, D}))
        self.health.up.add(D.address)
        self.assertEqual(picks(self.balancer, 3), list("cda"))

    def test_update_removing_last_pick(self) -> None:
        """When the backend picked last is removed, its successor in order comes next."""
        self.balancer.update(frozenset({A, B, C}))
        self.assertEqual(picks(self.balancer, 2), list("ab"))
        self.balancer.update(frozenset({A, C}))
        self.assertEqual(picks(self.balancer, 3), list("cac"))

    def test_update_twice_without_picks(self) -> None:
        """Several updates in a row keep the position of the last actual pick."""
        self.balancer.update(frozenset({A, B, C}))
        self.assertEqual(picks(self.balancer, 2), list("ab"))
        self.balancer.update(frozenset({A, C}))
        self.balancer.update(frozenset({A, B, C}))
        self.assertEqual(picks(self.balancer, 2), list("ca"))

    def test_same_set_keeps_position(self) -> None:
        """Re-applying the same backends changes nothing."""
        self.balancer.update(frozenset({A, B, C}))
        self.assertEqual(picks(self.balancer, 1), ["a"])
        self.balancer.update(frozenset({A, B, C}))
        self.assertEqual(picks(self.balancer, 3), list("bca"))

    def test_update_to_empty_and_back(self) -> None:
        """Emptying the set and refilling it resumes after the last pick."""
        self.balancer.update(frozenset({A, B, C}))
        self.assertEqual(picks(self.balancer, 1), ["a"])
        self.balancer.update(frozenset())
        self.assertIsNone(self.balancer.choose())
        self.balancer.update(frozenset({A, B, C}))
        self.assertEqual(picks(self.balancer, 1), ["b"])


class AdminStateTests(SynchronousTestCase):
    """Drained and disabled backends are skipped; health still decides for the rest."""

    def setUp(self) -> None:
        self.balancer = Balancer(FakeHealth(b.address for b in (A, B, C)))
        self.balancer.update(frozenset({A, B, C}))

    def test_held_backends_skipped(self) -> None:
        """DRAIN and MAINT backends get no new connections; READY brings one back."""
        self.balancer.set_admin(A, Admin.DRAIN)
        self.balancer.set_admin(C, Admin.MAINT)
        self.assertEqual(picks(self.balancer, 3), list("bbb"))
        self.assertEqual(self.balancer.available(), 1)
        self.assertEqual(self.balancer.up_count(), 3)
        self.balancer.set_admin(A, Admin.READY)
        self.assertEqual(picks(self.balancer, 2), list("ab"))
        self.assertEqual(
            [self.balancer.admin(b) for b in (A, B, C)], [Admin.READY, Admin.READY, Admin.MAINT]
        )

    def test_all_held_means_no_server(self) -> None:
        """With every backend held, there is nothing to choose."""
        for b in (A, B, C):
            self.balancer.set_admin(b, Admin.DRAIN)
        self.assertIsNone(self.balancer.choose())

    def test_state_lasts_while_registered(self) -> None:
        """The state survives updates that keep the backend, and goes with it."""
        self.balancer.set_admin(A, Admin.MAINT)
        self.balancer.update(frozenset({A, B}))
        self.assertIs(self.balancer.admin(A), Admin.MAINT)
        self.balancer.update(frozenset({B}))
        self.balancer.update(frozenset({A, B}))
        self.assertIs(self.balancer.admin(A), Admin.READY)
        self.balancer.set_admin(D, Admin.DRAIN)
        self.assertIs(self.balancer.admin(D), Admin.READY)
