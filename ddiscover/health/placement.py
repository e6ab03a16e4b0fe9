"""Where each checked address is used: the (service, backend ids) behind it, and UP counts.

The checker logs an UP/DOWN change once per service and backend id at the address, with the
number of the service's backends still UP.  This index answers both in time proportional to
the services at the address, and is updated in time proportional to the catalog change: a
service whose value is the same object in the next catalog (the watcher preserves identity)
is not looked at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs

from ddiscover.catalog import Address, Backend, Catalog, Service


@attrs.frozen
class Moves:
    """The addresses a catalog change brought in and the ones it left unused."""

    added: frozenset[Address]
    removed: frozenset[Address]


class Placement:
    """Address -> {service: backend ids}, and per service the number of backends UP."""

    def __init__(self) -> None:
        self.catalog = Catalog()
        self._by_address: dict[Address, dict[str, set[str]]] = {}
        self._active: dict[str, int] = {}

    def __contains__(self, address: Address) -> bool:
        return address in self._by_address

    def addresses(self) -> Iterator[Address]:
        """Every address some backend uses."""
        return iter(self._by_address)

    def update(self, catalog: Catalog, is_up: Callable[[Address], bool]) -> Moves:
        """Follow ``catalog``, looking only at services that are not the same object as before."""
        old, self.catalog = self.catalog, catalog
        present_before: dict[Address, bool] = {}
        for name in old.services.keys() - catalog.services.keys():
            self._move(name, old.services[name].backends, frozenset(), is_up, present_before)
            del self._active[name]
        for name, service in catalog.services.items():
            previous = old.services.get(name)
            if previous is service:
                continue
            before = previous.backends if previous is not None else frozenset()
            self._active.setdefault(name, 0)
            self._move(name, before, service.backends, is_up, present_before)
        added = frozenset(a for a, was in present_before.items() if not was and a in self)
        removed = frozenset(a for a, was in present_before.items() if was and a not in self)
        return Moves(added, removed)

    def uses(self, address: Address) -> list[tuple[str, list[str]]]:
        """The services at ``address`` and their backend ids there, sorted."""
        services = self._by_address.get(address, {})
        return [(name, sorted(ids)) for name, ids in sorted(services.items())]

    def active(self, service: str) -> int:
        """How many backends of ``service`` are UP."""
        return self._active.get(service, 0)

    def service(self, name: str) -> Service | None:
        """The catalog's service ``name``, if any."""
        return self.catalog.services.get(name)

    def changed(self, address: Address, up: bool) -> None:
        """Count the backends at ``address`` as having just gone UP (or DOWN)."""
        step = 1 if up else -1
        for name, ids in self._by_address.get(address, {}).items():
            self._active[name] += step * len(ids)

    def _move(
        self,
        name: str,
        before: frozenset[Backend],
        after: frozenset[Backend],
        is_up: Callable[[Address], bool],
        present_before: dict[Address, bool],
    ) -> None:
        for backend in before - after:
            address = backend.address
            present_before.setdefault(address, True)
            services = self._by_address[address]
            services[name].discard(backend.id)
            if not services[name]:
                del services[name]
            if not services:
                del self._by_address[address]
            if is_up(address):
                self._active[name] -= 1
        for backend in after - before:
            address = backend.address
            present_before.setdefault(address, address in self._by_address)
            self._by_address.setdefault(address, {}).setdefault(name, set()).add(backend.id)
            if is_up(address):
                self._active[name] += 1
