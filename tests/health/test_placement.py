"""Tests for :mod:`ddiscover.health.placement`: the address index and UP counts."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Address, Backend, Catalog, Service
from ddiscover.health.placement import Moves, Placement

A = Address("10.0.0.1", 80)
B = Address("10.0.0.2", 80)


def service(name: str, port: int, *backends: tuple[str, Address]) -> Service:
    return Service(name, port, frozenset(Backend(i, a) for i, a in backends))


def catalog(*services: Service) -> Catalog:
    by_name: Any = {s.name: s for s in services}
    return Catalog(by_name)


class CountingPlacement(Placement):
    """Counts the backends each update looks at."""

    looked_at = 0

    def _move(
        self, name: str, before: frozenset[Backend], after: frozenset[Backend], *rest: Any
    ) -> None:
        self.looked_at += len(before) + len(after)
        super()._move(name, before, after, *rest)


class PlacementTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.up: set[Address] = set()

    def test_uses_and_moves(self) -> None:
        """Addresses come in once, shared ones are listed per service, and leave when unused."""
        placement = Placement()
        web = service("web", 1, ("w1", A), ("w2", A))
        api = service("api", 2, ("a1", A), ("a2", B))
        self.assertEqual(
            placement.update(catalog(web, api), self.up.__contains__),
            Moves(frozenset({A, B}), frozenset()),
        )
        self.assertEqual(placement.uses(A), [("api", ["a1"]), ("web", ["w1", "w2"])])
        moves = placement.update(catalog(web), self.up.__contains__)
        self.assertEqual(moves, Moves(frozenset(), frozenset({B})))
        self.assertEqual((placement.uses(A), B in placement), ([("web", ["w1", "w2"])], False))

    def test_active_counts(self) -> None:
        """UP counts follow changes at an address and catalog changes of UP addresses."""
        placement = Placement()
        web = service("web", 1, ("w1", A), ("w2", A), ("w3", B))
        placement.update(catalog(web), self.up.__contains__)
        self.up.add(A)
        placement.changed(A, up=True)
        self.assertEqual(placement.active("web"), 2)
        placement.update(catalog(service("web", 1, ("w1", A), ("w3", B))), self.up.__contains__)
        self.assertEqual(placement.active("web"), 1)
        self.up.discard(A)
        placement.changed(A, up=False)
        self.assertEqual(placement.active("web"), 0)

    def test_work_proportional_to_the_change(self) -> None:
        """With 1,000 services, changing one looks only at that service's backends."""
        services = [
            service(
                f"s{n}",
                1000 + n,
                *((f"b{i}", Address("10.2.0.1", 1 + n * 10 + i)) for i in range(5)),
            )
            for n in range(1000)
        ]
        placement = CountingPlacement()
        placement.update(catalog(*services), self.up.__contains__)
        self.assertEqual(placement.looked_at, 5000)
        placement.looked_at = 0
        changed = attrs.evolve(
            services[7], backends=services[7].backends | {Backend("new", Address("10.2.0.2", 1))}
        )
        moves = placement.update(
            catalog(*services[:7], changed, *services[8:]), self.up.__contains__
        )
        self.assertEqual(placement.looked_at, 11)
        self.assertEqual(moves.added, frozenset({Address("10.2.0.2", 1)}))
