"""How docker-register lays services out in etcd, turned into a :class:`Catalog`.

Under the prefix, each service is a directory holding one ``port`` key (the port ddiscover
listens on) and one key per backend whose value is ``host:port``::

    /backends/web/port        80
    /backends/web/abc123      10.0.0.1:8080
    /backends/jwilder/whoami/port   8000      (a service name may contain "/")

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


def parse_address(text: str) -> Address:
    """Read a backend's ``host:port`` (IPv4, hostname or ``[IPv6]:port``), ignoring whitespace."""
    stripped = text.strip()
    host, sep, port_text = stripped.rpartition(":")
    try:
        if not sep:
            raise BadValueError("no ':port'")
        if host.startswith("[") and host.endswith("]"):
            try:
                host = str(ipaddress.IPv6Address(host[1:-1]))
            except ValueError:
                raise BadValueError(f"{host!r} is not an IPv6 address") from None
        elif ":" in host:
            raise BadValueError("an IPv6 address needs brackets")
        else:
            host = _check_host(host)
        return Address(host, parse_port(port_text))
    except BadValueError as e:
        raise BadValueError(f"value {text!r} is not host:port: {e}") from None


@attrs.frozen
class _Draft:
    """What one service directory held before ports are checked against each other."""

    name: str
    port: int | None = None
    port_index: int | None = None
    backends: frozenset[Backend] = frozenset()


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
        draft = drafts.get(name, _Draft(name))
        try:
            if leaf == PORT_KEY:
                draft = attrs.evolve(
                    draft, port=parse_port(entry.value), port_index=entry.modified_index
                )
            else:
                backend = Backend(id=leaf, address=parse_address(entry.value))
                draft = attrs.evolve(draft, backends=draft.backends | {backend})
        except BadValueError as e:
            rejections.append(Rejection(key, str(e)))
        drafts[name] = draft
    return drafts, rejections


def _claim_order(draft: _Draft, port: int, previous: Catalog) -> tuple[int, int, str]:
    """Rank claimants of ``port``: its holder first, then the oldest port key, then by name."""
    held = previous.services.get(draft.name)
    holds = held is not None and held.port == port
    index = draft.port_index if draft.port_index is not None else -1
    return (0 if holds else 1, index, draft.name)


def _assign_ports(
    prefix: str, drafts: Iterable[_Draft], previous: Catalog
) -> tuple[list[Service], list[Rejection]]:
    """Give each service its port (or its last known one) and settle ports claimed twice."""
    claims: dict[int, list[_Draft]] = {}
    rejections: list[Rejection] = []
    for draft in drafts:
        port = draft.port
        if port is None and draft.backends:
            held = previous.services.get(draft.name)
            if held is None:
                rejections.append(Rejection(f"{prefix}/{draft.name}", "no port key"))
                continue
            port = held.port
        if port is not None:
            claims.setdefault(port, []).append(attrs.evolve(draft, port=port))
    services: list[Service] = []
    for port, claimants in claims.items():
        winner, *losers = sorted(claimants, key=lambda d: _claim_order(d, port, previous))
        services.append(Service(winner.name, port, winner.backends))
        rejections.extend(
            Rejection(
                f"{prefix}/{loser.name}",
                f"port {port} is already used by service {winner.name}",
            )
            for loser in losers
        )
    return services, rejections


def build_catalog(prefix: str, entries: Mapping[str, Entry], previous: Catalog) -> Catalog:
    """Build the catalog the keys under ``prefix`` describe, rejecting what cannot be used.

    ``previous`` is the catalog currently in use: a service keeps its port while its port key
    is missing but backends remain, and keeps a port another service also claims.
    """
    root = normalise_prefix(prefix)
    drafts, rejections = _collect(root, entries)
    services, conflicts = _assign_ports(root, drafts.values(), previous)
    # Typed Any: mypy cannot match a dict to the overloads of Catalog's ``converter=dict``.
    by_name: Any = {s.name: s for s in services}
    return Catalog(services=by_name, rejections=frozenset(rejections + conflicts))
