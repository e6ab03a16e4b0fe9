"""How docker-register lays services out in etcd, turned into a :class:`Catalog`.

Under the prefix, each service is a directory holding one ``port`` key (the port ddiscover
listens on) and one key per backend whose value is ``host:port``::

    /backends/web/port        80
    /backends/web/abc123      10.0.0.1:8080
    /backends/jwilder/whoami/port   8000      (a service name may contain "/")

A service of several ports lists them in its ``port`` key, and each backend lists its ports in
the same order; each listen port becomes a service of its own, named ``<service>:<port>``::

    /backends/app/port        80,443          services app:80 and app:443
    /backends/app/abc123      10.0.0.1:8080,8443

This module is pure: the same keys and the same previous catalog always give the same catalog.
A bad key is left out with a one-line :class:`~ddiscover.catalog.Rejection` and disturbs nothing
else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ddiscover.catalog import Backend, Catalog, Rejection, Service
from ddiscover.registry.key_values import (
    MAX_PORTS_PER_SERVICE,
    BadValueError,
    parse_address,
    parse_addresses,
    parse_port,
    parse_ports,
)
from ddiscover.text import clip

# The value parsers live in values.py; they are re-exported here, where callers found them.
__all__ = [
    "MAX_KEY_DEPTH",
    "MAX_PORTS_PER_SERVICE",
    "PORT_KEY",
    "BadValueError",
    "Entry",
    "Layout",
    "build_catalog",
    "normalise_prefix",
    "parse_address",
    "parse_addresses",
    "parse_port",
    "parse_ports",
    "part_name",
]

PORT_KEY = "port"

#: Levels below the prefix a key may have (a service name may contain "/"); deeper keys are
#: rejected on their own, so one absurd key cannot make every listing fail.
MAX_KEY_DEPTH = 32


@attrs.frozen
class Entry:
    """One leaf key as last read from etcd: its value, when it changed, and its TTL then."""

    value: str
    modified_index: int
    ttl: int | None = None


def normalise_prefix(prefix: str) -> str:
    """The prefix without trailing slashes (``""`` for the root), so keys compare plainly."""
    return prefix.rstrip("/")


@attrs.define
class _Draft:
    """What one service directory holds, each value parsed on its own when it was set.

    ``backends`` maps a backend id to its value and its backend at each address in it (one
    per port), made once when the value is set; ``columns[n][i]`` holds the ``i``-th backend
    of every value with ``n`` addresses, kept up to date key by key, so a service's backends
    are a copy of one set rather than a pass over every value.  ``bad`` maps a leaf whose
    value could not be used to its rejection.
    """

    name: str
    ports: tuple[int, ...] | None = None
    port_index: int | None = None
    backends: dict[str, tuple[str, tuple[Backend, ...]]] = attrs.field(factory=dict)
    columns: dict[int, list[set[Backend]]] = attrs.field(factory=dict)
    bad: dict[str, Rejection] = attrs.field(factory=dict)

    def empty(self) -> bool:
        """Whether no key of the directory is left."""
        return self.ports is None and not self.backends and not self.bad

    def add_backend(self, id: str, value: str, members: tuple[Backend, ...]) -> None:
        """Note backend ``id`` with ``value``, at each of the addresses in ``members``."""
        self.drop_backend(id)
        self.backends[id] = (value, members)
        columns = self.columns.setdefault(len(members), [set() for _ in members])
        for column, member in zip(columns, members, strict=True):
            column.add(member)

    def drop_backend(self, id: str) -> None:
        """Forget backend ``id``, if it is known."""
        held = self.backends.pop(id, None)
        if held is None:
            return
        members = held[1]
        columns = self.columns[len(members)]
        for column, member in zip(columns, members, strict=True):
            column.discard(member)
        if not columns[0]:
            del self.columns[len(members)]


@attrs.frozen
class _Claim:
    """One listen port a service (or one port of a multi-port service) asks for.

    ``directory`` is the service's name in etcd, which rejections name.
    """

    name: str
    directory: str
    port: int
    port_index: int | None
    backends: frozenset[Backend]


def part_name(service: str, port: int) -> str:
    """The name of the part of multi-port ``service`` that listens on ``port``: ``web:443``."""
    return f"{service}:{port}"


def _held_ports(draft: _Draft, previous: Catalog) -> tuple[int, ...] | None:
    """The ports ``draft`` listened on in ``previous``, in the order its values list them.

    For a multi-port service the order is read back from backends still registered with an
    address they had: ``None`` when no backend shows where every port goes.
    """
    held = previous.services.get(draft.name)
    if held is not None:
        return (held.port,)
    parts = [s for s in previous.services.values() if s.name == part_name(draft.name, s.port)]
    order: dict[int, int] = {}
    for part in parts:
        for backend in part.backends:
            value = draft.backends.get(backend.id)
            if value is not None and backend in value[1]:
                order.setdefault(value[1].index(backend), part.port)
    if not parts or sorted(order) != list(range(len(parts))):
        return None
    ports = tuple(order[i] for i in range(len(parts)))
    return ports if len(set(ports)) == len(ports) else None


def _mismatched(prefix: str, draft: _Draft, ports: tuple[int, ...]) -> list[Rejection]:
    """A rejection for each backend of ``draft`` that has not one address per port."""
    rejections: list[Rejection] = []
    listed = ",".join(map(str, ports))
    for count, columns in draft.columns.items():
        if count == len(ports):
            continue
        ports_word = f"{count} port" + ("" if count == 1 else "s")
        for backend in columns[0]:
            value = draft.backends[backend.id][0]
            rejections.append(
                Rejection(
                    f"{prefix}/{draft.name}/{backend.id}",
                    f"value {clip(value)!r} has {ports_word}, "
                    f"service {draft.name} listens on {len(ports)} ({listed})",
                )
            )
    return rejections


def _draft_claims(
    prefix: str, draft: _Draft, drafts: Mapping[str, _Draft], previous: Catalog
) -> tuple[list[_Claim], list[Rejection]]:
    """Split one service into a claim per listen port, with the matching backend addresses."""
    claims: list[_Claim] = []
    rejections: list[Rejection] = list(draft.bad.values())
    ports = draft.ports
    if ports is None and draft.backends:
        ports = _held_ports(draft, previous)
        if ports is None:
            rejections.append(Rejection(f"{prefix}/{draft.name}", "no port key"))
    if ports is None:
        return claims, rejections
    rejections.extend(_mismatched(prefix, draft, ports))
    matching = draft.columns.get(len(ports))
    for position, port in enumerate(ports):
        name = draft.name if len(ports) == 1 else part_name(draft.name, port)
        if name != draft.name and name in drafts:
            rejections.append(
                Rejection(
                    f"{prefix}/{draft.name}",
                    f"port {port} would be service {name}, "
                    f"but {prefix}/{name} is a service of its own",
                )
            )
            continue
        backends = frozenset(matching[position]) if matching else frozenset()
        claims.append(_Claim(name, draft.name, port, draft.port_index, backends))
    return claims, rejections


def _claim_order(claim: _Claim, previous: Catalog) -> tuple[int, int, str]:
    """Rank claimants of a port: its holder first, then the oldest port key, then by name."""
    held = previous.services.get(claim.name)
    holds = held is not None and held.port == claim.port
    index = claim.port_index if claim.port_index is not None else -1
    return (0 if holds else 1, index, claim.name)


def _assign_ports(
    prefix: str, claims: Iterable[_Claim], previous: Catalog
) -> tuple[list[Service], list[Rejection]]:
    """Give each port to one claimant and report the others."""
    by_port: dict[int, list[_Claim]] = {}
    for claim in claims:
        by_port.setdefault(claim.port, []).append(claim)
    services: list[Service] = []
    rejections: list[Rejection] = []
    for port, claimants in by_port.items():
        winner, *losers = sorted(claimants, key=lambda c: _claim_order(c, previous))
        held = previous.services.get(winner.name)
        if held is None or held.port != port or not _same(held.backends, winner.backends):
            held = Service(winner.name, port, winner.backends)
        services.append(held)
        rejections.extend(
            Rejection(
                f"{prefix}/{loser.directory}",
                f"port {port} is already used by service {winner.name}",
            )
            for loser in losers
        )
    return services, rejections


def _same(a: frozenset[Backend], b: frozenset[Backend]) -> bool:
    return a is b or a == b


class Layout:
    """The keys under one prefix, kept per service directory so that a change costs work in
    proportion to the directory it touches, and catalogs built from them.

    :meth:`set` and :meth:`remove` parse the one value they touch and mark its directory;
    :meth:`build` re-derives only marked directories, and a service whose port and backends
    did not change is the very object it was in ``previous``, so consumers can find what
    changed with ``is``.  ``work`` counts values parsed and directories derived, for tests:
    deriving a directory copies one set per port, in C, whatever its size.
    """

    def __init__(self, prefix: str) -> None:
        self._root = normalise_prefix(prefix)
        self._drafts: dict[str, _Draft] = {}
        self._loose: dict[str, Rejection] = {}
        self._derived: dict[str, tuple[list[_Claim], list[Rejection]]] = {}
        self._dirty: set[str] = set()
        self.work = 0

    def _locate(self, key: str, note: bool) -> tuple[str, str] | None:
        """The service directory and leaf of ``key``; ``None`` (noting why if ``note``) if it
        is in none."""
        self._loose.pop(key, None)
        under = self._root + "/"
        if not key.startswith(under):
            return None
        rest = key[len(under) :]
        depth = rest.count("/") + 1
        if depth > MAX_KEY_DEPTH:
            if note:
                reason = f"key is {depth} levels deep, more than {MAX_KEY_DEPTH}"
                self._loose[key] = Rejection(clip(key), reason)
            return None
        name, slash, leaf = rest.rpartition("/")
        if not slash or not name:
            if note:
                reason = "key is not inside a service directory"
                self._loose[key] = Rejection(clip(key), reason)
            return None
        return name, leaf

    def _mark(self, name: str) -> None:
        """Mark ``name`` to be derived again, and the service whose part it could name."""
        self._dirty.add(name)
        self._dirty.add(name.rpartition(":")[0])

    def set(self, key: str, entry: Entry) -> None:
        """Note the new value of ``key``."""
        where = self._locate(key, note=True)
        if where is None:
            return
        name, leaf = where
        draft = self._drafts.setdefault(name, _Draft(name))
        self._mark(name)
        self.work += 1
        draft.bad.pop(leaf, None)
        try:
            if leaf == PORT_KEY:
                draft.ports, draft.port_index = None, None
                draft.ports = parse_ports(entry.value)
                draft.port_index = entry.modified_index
            else:
                draft.drop_backend(leaf)
                addresses = parse_addresses(entry.value)
                draft.add_backend(leaf, entry.value, tuple(Backend(leaf, a) for a in addresses))
        except BadValueError as e:
            draft.bad[leaf] = Rejection(key, str(e))

    def remove(self, key: str) -> None:
        """Forget ``key``."""
        where = self._locate(key, note=False)
        if where is None:
            return
        name, leaf = where
        draft = self._drafts.get(name)
        if draft is None:
            return
        self._mark(name)
        draft.bad.pop(leaf, None)
        if leaf == PORT_KEY:
            draft.ports, draft.port_index = None, None
        else:
            draft.drop_backend(leaf)
        if draft.empty():
            del self._drafts[name]

    def build(self, previous: Catalog) -> Catalog:
        """The catalog the keys describe now, given ``previous``, the catalog in use."""
        for name in self._dirty:
            draft = self._drafts.get(name)
            if draft is None:
                self._derived.pop(name, None)
                continue
            self.work += 1
            self._derived[name] = _draft_claims(self._root, draft, self._drafts, previous)
        self._dirty.clear()
        claims = [c for derived, _ in self._derived.values() for c in derived]
        services, conflicts = _assign_ports(self._root, claims, previous)
        rejections = [r for _, rejected in self._derived.values() for r in rejected]
        # Typed Any: mypy cannot match a dict to the overloads of Catalog's ``converter=dict``.
        by_name: Any = {s.name: s for s in services}
        everything = [*self._loose.values(), *rejections, *conflicts]
        return Catalog(services=by_name, rejections=frozenset(everything))


def build_catalog(prefix: str, entries: Mapping[str, Entry], previous: Catalog) -> Catalog:
    """Build the catalog the keys under ``prefix`` describe, rejecting what cannot be used.

    ``previous`` is the catalog currently in use: a service keeps its ports while its port key
    is missing but backends remain, and keeps a port another service also claims.
    """
    layout = Layout(prefix)
    for key, entry in entries.items():
        layout.set(key, entry)
    return layout.build(previous)
