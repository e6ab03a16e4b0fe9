"""PROXY protocol headers: what we send parses with Twisted's parser; what we read is checked."""

from __future__ import annotations

import struct
from ipaddress import ip_address

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.policy.values import ProxyVersion
from ddiscover.proxy.proxy_protocol import (
    V1_MAX_LENGTH,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    HeaderReader,
    ProxyHeader,
    ProxyHeaderError,
    check_header,
    header,
    v1_header,
    v2_header,
    v2_local,
)

CLIENT4 = IPv4Address("TCP", "192.0.2.10", 51000)
LISTENER4 = IPv4Address("TCP", "10.0.0.1", 8080)
CLIENT6 = IPv6Address("TCP", "2001:db8::a", 51000)
LISTENER6 = IPv6Address("TCP", "2001:db8::1", 8080)


def _normal(address: object) -> tuple[object, int]:
    """An IP address and port, however the IP is written (Twisted writes IPv6 uncompressed)."""
    assert isinstance(address, IPv4Address | IPv6Address)
    return ip_address(address.host), address.port


class SendTests(SynchronousTestCase):
    """The headers a backend connection starts with, byte for byte."""

    def test_v1_ipv4(self) -> None:
        """v1 is one text line, and Twisted's parser reads it back with the data after it."""
        line = v1_header(CLIENT4, LISTENER4)
        self.assertEqual(line, b"PROXY TCP4 192.0.2.10 10.0.0.1 51000 8080\r\n")
        info, rest = V1Parser().feed(line + b"GET /")
        assert info is not None
        self.assertEqual((info.source, info.destination, rest), (CLIENT4, LISTENER4, b"GET /"))

    def test_v1_ipv6_and_zone(self) -> None:
        """IPv6 is written canonically, without a zone."""
        zoned = IPv6Address("TCP", "fe80::0001%eth0", 1)
        self.assertEqual(v1_header(zoned, LISTENER6), b"PROXY TCP6 fe80::1 2001:db8::1 1 8080\r\n")

    def test_v1_mixed_families(self) -> None:
        """An IPv4 end next to an IPv6 one is written IPv4-mapped, and the line is TCP6."""
        self.assertEqual(
            v1_header(CLIENT4, LISTENER6),
            b"PROXY TCP6 ::ffff:c000:20a 2001:db8::1 51000 8080\r\n",
        )

    def test_v2_ipv4(self) -> None:
        """v2: signature, PROXY command, TCP4, length 12, addresses, ports; Twisted reads it."""
        data = v2_header(CLIENT4, LISTENER4)
        self.assertEqual(
            data,
            V2_SIGNATURE
            + b"\x21\x11\x00\x0c"
            + bytes([192, 0, 2, 10, 10, 0, 0, 1])
            + struct.pack("!HH", 51000, 8080),
        )
        info, rest = V2Parser().feed(data + b"\x16\x03")
        assert info is not None
        self.assertEqual((info.source, info.destination, rest), (CLIENT4, LISTENER4, b"\x16\x03"))

    def test_v2_ipv6(self) -> None:
        """TCP6 is family byte 0x21 and 36 bytes of addresses."""
        data = v2_header(CLIENT6, LISTENER6)
        self.assertEqual(data[12:16], b"\x21\x21\x00\x24")
        info, _ = V2Parser().feed(data)
        assert info is not None
        self.assertEqual(
            (_normal(info.source), _normal(info.destination)),
            (_normal(CLIENT6), _normal(LISTENER6)),
        )

    def test_local(self) -> None:
        """The LOCAL command carries no address: Twisted reads none."""
        self.assertEqual(v2_local(), V2_SIGNATURE + b"\x20\x00\x00\x00")
        info, _ = V2Parser().feed(v2_local())
        assert info is not None
        self.assertEqual((info.source, info.destination), (None, None))

    def test_by_version(self) -> None:
        """send_proxy picks the header; none sends nothing."""
        self.assertEqual(header(ProxyVersion.NONE, CLIENT4, LISTENER4), b"")
        self.assertEqual(header(ProxyVersion.V1, CLIENT4, LISTENER4)[:10], b"PROXY TCP4")
        self.assertEqual(header(ProxyVersion.V2, CLIENT4, LISTENER4)[:12], V2_SIGNATURE)

    def test_check_header(self) -> None:
        """Checks send v2 LOCAL, or in v1 the check connection's own two ends."""
        local = IPv4Address("TCP", "127.0.0.1", 40000)
        backend = IPv4Address("TCP", "127.0.0.2", 8008)
        self.assertEqual(check_header(ProxyVersion.V2, local, backend), v2_local())
        self.assertEqual(
            check_header(ProxyVersion.V1, local, backend),
            b"PROXY TCP4 127.0.0.1 127.0.0.2 40000 8008\r\n",
        )
        self.assertEqual(check_header(ProxyVersion.NONE, local, backend), b"")


class ReadTests(SynchronousTestCase):
    """Reading a client's header, whole or in pieces."""

    def read(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        return HeaderReader().feed(data)

    def refusal(self, *pieces: bytes) -> str:
        reader = HeaderReader()
        with self.assertRaises(ProxyHeaderError) as caught:
            for piece in pieces:
                reader.feed(piece)
        return str(caught.exception)

    def test_round_trip_byte_by_byte(self) -> None:
        """Our own headers read back, one byte at a time, with the client's data after them."""
        cases = [
            (v1_header(CLIENT4, LISTENER4), ProxyHeader(1, CLIENT4, LISTENER4)),
            (v1_header(CLIENT6, LISTENER6), ProxyHeader(1, CLIENT6, LISTENER6)),
            (v2_header(CLIENT4, LISTENER4), ProxyHeader(2, CLIENT4, LISTENER4)),
            (v2_header(CLIENT6, LISTENER6), ProxyHeader(2, CLIENT6, LISTENER6)),
        ]
        for data, expected in cases:
            reader = HeaderReader()
            results = [reader.feed(data[i : i + 1]) for i in range(len(data))]
            self.assertEqual(results, [None] * (len(data) - 1) + [(expected, b"")])
        found = self.read(v2_header(CLIENT4, LISTENER4) + b"hello")
        assert found is not None
        self.assertEqual(found[1], b"hello")

    def test_no_addresses(self) -> None:
        """UNKNOWN, LOCAL and UNIX headers carry no usable address."""
        unix = V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", 216) + b"/a".ljust(216, b"\0")
        for data, version in ((b"PROXY UNKNOWN\r\n", 1), (b"PROXY UNKNOWN x y\r\n", 1),
                              (v2_local(), 2), (unix, 2)):  # fmt: skip
            self.assertEqual(self.read(data), (ProxyHeader(version, None, None), b""), data)

    def test_truncated_waits(self) -> None:
        """A header cut short is not an error yet: the reader waits for the rest."""
        self.assertIsNone(self.read(v1_header(CLIENT4, LISTENER4)[:-1]))
        self.assertIsNone(self.read(v2_header(CLIENT4, LISTENER4)[:20]))
        self.assertIsNone(self.read(V2_SIGNATURE[:3]))

    def test_not_a_header(self) -> None:
        """Anything else is refused at its first bytes: the reader never guesses."""
        self.assertEqual(
            self.refusal(b"GET / HTTP/1.1\r\n"),
            "not a PROXY protocol header: b'GET / HTTP/1.1\\r\\n'",
        )
        self.assertIn("not a PROXY protocol header", self.refusal(b"PROXX"))
        self.assertIn("not a PROXY protocol header", self.refusal(b"\r\n\r\nX"))

    def test_oversized(self) -> None:
        """A v1 line with no CRLF within 107 bytes, and a v2 length past the limit, are refused."""
        line = b"PROXY TCP4 " + b"1" * 200
        self.assertIn(
            f"PROXY v1 line has no CRLF within {V1_MAX_LENGTH} bytes",
            self.refusal(line[:60], line[60:]),
        )
        big = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX_LENGTH)
        self.assertIn(f"PROXY v2 header of {V2_MAX_LENGTH + 16} bytes", self.refusal(big))

    def test_invalid_v1(self) -> None:
        """What Twisted's v1 parser lets through and the specification forbids is refused."""
        cases = {
            b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n": "PROXY v1 line is malformed",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n": "PROXY v1 line is malformed",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 extra\r\n": "PROXY v1 line is malformed",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n": "PROXY v1 line is malformed",
            b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n": "PROXY v1 address '999.2.3.4' is not an IP",
            b"PROXY TCP4 ::1 ::1 1 2\r\n": "PROXY v1 address ::1 is not TCP4",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n": "PROXY v1 address 1.2.3.4 is not TCP6",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n": "PROXY v1 port 70000 is not a port",
            b"PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n": "PROXY v1 line has a lone CR or LF",
        }
        for data, reason in cases.items():
            self.assertIn(reason, self.refusal(data), data)

    def test_invalid_v2(self) -> None:
        """Bad versions, commands, families, UDP and short addresses are refused."""
        body = bytes(12)
        cases = {
            b"\x11\x11\x00\x0c" + body: "PROXY v2 header has an unknown version",
            b"\x22\x11\x00\x0c" + body: "PROXY v2 header is malformed",
            b"\x21\x41\x00\x0c" + body: "PROXY v2 header names an unknown family",
            b"\x21\x12\x00\x0c" + body: "PROXY v2 header carries a UDP address",
            b"\x21\x11\x00\x04" + body[:4]: "PROXY v2 header has incomplete addresses",
        }
        for tail, reason in cases.items():
            self.assertIn(reason, self.refusal(V2_SIGNATURE + tail), tail)

    def test_error_is_one_short_line(self) -> None:
        """The refusal shows a clipped, escaped sample of the bytes: one line, whatever came."""
        message = self.refusal(b"\x00\n" * 3000)
        self.assertNotIn("\n", message)
        self.assertLess(len(message), 300)
