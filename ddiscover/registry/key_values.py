"""Values of docker-register's keys: a service's listen ports and a backend's addresses.

Each parser takes the text of one value and returns what it means, or raises
:class:`BadValueError` whose ``str()`` is a one-line reason quoting the value cut to a couple
of hundred characters.
"""

from __future__ import annotations

import ipaddress
import re

from ddiscover.catalog import Address
from ddiscover.text import clip

#: Ports one service may listen on; a port key listing more is rejected, so one key cannot
#: exhaust the descriptors every other service needs.
MAX_PORTS_PER_SERVICE = 64

_DIGITS = re.compile(r"[0-9]+")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_NUMERIC_HOST = re.compile(r"[0-9.]+")


class BadValueError(ValueError):
    """A value that is not what its key needs; ``str()`` is the one-line reason."""


def parse_port(text: str) -> int:
    """Read a TCP port (1-65535) from ``text``, ignoring surrounding whitespace."""
    stripped = text.strip()
    if not _DIGITS.fullmatch(stripped):
        raise BadValueError(f"port {clip(text)!r} is not a number")
    if len(stripped) > 5 or not 1 <= int(stripped) <= 65535:
        raise BadValueError(f"port {clip(text)!r} is outside 1-65535")
    return int(stripped)


def _check_host(host: str) -> str:
    """A dotted-quad must be a real IPv4 address; anything else must be a hostname."""
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise BadValueError(f"{clip(host)!r} is not an IPv4 address") from None
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise BadValueError(f"{clip(host)!r} is not a hostname or IP address")
    return host


def parse_ports(text: str) -> tuple[int, ...]:
    """Read the listen port of a service, or its listen ports separated by commas (``80,443``)."""
    parts = text.split(",")
    if len(parts) > MAX_PORTS_PER_SERVICE:
        raise BadValueError(
            f"ports {clip(text)!r} list {len(parts)} ports, more than {MAX_PORTS_PER_SERVICE}"
        )
    if len(parts) == 1:
        return (parse_port(text),)
    try:
        ports = tuple(parse_port(part) for part in parts)
    except BadValueError as e:
        raise BadValueError(f"ports {clip(text)!r}: {e}") from None
    twice = sorted({port for port in ports if ports.count(port) > 1})
    if twice:
        raise BadValueError(f"ports {clip(text)!r} list {twice[0]} twice")
    return ports


def _parse_host(host: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise BadValueError(f"{clip(host)!r} is not an IPv6 address") from None
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
        raise BadValueError(f"value {clip(text)!r} is not host:port: {e}") from None
    return tuple(Address(host, port) for port in ports)


def parse_address(text: str) -> Address:
    """Read one ``host:port`` (IPv4, hostname or ``[IPv6]:port``), ignoring whitespace."""
    first, *more = parse_addresses(text)
    if more:
        raise BadValueError(f"value {clip(text)!r} is not host:port: it has {1 + len(more)} ports")
    return first
