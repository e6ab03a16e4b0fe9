"""The catalog: immutable values describing which services exist, their port and backends.

The registry builds a new :class:`Catalog` on every change; listeners, the balancer and the
health checker reconcile against it.  Everything here compares by value and by sets, so the
order etcd lists keys in never matters and re-writing an unchanged key changes nothing.  The
registry also preserves identity: a service whose port and backends did not change is the
same :class:`Service` object in the next catalog, so consumers can skip it with ``is``.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs


def _valid_port(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 1 <= value <= 65535:
        raise ValueError(f"{attribute.name} {value} is not a TCP port (1-65535)")


@attrs.frozen(order=True, cache_hash=True)
class Address:
    """A ``host:port`` a backend accepts TCP connections on; health state is keyed by it."""

    host: str
    port: int = attrs.field(validator=_valid_port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@attrs.frozen(order=True, cache_hash=True)
class Backend:
    """One registered instance of a service: its registry id and where it listens."""

    id: str
    address: Address


@attrs.frozen
class Service:
    """A service ddiscover listens for on ``port`` and forwards to ``backends``."""

    name: str
    port: int = attrs.field(validator=_valid_port)
    backends: frozenset[Backend] = frozenset()

    def addresses(self) -> frozenset[Address]:
        """The distinct addresses of this service's backends."""
        return frozenset(b.address for b in self.backends)


@attrs.frozen
class Rejection:
    """A registry key (or whole service) that was ignored, and why, in one line."""

    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


def _services(services: Mapping[str, Service]) -> dict[str, Service]:
    return dict(services)


@attrs.frozen
class Catalog:
    """Every service that is listened for, plus what the registry held that could not be used."""

    services: Mapping[str, Service] = attrs.field(factory=dict, converter=_services)
    rejections: frozenset[Rejection] = frozenset()

    def addresses(self) -> frozenset[Address]:
        """Every backend address of every service, each once."""
        return frozenset(a for s in self.services.values() for a in s.addresses())


@attrs.frozen
class CatalogChange:
    """What differs between two catalogs, for logging and for reacting only to what moved."""

    added: frozenset[str]
    removed: frozenset[str]
    port_changed: frozenset[str]
    backends_added: Mapping[str, frozenset[Backend]]
    backends_removed: Mapping[str, frozenset[Backend]]


def diff(old: Catalog, new: Catalog) -> CatalogChange:
    """Compare two catalogs service by service, by sets; a service that is the same object in
    both is skipped at once, so a change costs O(services) plus the services that changed."""
    old_names, new_names = set(old.services), set(new.services)
    kept = old_names & new_names
    added_backends: dict[str, frozenset[Backend]] = {}
    removed_backends: dict[str, frozenset[Backend]] = {}
    for name in kept:
        if old.services[name] is new.services[name]:
            continue  # the registry keeps an unchanged service the same object
        before, after = old.services[name].backends, new.services[name].backends
        if after - before:
            added_backends[name] = after - before
        if before - after:
            removed_backends[name] = before - after
    return CatalogChange(
        added=frozenset(new_names - old_names),
        removed=frozenset(old_names - new_names),
        port_changed=frozenset(n for n in kept if old.services[n].port != new.services[n].port),
        backends_added=added_backends,
        backends_removed=removed_backends,
    )
