"""Tests for :mod:`ddiscover.registry.layout`: etcd keys and values to a catalog."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Address, Backend, Catalog, Rejection, Service
from ddiscover.registry.layout import (
    BadValueError,
    Entry,
    build_catalog,
    parse_address,
    parse_addresses,
    parse_port,
    parse_ports,
)

derandomized = settings(derandomize=True, max_examples=200, deadline=None)


def entries(*rows: tuple[str, str] | tuple[str, str, int]) -> dict[str, Entry]:
    """Entries from ``(key, value)`` rows; the modified index is the row number unless given."""
    built = {}
    for number, row in enumerate(rows, start=10):
        key, value, *index = row
        built[key] = Entry(value, index[0] if index else number)
    return built


def be(id: str, host: str, port: int) -> Backend:
    """A backend, briefly."""
    return Backend(id, Address(host, port))


def catalog(*services: Service, rejections: Iterable[Rejection] = ()) -> Catalog:
    """A catalog of ``services`` keyed by name (typed loosely for Catalog's dict converter)."""
    by_name: Any = {s.name: s for s in services}
    return Catalog(by_name, frozenset(rejections))


class ParsePortTests(SynchronousTestCase):
    """``parse_port`` reads a listen port and explains what is wrong with a bad one."""

    def test_valid(self) -> None:
        """Numbers 1-65535 are ports, whitespace around them is ignored."""
        for text, port in [("80", 80), ("1", 1), ("65535", 65535), (" 8080\n", 8080), ("080", 80)]:
            with self.subTest(text=text):
                self.assertEqual(parse_port(text), port)

    def test_invalid(self) -> None:
        """Anything else is refused with a one-line reason quoting the value."""
        for text, reason in [
            ("abc", "port 'abc' is not a number"),
            ("", "port '' is not a number"),
            ("-1", "port '-1' is not a number"),
            ("8 0", "port '8 0' is not a number"),
            ("\u0663", "port '\u0663' is not a number"),
            ("80.0", "port '80.0' is not a number"),
            ("123456", "port '123456' is outside 1-65535"),
            ("9" * 5000, f"port {'9' * 200 + '... (5000 bytes)'!r} is outside 1-65535"),
            ("0", "port '0' is outside 1-65535"),
            ("65536", "port '65536' is outside 1-65535"),
        ]:
            with self.subTest(text=text):
                error = self.assertRaises(BadValueError, parse_port, text)
                self.assertEqual(str(error), reason)

    @derandomized
    @given(st.integers(min_value=1, max_value=65535), st.sampled_from(["", " ", "\n", "\t "]))
    def test_any_port(self, port: int, space: str) -> None:
        """Every valid port, however padded, reads back as itself."""
        self.assertEqual(parse_port(f"{space}{port}{space}"), port)

    @derandomized
    @given(st.text(max_size=8))
    def test_never_crashes(self, text: str) -> None:
        """Any text either is a port or raises BadValueError, never anything else."""
        try:
            port = parse_port(text)
        except BadValueError as e:
            self.assertNotIn("\n", str(e))
        else:
            self.assertTrue(1 <= port <= 65535)


class ParsePortsTests(SynchronousTestCase):
    """``parse_ports`` reads the port key: one port, or several separated by commas."""

    def test_valid(self) -> None:
        """One port, or distinct ports in the order written."""
        for text, ports in [("80", (80,)), ("80,443", (80, 443)), (" 443 , 80\n", (443, 80))]:
            with self.subTest(text=text):
                self.assertEqual(parse_ports(text), ports)

    def test_invalid(self) -> None:
        """A bad element or a repeated port is refused, quoting the whole value."""
        for text, reason in [
            ("http", "port 'http' is not a number"),
            ("80,", "ports '80,': port '' is not a number"),
            ("80,99999", "ports '80,99999': port '99999' is outside 1-65535"),
            ("80,443,80", "ports '80,443,80' list 80 twice"),
        ]:
            with self.subTest(text=text):
                self.assertEqual(str(self.assertRaises(BadValueError, parse_ports, text)), reason)


class ParseAddressesTests(SynchronousTestCase):
    """``parse_addresses`` reads a backend value of one port or several."""

    def test_valid(self) -> None:
        """One address per port, on the same host, in the order written."""
        for text, addresses in [
            ("10.0.0.1:8080", (Address("10.0.0.1", 8080),)),
            ("10.0.0.1:8080,8443", (Address("10.0.0.1", 8080), Address("10.0.0.1", 8443))),
            ("[::1]:2,1", (Address("::1", 2), Address("::1", 1))),
        ]:
            with self.subTest(text=text):
                self.assertEqual(parse_addresses(text), addresses)

    def test_invalid(self) -> None:
        """A bad port anywhere in the list refuses the value, quoting it."""
        for text, detail in [
            ("10.0.0.1:8080,", "port '' is not a number"),
            ("10.0.0.1:8080,x", "port 'x' is not a number"),
            ("::1:80,81", "an IPv6 address needs brackets"),
        ]:
            with self.subTest(text=text):
                error = self.assertRaises(BadValueError, parse_addresses, text)
                self.assertEqual(str(error), f"value {text!r} is not host:port: {detail}")

    def test_one_address_only(self) -> None:
        """``parse_address`` (used for options) refuses a value of several ports."""
        error = self.assertRaises(BadValueError, parse_address, "10.0.0.1:80,443")
        self.assertEqual(str(error), "value '10.0.0.1:80,443' is not host:port: it has 2 ports")


class ParseAddressTests(SynchronousTestCase):
    """``parse_address`` reads a backend's ``host:port``."""

    def test_valid(self) -> None:
        """IPv4, hostnames and bracketed IPv6, with surrounding whitespace ignored."""
        for text, address in [
            ("10.0.0.1:8080", Address("10.0.0.1", 8080)),
            (" 10.0.0.1:80\n", Address("10.0.0.1", 80)),
            ("localhost:1", Address("localhost", 1)),
            ("web-1.example.com:443", Address("web-1.example.com", 443)),
            ("my_container:5000", Address("my_container", 5000)),
            ("[::1]:80", Address("::1", 80)),
            ("[2001:DB8::1]:8080", Address("2001:db8::1", 8080)),
        ]:
            with self.subTest(text=text):
                self.assertEqual(parse_address(text), address)

    def test_invalid(self) -> None:
        """Values that are not host:port are refused with the value quoted and the reason."""
        for text, detail in [
            ("1.2.3.4:99999", "port '99999' is outside 1-65535"),
            ("1.2.3.4:0", "port '0' is outside 1-65535"),
            ("1.2.3.4", "no ':port'"),
            ("1.2.3.4:", "port '' is not a number"),
            ("1.2.3.4:http", "port 'http' is not a number"),
            (":80", "'' is not a hostname or IP address"),
            ("1.2.3.999:80", "'1.2.3.999' is not an IPv4 address"),
            ("-web:80", "'-web' is not a hostname or IP address"),
            ("a..b:80", "'a..b' is not a hostname or IP address"),
            ("we b:80", "'we b' is not a hostname or IP address"),
            ("::1:80", "an IPv6 address needs brackets"),
            ("[zz::1]:80", "'[zz::1]' is not an IPv6 address"),
            ("[1.2.3.4]:80", "'[1.2.3.4]' is not an IPv6 address"),
            ("abc", "no ':port'"),
        ]:
            with self.subTest(text=text):
                error = self.assertRaises(BadValueError, parse_address, text)
                self.assertEqual(str(error), f"value {text!r} is not host:port: {detail}")

    def test_one_line(self) -> None:
        """A value with a newline inside still gives a one-line reason."""
        error = self.assertRaises(BadValueError, parse_address, "a\nb:80")
        self.assertNotIn("\n", str(error))

    @derandomized
    @given(
        st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
        st.integers(min_value=1, max_value=65535),
    )
    def test_any_ip(self, host: str, port: int) -> None:
        """Every IP address with every port reads back as that address."""
        address = parse_address(f"{host}:{port}")
        self.assertEqual(str(address), f"{host}:{port}")

    @derandomized
    @given(st.text(max_size=24))
    def test_never_crashes(self, text: str) -> None:
        """Any text either is an address or raises BadValueError with a one-line reason."""
        try:
            parse_address(text)
        except BadValueError as e:
            self.assertNotIn("\n", str(e))


class BuildCatalogTests(SynchronousTestCase):
    """``build_catalog`` applies docker-register's layout rules to the keys under the prefix."""

    def test_cases(self) -> None:
        """Each layout rule, as a table of keys, previous catalog and expected catalog."""
        web = Service("web", 80, frozenset({be("abc", "10.0.0.1", 8080)}))
        cases: list[tuple[str, dict[str, Entry], Catalog, Catalog]] = [
            ("nothing", {}, Catalog(), Catalog()),
            (
                "one service",
                entries(("/backends/web/port", "80"), ("/backends/web/abc", "10.0.0.1:8080")),
                Catalog(),
                catalog(web),
            ),
            (
                "service name with a slash",
                entries(
                    ("/backends/jwilder/whoami/port", "8000"),
                    ("/backends/jwilder/whoami/abc", "10.0.0.2:8000"),
                ),
                Catalog(),
                catalog(Service("jwilder/whoami", 8000, frozenset({be("abc", "10.0.0.2", 8000)}))),
            ),
            (
                "port and no backends is a service with no backends",
                entries(("/backends/web/port", "80")),
                Catalog(),
                catalog(Service("web", 80)),
            ),
            (
                "key directly under the prefix",
                entries(("/backends/port", "80"), ("/backends/abc", "10.0.0.1:80")),
                Catalog(),
                catalog(
                    rejections=[
                        Rejection("/backends/port", "key is not inside a service directory"),
                        Rejection("/backends/abc", "key is not inside a service directory"),
                    ]
                ),
            ),
            (
                "keys outside the prefix are ignored",
                entries(
                    ("/other/web/port", "81"),
                    ("/backends-x/web/port", "82"),
                    ("/backends", "x"),
                    ("/backends/web/port", "80"),
                    ("/backends/web/abc", "10.0.0.1:8080"),
                ),
                Catalog(),
                catalog(web),
            ),
            (
                "bad port key",
                entries(("/backends/web/port", "abc")),
                Catalog(),
                catalog(
                    rejections=[Rejection("/backends/web/port", "port 'abc' is not a number")]
                ),
            ),
            (
                "bad backend values are left out, the good ones kept",
                entries(
                    ("/backends/web/port", "80"),
                    ("/backends/web/abc", "10.0.0.1:8080"),
                    ("/backends/web/bad", "1.2.3.4:99999"),
                ),
                Catalog(),
                catalog(
                    web,
                    rejections=[
                        Rejection(
                            "/backends/web/bad",
                            "value '1.2.3.4:99999' is not host:port: "
                            "port '99999' is outside 1-65535",
                        )
                    ],
                ),
            ),
            (
                "backends and no port key, never seen before",
                entries(("/backends/web/abc", "10.0.0.1:8080")),
                Catalog(),
                catalog(rejections=[Rejection("/backends/web", "no port key")]),
            ),
            (
                "backends and no port key keep the last known port",
                entries(("/backends/web/abc", "10.0.0.1:8080")),
                catalog(Service("web", 80)),
                catalog(web),
            ),
            (
                "backends and a bad port key keep the last known port",
                entries(("/backends/web/port", "http"), ("/backends/web/abc", "10.0.0.1:8080")),
                catalog(Service("web", 80)),
                catalog(
                    web,
                    rejections=[Rejection("/backends/web/port", "port 'http' is not a number")],
                ),
            ),
            (
                "no backends and no port key: the service is gone",
                {},
                catalog(web),
                Catalog(),
            ),
            (
                "two services on one port: the previous holder keeps it",
                entries(
                    ("/backends/api/port", "80", 5),
                    ("/backends/web/port", "80", 9),
                ),
                catalog(Service("web", 80)),
                catalog(
                    Service("web", 80),
                    rejections=[
                        Rejection("/backends/api", "port 80 is already used by service web")
                    ],
                ),
            ),
            (
                "two new services on one port: the older port key wins",
                entries(
                    ("/backends/web/port", "80", 9),
                    ("/backends/api/port", "80", 5),
                ),
                Catalog(),
                catalog(
                    Service("api", 80),
                    rejections=[
                        Rejection("/backends/web", "port 80 is already used by service api")
                    ],
                ),
            ),
            (
                "two new services on one port at the same index: the first name wins",
                entries(("/backends/web/port", "80", 5), ("/backends/api/port", "80", 5)),
                Catalog(),
                catalog(
                    Service("api", 80),
                    rejections=[
                        Rejection("/backends/web", "port 80 is already used by service api")
                    ],
                ),
            ),
            (
                "a service whose port key expired keeps its port against a newcomer",
                entries(
                    ("/backends/web/abc", "10.0.0.1:8080"),
                    ("/backends/api/port", "80", 2),
                ),
                catalog(Service("web", 80)),
                catalog(
                    web,
                    rejections=[
                        Rejection("/backends/api", "port 80 is already used by service web")
                    ],
                ),
            ),
            (
                "registrator's <service>-<port> services are separate services",
                entries(
                    ("/backends/web-80/port", "80"),
                    ("/backends/web-80/abc", "10.0.0.1:8080"),
                    ("/backends/web-443/port", "443"),
                    ("/backends/web-443/abc", "10.0.0.1:8443"),
                ),
                Catalog(),
                catalog(
                    Service("web-80", 80, frozenset({be("abc", "10.0.0.1", 8080)})),
                    Service("web-443", 443, frozenset({be("abc", "10.0.0.1", 8443)})),
                ),
            ),
            (
                "a service moves to a new port",
                entries(("/backends/web/port", "81"), ("/backends/web/abc", "10.0.0.1:8080")),
                catalog(web),
                catalog(Service("web", 81, web.backends)),
            ),
        ]
        for name, keys, previous, expected in cases:
            for prefix in ("/backends", "/backends/"):
                with self.subTest(name, prefix=prefix):
                    self.assertEqual(build_catalog(prefix, keys, previous), expected)

    def test_multi_port(self) -> None:
        """Services of several ports, as a table of keys, previous and expected catalog."""
        web80 = Service("web:80", 80, frozenset({be("abc", "10.0.0.1", 8080)}))
        web443 = Service("web:443", 443, frozenset({be("abc", "10.0.0.1", 8443)}))
        two_ports = entries(
            ("/backends/web/port", "80,443"), ("/backends/web/abc", "10.0.0.1:8080,8443")
        )
        cases: list[tuple[str, dict[str, Entry], Catalog, Catalog]] = [
            ("one service per listen port", two_ports, Catalog(), catalog(web80, web443)),
            (
                "ports pair up by position, whatever their order",
                entries(
                    ("/backends/web/port", "443,80"),
                    ("/backends/web/abc", "10.0.0.1:8443,8080"),
                    ("/backends/web/v6", "[::1]:9443,9080"),
                ),
                Catalog(),
                catalog(
                    Service("web:80", 80, web80.backends | {be("v6", "::1", 9080)}),
                    Service("web:443", 443, web443.backends | {be("v6", "::1", 9443)}),
                ),
            ),
            (
                "a service name with a slash",
                entries(
                    ("/backends/jwilder/whoami/port", "80,443"),
                    ("/backends/jwilder/whoami/abc", "10.0.0.1:8080,8443"),
                ),
                Catalog(),
                catalog(
                    Service("jwilder/whoami:80", 80, web80.backends),
                    Service("jwilder/whoami:443", 443, web443.backends),
                ),
            ),
            (
                "a backend with fewer ports than the service is rejected, the others kept",
                entries(
                    ("/backends/web/port", "80,443,8443"),
                    ("/backends/web/abc", "10.0.0.1:8080,8443,9443"),
                    ("/backends/web/short", "10.0.0.2:8080,8443"),
                ),
                Catalog(),
                catalog(
                    web80,
                    web443,
                    Service("web:8443", 8443, frozenset({be("abc", "10.0.0.1", 9443)})),
                    rejections=[
                        Rejection(
                            "/backends/web/short",
                            "value '10.0.0.2:8080,8443' has 2 ports, "
                            "service web listens on 3 (80,443,8443)",
                        )
                    ],
                ),
            ),
            (
                "a backend of several ports in a service of one is rejected",
                entries(("/backends/web/port", "80"), ("/backends/web/abc", "10.0.0.1:1,2")),
                Catalog(),
                catalog(
                    Service("web", 80),
                    rejections=[
                        Rejection(
                            "/backends/web/abc",
                            "value '10.0.0.1:1,2' has 2 ports, service web listens on 1 (80)",
                        )
                    ],
                ),
            ),
            (
                "a backend of one port in a service of several is rejected",
                entries(("/backends/web/port", "80,443"), ("/backends/web/abc", "10.0.0.1:8080")),
                Catalog(),
                catalog(
                    Service("web:80", 80),
                    Service("web:443", 443),
                    rejections=[
                        Rejection(
                            "/backends/web/abc",
                            "value '10.0.0.1:8080' has 1 port, service web listens on 2 (80,443)",
                        )
                    ],
                ),
            ),
            (
                "a bad port list is rejected like a bad port",
                entries(("/backends/web/port", "80,x")),
                Catalog(),
                catalog(
                    rejections=[
                        Rejection("/backends/web/port", "ports '80,x': port 'x' is not a number")
                    ]
                ),
            ),
            (
                "a port taken by another service: only that port is refused",
                entries(
                    ("/backends/api/port", "443", 5),
                    ("/backends/web/port", "80,443", 9),
                    ("/backends/web/abc", "10.0.0.1:8080,8443"),
                ),
                Catalog(),
                catalog(
                    Service("api", 443),
                    web80,
                    rejections=[
                        Rejection("/backends/web", "port 443 is already used by service api")
                    ],
                ),
            ),
            (
                "a service directory named like a part keeps its name",
                entries(
                    ("/backends/web:443/port", "8443"),
                    ("/backends/web/port", "80,443"),
                    ("/backends/web/abc", "10.0.0.1:8080,8443"),
                ),
                Catalog(),
                catalog(
                    Service("web:443", 8443),
                    web80,
                    rejections=[
                        Rejection(
                            "/backends/web",
                            "port 443 would be service web:443, "
                            "but /backends/web:443 is a service of its own",
                        )
                    ],
                ),
            ),
            (
                "port key expired: the ports are kept, in the order backends show",
                entries(
                    ("/backends/web/abc", "10.0.0.1:8080,8443"),
                    ("/backends/web/new", "10.0.0.2:9080,9443"),
                ),
                catalog(web80, web443),
                catalog(
                    Service("web:80", 80, web80.backends | {be("new", "10.0.0.2", 9080)}),
                    Service("web:443", 443, web443.backends | {be("new", "10.0.0.2", 9443)}),
                ),
            ),
            (
                "port key expired and no backend shows the order",
                entries(("/backends/web/new", "10.0.0.2:9080,9443")),
                catalog(web80, web443),
                catalog(rejections=[Rejection("/backends/web", "no port key")]),
            ),
            (
                "one port becomes two",
                two_ports,
                catalog(Service("web", 80, frozenset({be("abc", "10.0.0.1", 8080)}))),
                catalog(web80, web443),
            ),
        ]
        for name, keys, previous, expected in cases:
            with self.subTest(name):
                self.assertEqual(build_catalog("/backends", keys, previous), expected)

    def test_root_prefix(self) -> None:
        """With the root as prefix, the first path segment is the service."""
        keys = entries(("/web/port", "80"), ("/web/abc", "10.0.0.1:8080"))
        for prefix in ("/", ""):
            with self.subTest(prefix=prefix):
                catalog = build_catalog(prefix, keys, Catalog())
                self.assertEqual(set(catalog.services), {"web"})

    @derandomized
    @given(st.randoms(use_true_random=False))
    def test_order_does_not_matter(self, rng: random.Random) -> None:
        """The same keys listed in any order give an equal catalog."""
        rows = [
            ("/backends/web/port", "80", 4),
            ("/backends/web/a", "10.0.0.1:80", 5),
            ("/backends/web/b", "10.0.0.2:80", 6),
            ("/backends/api/port", "80", 7),
            ("/backends/api/x", "bad", 8),
            ("/backends/db/y", "10.0.0.3:5432", 9),
            ("/backends/cache/port", "6379", 10),
        ]
        expected = build_catalog("/backends", entries(*rows), Catalog())
        rng.shuffle(rows)
        self.assertEqual(build_catalog("/backends", entries(*rows), Catalog()), expected)
        self.assertIsInstance(expected.rejections, frozenset)
