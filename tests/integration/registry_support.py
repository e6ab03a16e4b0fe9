"""Shared by the registry integration tests: a recorder of published catalogs to wait on."""

from __future__ import annotations

import time
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed

from ddiscover.catalog import Catalog


class Published:
    """Records every published catalog, with the monotonic time it arrived."""

    def __init__(self) -> None:
        self.catalogs: list[tuple[float, Catalog]] = []
        self._waiters: list[tuple[Callable[[Catalog], bool], Deferred[Catalog]]] = []

    def __call__(self, catalog: Catalog) -> None:
        self.catalogs.append((time.monotonic(), catalog))
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(catalog):
                self._waiters.remove(waiter)
                d.callback(catalog)

    def until(self, predicate: Callable[[Catalog], bool]) -> Deferred[Catalog]:
        """Fire with the first catalog, the current one included, for which ``predicate`` holds."""
        if self.catalogs and predicate(self.catalogs[-1][1]):
            return succeed(self.catalogs[-1][1])
        d: Deferred[Catalog] = Deferred()
        self._waiters.append((predicate, d))
        return d


def backends_of(catalog: Catalog, service: str) -> set[str]:
    """The ids of a service's backends (empty if the service is absent)."""
    found = catalog.services.get(service)
    return {b.id for b in found.backends} if found else set()
