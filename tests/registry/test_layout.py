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
    parse_port,
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
            ("9" * 5000, f"port {'9' * 5000!r} is outside 1-65535"),
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
