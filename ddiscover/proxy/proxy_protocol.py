"""PROXY protocol headers (haproxy's ``doc/proxy-protocol.txt``): built and read.

**Sending** (``send_proxy``): a backend connection starts with one header carrying the real
client (source) and the address the client connected to (destination), written before any
relayed byte and in one write.  v1 is the text line ``PROXY TCP4 <src> <dst> <sport>
<dport>\\r\\n``; v2 the binary header: the 12-byte signature, version 2 with the PROXY command,
``TCP4``/``TCP6``, the length, then the addresses.  When the two addresses are of different
families (an IPv6 listener accepting an IPv4-mapped client, say), the IPv4 one is written as
IPv4-mapped IPv6 and the header is ``TCP6``, as haproxy does.  Health checks that must send a
header (:func:`check_header`) send the v2 LOCAL command, or, in v1, the check connection's own
two ends, as the specification asks ("receivers may reject" ``UNKNOWN``).

**Receiving** (``accept_proxy``): :class:`HeaderReader` reads the header a client (an upstream
load balancer) must start with.  It never guesses: bytes that begin neither the v2 signature
nor ``PROXY`` are refused at once, and so is a v1 line without its CRLF within 107 bytes (the
specification's limit, including a lone CR or LF) and a v2 header longer than
:data:`V2_MAX_LENGTH`.  The fields are parsed by Twisted's parsers
(``twisted.protocols.haproxy``); what they let through and the specification forbids (extra
or malformed v1 fields, addresses that are not IP literals of the named family, a UDP header
on a TCP connection) is refused here, and every refusal is one :class:`ProxyHeaderError` line.
"""

from __future__ import annotations

import ipaddress
import re
import struct

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.protocols.haproxy._exceptions import (
    InvalidNetworkProtocol,
    InvalidProxyHeader,
    MissingAddressData,
)
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser

from ddiscover.policy.values import ProxyVersion
from ddiscover.text import clip

IPAddress = IPv4Address | IPv6Address

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
"""The 12 bytes every v2 header starts with."""

V1_MAX_LENGTH = 107
"""The longest v1 line, CRLF included (the specification's 108-byte buffer less its NUL)."""

V2_MAX_LENGTH = 4096
"""The longest v2 header accepted: room for the addresses and a few kilobytes of TLVs."""

_V1_PREFIX = b"PROXY "
_V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"
_V1_FIELDS = re.compile(
    rb"PROXY (?:UNKNOWN(?: .*)?|(TCP[46]) [0-9A-Fa-f.:]+ [0-9A-Fa-f.:]+"
    rb" (?:0|[1-9][0-9]{0,4}) (?:0|[1-9][0-9]{0,4}))"
)


class ProxyHeaderError(ValueError):
    """A client's PROXY header was refused; ``str()`` is the one line to log."""


@attrs.frozen
class ProxyHeader:
    """A header as read: its version and the client and destination it carries.

    Both addresses are ``None`` when the header carries none (v1 ``UNKNOWN``, v2 ``LOCAL`` or
    an unspecified or UNIX family): the connection's own addresses then stand.
    """

    version: int
    source: IPAddress | None
    destination: IPAddress | None


def _ip(address: IPAddress) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address as an ``ipaddress`` value, without an IPv6 zone (``%eth0``)."""
    ip = ipaddress.ip_address(address.host)
    return ipaddress.IPv6Address(int(ip)) if ip.version == 6 else ip


def _pair(
    source: IPAddress, destination: IPAddress
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    """Both addresses in one family: IPv4 ones become IPv4-mapped IPv6 if the other is IPv6."""
    ips = (_ip(source), _ip(destination))
    if ips[0].version == ips[1].version:
        return ips
    return tuple(ipaddress.IPv6Address(f"::ffff:{ip}") if ip.version == 4 else ip for ip in ips)


def v1_header(source: IPAddress, destination: IPAddress) -> bytes:
    """The v1 text line for a connection from ``source`` to ``destination``."""
    src, dst = _pair(source, destination)
    family = "TCP4" if src.version == 4 else "TCP6"
    line = f"PROXY {family} {src} {dst} {source.port} {destination.port}\r\n"
    return line.encode("ascii")


def v2_header(source: IPAddress, destination: IPAddress) -> bytes:
    """The v2 binary header, PROXY command, for a connection from ``source`` to ``destination``."""
    src, dst = _pair(source, destination)
    family = b"\x11" if src.version == 4 else b"\x21"
    body = src.packed + dst.packed + struct.pack("!HH", source.port, destination.port)
    return V2_SIGNATURE + b"\x21" + family + struct.pack("!H", len(body)) + body


def v2_local() -> bytes:
    """The v2 header with the LOCAL command: a connection of the proxy's own, such as a check."""
    return _V2_LOCAL


def header(version: ProxyVersion, source: IPAddress, destination: IPAddress) -> bytes:
    """The header ``send_proxy = version`` starts a proxied backend connection with."""
    if version is ProxyVersion.V1:
        return v1_header(source, destination)
    if version is ProxyVersion.V2:
        return v2_header(source, destination)
    return b""


def check_header(version: ProxyVersion, local: IPAddress, peer: IPAddress) -> bytes:
    """The header a health check sends on its connection from ``local`` to ``peer``."""
    if version is ProxyVersion.V2:
        return v2_local()
    return header(version, local, peer)


def _canonical(address: IPAddress) -> IPAddress:
    """The address with its IP written canonically (Twisted writes IPv6 uncompressed)."""
    return attrs.evolve(address, host=str(_ip(address)))


def _refuse(reason: str, data: bytes) -> ProxyHeaderError:
    return ProxyHeaderError(f"{reason}: {clip(repr(data))}")


def _address(family: bytes, address: object) -> IPAddress:
    """One address as Twisted's v1 parser read it: an IP literal of the line's family."""
    assert isinstance(address, IPv4Address | IPv6Address)
    try:
        ip = ipaddress.ip_address(address.host)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1 address {clip(address.host)!r} is not an IP") from None
    if ip.version != (4 if family == b"TCP4" else 6):
        raise ProxyHeaderError(f"PROXY v1 address {ip} is not {family.decode()}")
    if address.port > 65535:
        raise ProxyHeaderError(f"PROXY v1 port {address.port} is not a port")
    return _canonical(address)


def _parse_v1(line: bytes) -> ProxyHeader:
    """A v1 line without its CRLF: checked against the specification, read by Twisted's parser."""
    if b"\r" in line or b"\n" in line:
        raise _refuse("PROXY v1 line has a lone CR or LF", line)
    match = _V1_FIELDS.fullmatch(line)
    if match is None:
        raise _refuse("PROXY v1 line is malformed", line)
    family = match.group(1)
    if family is None:
        # UNKNOWN: the rest of the line is ignored.  Twisted's parser refuses the bare
        # "PROXY UNKNOWN" the specification allows, so it is not asked.
        return ProxyHeader(1, None, None)
    try:
        info = V1Parser.parse(line)
    except InvalidNetworkProtocol:
        raise _refuse("PROXY v1 line names an unknown protocol", line) from None
    except MissingAddressData:
        raise _refuse("PROXY v1 line has incomplete addresses", line) from None
    except (InvalidProxyHeader, ValueError):
        raise _refuse("PROXY v1 line is malformed", line) from None
    return ProxyHeader(1, _address(family, info.source), _address(family, info.destination))


def _parse_v2(data: bytes) -> ProxyHeader:
    """A whole v2 header, read by Twisted's parser; only TCP (stream) addresses are kept."""
    if data[12] >> 4 != 2:
        raise _refuse("PROXY v2 header has an unknown version", data[:16])
    if data[13] & 0x0F == 2:
        raise _refuse("PROXY v2 header carries a UDP address on a TCP connection", data[:16])
    try:
        info = V2Parser.parse(data)
    except MissingAddressData:
        raise _refuse("PROXY v2 header has incomplete addresses", data[:16]) from None
    except InvalidNetworkProtocol:
        raise _refuse("PROXY v2 header names an unknown family", data[:16]) from None
    except (InvalidProxyHeader, KeyError, ValueError):
        raise _refuse("PROXY v2 header is malformed", data[:16]) from None
    # Twisted types these as IAddress; only IP addresses of a stream are kept.
    source: object = info.source
    destination: object = info.destination
    if isinstance(source, IPv4Address | IPv6Address) and isinstance(
        destination, IPv4Address | IPv6Address
    ):
        return ProxyHeader(2, _canonical(source), _canonical(destination))
    return ProxyHeader(2, None, None)


class HeaderReader:
    """Reads the PROXY header (v1 or v2) that starts a client connection, in pieces.

    Feed it what arrives until :meth:`feed` returns the header and the bytes after it (the
    client's first data, to be relayed as usual).  It holds at most :data:`V2_MAX_LENGTH`
    bytes; on a bad or oversized header it raises :class:`ProxyHeaderError`, and the caller
    closes the connection.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        """Add ``data``; the header and what follows it once complete, else ``None``."""
        buffer = self._buffer + data
        if buffer.startswith(b"\r"):
            if not V2_SIGNATURE.startswith(buffer[:12]):
                raise _refuse("not a PROXY protocol header", buffer[:16])
            found = self._v2(buffer)
        elif _V1_PREFIX.startswith(buffer[:6]):
            found = self._v1(buffer)
        else:
            raise _refuse("not a PROXY protocol header", buffer[:16])
        if found is None:
            self._buffer = buffer
            return None
        self._buffer = b""
        return found

    @staticmethod
    def _v1(buffer: bytes) -> tuple[ProxyHeader, bytes] | None:
        end = buffer.find(b"\r\n", 0, V1_MAX_LENGTH)
        if end < 0:
            if len(buffer) >= V1_MAX_LENGTH:
                raise _refuse(f"PROXY v1 line has no CRLF within {V1_MAX_LENGTH} bytes", buffer)
            return None
        return _parse_v1(buffer[:end]), buffer[end + 2 :]

    @staticmethod
    def _v2(buffer: bytes) -> tuple[ProxyHeader, bytes] | None:
        if len(buffer) < 16:
            return None
        length = 16 + struct.unpack("!H", buffer[14:16])[0]
        if length > V2_MAX_LENGTH:
            raise _refuse(
                f"PROXY v2 header of {length} bytes is longer than {V2_MAX_LENGTH}", buffer[:16]
            )
        if len(buffer) < length:
            return None
        return _parse_v2(buffer[:length]), buffer[length:]
