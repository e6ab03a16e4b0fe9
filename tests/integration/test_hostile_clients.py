"""What already holds against hostile names and addresses, end to end through a real etcd.

Unit tests cover each piece (``tests/stats``, ``tests/registry/test_layout.py``); these prove
the pieces together: a service whose name carries markup, quotes, commas and a newline is
escaped on the real stats page, round-trips through the CSV, and forges no log line; and
backends given as a hostname or as ``[::1]`` are proxied to.
"""

from __future__ import annotations

import csv
import io
import urllib.request
from typing import Any, ClassVar, cast

from twisted.internet import defer, reactor
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.internet.threads import deferToThread

from tests.integration.backends import GreeterFactory, InProcessBackend
from tests.integration.harness import InProcessTestCase
from tests.integration.support import eventually, free_port, greeting

HOSTILE = "x<script>alert(\"1\")</script>,'q'\nServer web/a is DOWN"
"""A service name with markup, both quotes, a comma, and a newline that would forge a line."""


def _fetch(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
        text: str = reply.read().decode()
        return text


class HostileNamesTests(InProcessTestCase):
    """A hostile service name, through real etcd, on the real stats port and in the log."""

    settings: ClassVar[dict[str, Any]] = {"check_interval": 0.2, "rise": 1}

    async def test_hostile_name_is_escaped_round_trips_and_forges_no_line(self) -> None:
        stats_port = free_port()
        self.start(stats_port=stats_port)
        backend = InProcessBackend.started(self, "hostile")
        self.register(HOSTILE, self.port, a=backend.address)
        await self.all_up(backend.address)
        self.assertEqual(await greeting(self.port), "hostile")

        page: str = await deferToThread(_fetch, stats_port, "/;norefresh")
        self.assertNotIn("<script>", page)
        self.assertIn("&lt;script&gt;", page)
        table: str = await deferToThread(_fetch, stats_port, "/;csv")
        names = {row[0] for row in csv.reader(io.StringIO(table.lstrip("# ")))}
        self.assertIn(HOSTILE, names, "the CSV does not round-trip the name")
        forged = [line for line in self.logged if line.startswith("Server web/a is DOWN")]
        self.assertEqual(forged, [], "a newline in a name started a log line of its own")


class HostileAddressesTests(InProcessTestCase):
    """Backends given as a hostname, and as a bracketed IPv6 literal, are proxied to."""

    settings: ClassVar[dict[str, Any]] = {"check_interval": 0.2, "rise": 1}

    async def test_hostname_backend(self) -> None:
        backend = InProcessBackend.started(self, "named")
        self.start()
        port = backend.address.rpartition(":")[2]
        self.register("web", self.port, a=f"localhost:{port}")
        await eventually(lambda: bool(self.listeners.frontends().get("web")))
        self.assertEqual(await self._greeting_when_up(), "named")

    async def test_ipv6_literal_backend(self) -> None:
        tcp = cast(IReactorTCP, reactor)
        listening: IListeningPort = tcp.listenTCP(0, GreeterFactory("six"), interface="::1")
        self.addCleanup(lambda: defer.maybeDeferred(listening.stopListening))
        self.start()
        self.register("web", self.port, a=f"[::1]:{listening.getHost().port}")  # type: ignore[attr-defined]
        self.assertEqual(await self._greeting_when_up(), "six")

    async def _greeting_when_up(self) -> str:
        await eventually(
            lambda: any(
                self.health.is_up(b.address)
                for b in getattr(self.listeners.frontends().get("web"), "servers", {})
            )
        )
        return await greeting(self.port)
