"""A hostile registry: ddiscover in this process, in front of a real etcd behind a front
(:mod:`tests.integration.etcd_front`) that answers with broken replies on demand, and hostile
data written through the real etcd.

Each fault test, for etcd v2 and v3: a held proxied connection, then the front answers the
next requests with the fault and cuts the watches in flight; once the fault was served, a new
backend written to etcd must be in the catalog within :data:`DEADLINE` seconds, the listener of
the existing service never closes, the held connection still echoes, and ``/health`` says
``in_sync`` again afterwards.  A failure names the fault, the API and what ``/health`` said.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, ClassVar, cast

from hyperlink import URL
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.integration.backends import InProcessBackend
from tests.integration.etcd_front import EtcdFront, Fault
from tests.integration.harness import InProcessTestCase
from tests.integration.support import HeldConnection, eventually, free_port, greeting

DEADLINE = 15.0
"""Seconds a change written after a fault may take to reach the catalog."""

LONGEST_LINE = 1000
"""The longest log line hostile data may produce (a clipped value plus its byte count)."""


def _get_health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
            body: dict[str, Any] = json.loads(reply.read())
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
        body["http"] = error.code
    else:
        body["http"] = 200
    return body


class _HostileBase(InProcessTestCase):
    #: Only the concrete classes per API are collected, not these bases.
    __test__ = False
    timeout = 60
    settings: ClassVar[dict[str, Any]] = {"check_interval": 0.2, "rise": 1, "watch_timeout": 2.0}

    def setUp(self) -> None:
        super().setUp()
        self.stats_port = free_port()

    def start_behind(self, front: EtcdFront | None = None) -> None:
        """Start ddiscover on ``front`` (or straight on etcd) with the stats port open."""
        overrides: dict[str, Any] = {"stats_port": self.stats_port}
        if front is not None:
            overrides["etcd"] = (URL.from_text(front.listen()),)
            self.addCleanup(lambda: defer.Deferred.fromCoroutine(front.stop()))
        self.start(**overrides)

    async def read_health(self) -> dict[str, Any]:
        """The body of ``GET /health``, with the HTTP status as ``http``."""
        body: dict[str, Any] = await deferToThread(_get_health, self.stats_port)
        return body

    def registry_lines(self) -> list[str]:
        """The log lines of the registry, each cut to 300 characters (no HTTP noise)."""
        noise = ("Starting factory", "Stopping factory", "EtcdFront", "GET /health")
        return [line[:300] for line in self.logged if not any(n in line for n in noise)]

    def backend_ids(self, service: str) -> set[str]:
        """The ids of ``service``'s backends in the proxy's catalog now."""
        frontend = self.listeners.frontends().get(service)
        return {backend.id for backend in frontend.servers} if frontend else set()

    async def serving_web(self) -> HeldConnection:
        """Register ``web`` on one backend, wait until it serves, and hold a connection."""
        first = InProcessBackend.started(self, "first")
        self.register("web", self.port, a=first.address)
        await self.all_up(first.address)
        self.assertEqual(await greeting(self.port), "first")
        return await HeldConnection.open(self.port)

    async def sees_within_deadline(self, what: str, seen: Any) -> None:
        """Wait for ``seen()``; on timeout fail naming ``what`` and what /health says."""
        start = time.monotonic()
        while not seen():
            if not self.listeners.frontends()["web"].listening:
                self.fail(f"{what}: the listener of web closed")
            if time.monotonic() - start > DEADLINE:
                body = await self.read_health()
                self.fail(
                    f"{what}: not seen within {DEADLINE:.0f} s; watcher state "
                    f"{self.watcher.state.value}, alive {self.watcher.alive}; /health says "
                    f"{body}; last lines: {self.registry_lines()[-12:]}"
                )
            await deferLater(cast(IReactorTime, reactor), 0.05, lambda: None)


class _FaultMixin(_HostileBase):
    async def recovers_from(self, fault: Fault, times: int, watch_only: bool) -> None:
        front = EtcdFront(self.etcd.url)
        self.start_behind(front)
        held = await self.serving_web()
        what = (
            f"etcd {self.api} after {fault.value} ({times}x{' on watches' if watch_only else ''})"
        )

        front.fail(fault, times=times, watch_only=watch_only)
        front.cut()
        await eventually(lambda: len(front.served) >= 1, timeout=DEADLINE)
        later = InProcessBackend.started(self, "later")
        self.put("/backends/web/c", later.address)
        await self.sees_within_deadline(what, lambda: "c" in self.backend_ids("web"))

        self.assertTrue(self.listeners.frontends()["web"].listening, what)
        self.assertEqual(await held.echo(b"still here\n"), b"still here\n", what)
        await held.close()
        start = time.monotonic()
        body = await self.read_health()
        while not (body["http"] == 200 and body["registry"]["in_sync"]):
            if time.monotonic() - start > DEADLINE:
                self.fail(f"{what}: /health never said in sync again: {body}")
            body = await self.read_health()
        self.assertEqual(body["registry"]["state"], "watching", what)


def _fault_test(fault: Fault, times: int, watch_only: bool) -> Any:
    async def test(self: _FaultMixin) -> None:
        await self.recovers_from(fault, times, watch_only)

    test.__doc__ = f"After {fault.value}, a new backend in etcd is seen within seconds."
    return test


for _fault in Fault:
    setattr(_FaultMixin, f"test_{_fault.name.lower()}", _fault_test(_fault, 2, False))
    setattr(_FaultMixin, f"test_{_fault.name.lower()}_on_watch", _fault_test(_fault, 1, True))


class V2FaultTests(_FaultMixin):
    """The faults, against etcd's v2 API."""

    __test__ = True

    api = "v2"


class V3FaultTests(_FaultMixin):
    """The faults, against etcd's v3 JSON gateway."""

    __test__ = True

    api = "v3"


class _DataMixin(_HostileBase):
    """Hostile data through the real etcd: other services keep working, one line each."""

    def lines_naming(self, key: str) -> list[str]:
        return [line for line in self.logged if key in line]

    async def others_keep_working(self, bad_key: str, most: int = 1, least: int = 1) -> None:
        """``web`` still serves, a service added now serves, one short line names the key."""
        self.assertEqual(await greeting(self.port), "first")
        second = InProcessBackend.started(self, "second")
        other = free_port()
        self.register("api", other, b=second.address)
        await self.all_up(second.address)
        self.assertEqual(await greeting(other), "second")
        body = await self.read_health()
        self.assertTrue(body["registry"]["in_sync"], body)
        long = [line[:200] + "..." for line in self.logged if len(line) > LONGEST_LINE]
        self.assertEqual(long, [], f"log lines over {LONGEST_LINE} characters")
        # A rejection is logged once it has lasted a second (a transient one is not).
        await eventually(lambda: len(self.lines_naming(bad_key[:60])) >= least, timeout=5)
        named = self.lines_naming(bad_key[:60])
        self.assertTrue(least <= len(named) <= most, f"lines naming {bad_key[:60]}...: {named}")

    async def test_key_600_levels_deep(self) -> None:
        """A key 600 levels deep, written before ddiscover starts, leaves the rest serving."""
        deep = "/backends/deep/" + "a/" * 600 + "x"
        self.put(deep, "127.0.0.1:1")
        self.start_behind()
        await self.serving_web()
        await self.others_keep_working("/backends/deep/a/a/a")

    async def test_key_600_levels_deep_while_watching(self) -> None:
        """A key 600 levels deep, written while ddiscover watches, leaves the rest serving."""
        self.start_behind()
        await self.serving_web()
        self.put("/backends/deep/" + "a/" * 600 + "x", "127.0.0.1:1")
        await self.others_keep_working("/backends/deep/a/a/a")

    async def test_port_key_with_1500_ports(self) -> None:
        """A port key listing 1,500 ports is rejected or budgeted; the rest keeps serving."""
        self.start_behind()
        await self.serving_web()
        base = free_port()
        self.put("/backends/many/port", ",".join(str(base + i) for i in range(1500)))
        # Under this process's high fd limit a budget may admit them all: then no line.
        await self.others_keep_working("/backends/many/", least=0)

    async def test_1mb_value(self) -> None:
        """A 1 MB backend value is refused in one clipped line; the rest keeps serving."""
        self.start_behind()
        await self.serving_web()
        self.put("/backends/web/huge", "1" * 1_000_000)
        await self.others_keep_working("/backends/web/huge")


class V2DataTests(_DataMixin):
    """Hostile data through etcd's v2 API."""

    __test__ = True

    api = "v2"


class V3DataTests(_DataMixin):
    """Hostile data through etcd's v3 API."""

    __test__ = True

    api = "v3"
