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

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ddiscover.catalog import Address, Backend, Catalog, Rejection, Service

PORT_KEY = "port"

_DIGITS = re.compile(r"[0-9]+")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_NUMERIC_HOST = re.compile(r"[0-9.]+")


@attrs.frozen
class Entry:
    """One leaf key as last read from etcd: its value, when it changed, and its TTL then."""

    value: str
    modified_index: int
    ttl: int | None = None


class BadValueError(ValueError):
    """A value that is not what its key needs; ``str()`` is the one-line reason."""


def normalise_prefix(prefix: str) -> str:
    """The prefix without trailing slashes (``""`` for the root), so keys compare plainly."""
    return prefix.rstrip("/")


def parse_port(text: str) -> int:
    """Read a TCP port (1-65535) from ``text``, ignoring surrounding whitespace."""
    stripped = text.strip()
    if not _DIGITS.fullmatch(stripped):
        raise BadValueError(f"port {text!r} is not a number")
    if len(stripped) > 5 or not 1 <= int(stripped) <= 65535:
        raise BadValueError(f"port {text!r} is outside 1-65535")
    return int(stripped)


def _check_host(host: str) -> str:
    """A dotted-quad must be a real IPv4 address; anything else must be a hostname."""
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise BadValueError(f"{host!r} is not an IPv4 address") from None
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise BadValueError(f"{host!r} is not a hostname or IP address")
    return host


def parse_ports(text: str) -> tuple[int, ...]:
    """Read the listen port of a service, or its listen ports separated by commas (``80,443``)."""
    parts = text.split(",")
    if len(parts) == 1:
        return (parse_port(text),)
    try:
        ports = tuple(parse_port(part) for part in parts)
    except BadValueError as e:
        raise BadValueError(f"ports {text!r}: {e}") from None
    twice = sorted({port for port in ports if ports.count(port) > 1})
    if twice:
        raise BadValueError(f"ports {text!r} list {twice[0]} twice")
    return ports


def _parse_host(host: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise BadValueError(f"{host!r} is not an IPv6 address") from None
    if ":" in host:
        raise BadValueError("an IPv6 address needs brackets")
    return _check_host(host)


def parse_addresses(text: str) -> tuple[Address, ...]:
    """Read a backend's ``host:port``, or ``host:port,port,...`` for a service of several ports.

    Host is an IPv4 address, a hostname or ``[IPv6]``; surrounding whitespace is ignored.
    """
    host, sep, port_text = text.strip().rpartition(":")
    try:
        if not sep:
            raise BadValueError("no ':port'")
        host = _parse_host(host)
        ports = [parse_port(part) for part in port_text.split(",")]
    except BadValueError as e:
        raise BadValueError(f"value {text!r} is not host:port: {e}") from None
    return tuple(Address(host, port) for port in ports)


def parse_address(text: str) -> Address:
    """Read one ``host:port`` (IPv4, hostname or ``[IPv6]:port``), ignoring whitespace."""
    first, *more = parse_addresses(text)
    if more:
        raise BadValueError(f"value {text!r} is not host:port: it has {1 + len(more)} ports")
    return first


@attrs.define
class _Draft:
    """What one service directory held, each value parsed on its own.

    ``backends`` maps a backend id to its value and the addresses in it (one per port).
    """

    name: str
    ports: tuple[int, ...] | None = None
    port_index: int | None = None
    backends: dict[str, tuple[str, tuple[Address, ...]]] = attrs.field(factory=dict)


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


def _collect(
    prefix: str, entries: Mapping[str, Entry]
) -> tuple[dict[str, _Draft], list[Rejection]]:
    """Group the keys under ``prefix`` by service, parsing each value on its own."""
    drafts: dict[str, _Draft] = {}
    rejections: list[Rejection] = []
    under = prefix + "/"
    for key, entry in entries.items():
        if not key.startswith(under):
            continue
        name, slash, leaf = key[len(under) :].rpartition("/")
        if not slash or not name:
            rejections.append(Rejection(key, "key is not inside a service directory"))
            continue
        draft = drafts.setdefault(name, _Draft(name))
        try:
            if leaf == PORT_KEY:
                draft.ports = parse_ports(entry.value)
                draft.port_index = entry.modified_index
            else:
                draft.backends[leaf] = (entry.value, parse_addresses(entry.value))
        except BadValueError as e:
            rejections.append(Rejection(key, str(e)))
    return drafts, rejections


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
            if value is not None and backend.address in value[1]:
                order.setdefault(value[1].index(backend.address), part.port)
    if not parts or sorted(order) != list(range(len(parts))):
        return None
    ports = tuple(order[i] for i in range(len(parts)))
    return ports if len(set(ports)) == len(ports) else None


def _matching(
    prefix: str, draft: _Draft, ports: tuple[int, ...]
) -> tuple[dict[str, tuple[Address, ...]], list[Rejection]]:
    """The backends of ``draft`` with one address per port; a rejection for each other one."""
    matching: dict[str, tuple[Address, ...]] = {}
    rejections: list[Rejection] = []
    listed = ",".join(map(str, ports))
    for id, (value, addresses) in draft.backends.items():
        if len(addresses) == len(ports):
            matching[id] = addresses
            continue
        count = f"{len(addresses)} port" + ("" if len(addresses) == 1 else "s")
        rejections.append(
            Rejection(
                f"{prefix}/{draft.name}/{id}",
                f"value {value!r} has {count}, "
                f"service {draft.name} listens on {len(ports)} ({listed})",
            )
        )
    return matching, rejections


def _claims(
    prefix: str, drafts: Mapping[str, _Draft], previous: Catalog
) -> tuple[list[_Claim], list[Rejection]]:
    """Split each service into one claim per listen port, with the matching backend addresses."""
    claims: list[_Claim] = []
    rejections: list[Rejection] = []
    for draft in drafts.values():
        ports = draft.ports
        if ports is None and draft.backends:
            ports = _held_ports(draft, previous)
            if ports is None:
                rejections.append(Rejection(f"{prefix}/{draft.name}", "no port key"))
        if ports is None:
            continue
        matching, mismatched = _matching(prefix, draft, ports)
        rejections.extend(mismatched)
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
            backends = frozenset(Backend(id, a[position]) for id, a in matching.items())
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
        services.append(Service(winner.name, port, winner.backends))
        rejections.extend(
            Rejection(
                f"{prefix}/{loser.directory}",
                f"port {port} is already used by service {winner.name}",
            )
            for loser in losers
        )
    return services, rejections


def build_catalog(prefix: str, entries: Mapping[str, Entry], previous: Catalog) -> Catalog:
    """Build the catalog the keys under ``prefix`` describe, rejecting what cannot be used.

    ``previous`` is the catalog currently in use: a service keeps its ports while its port key
    is missing but backends remain, and keeps a port another service also claims.
    """
    root = normalise_prefix(prefix)
    drafts, rejections = _collect(root, entries)
    claims, mismatches = _claims(root, drafts, previous)
    services, conflicts = _assign_ports(root, claims, previous)
    # Typed Any: mypy cannot match a dict to the overloads of Catalog's ``converter=dict``.
    by_name: Any = {s.name: s for s in services}
    return Catalog(services=by_name, rejections=frozenset(rejections + mismatches + conflicts))
