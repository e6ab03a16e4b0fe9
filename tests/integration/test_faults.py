"""Endurance and faults: thousands of connections, slow-loris, fd exhaustion, and backends that
die, stall, blackhole or flap.  See docs/faults.md for what each test proves and why.

The load tests run ``twistd -n ddiscover`` as a real process, so the file descriptors and RSS
read from ``/proc`` are its own; clients and backends are child processes too.  The backend
fault tests build ddiscover in this process, to read its health state at the moment things
happen.
"""

from __future__ import annotations

import re
import signal
import time
from typing import Any, ClassVar, cast

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.task import LoopingCall, deferLater
from twisted.trial.unittest import TestCase

from ddiscover.catalog import Address
from ddiscover.health.probe import EndpointFactory, tcp_endpoint_factory
from ddiscover.health.result import CheckStatus
from ddiscover.health.state import HealthRecord
from ddiscover.proxy.counters import Counters
from tests.integration.backends import InProcessBackend
from tests.integration.etcd import EtcdProcess
from tests.integration.faulty import (
    BlackholeBackend,
    FlappingBackend,
    OutcomeLog,
    WatchedStream,
    transitions_by_rise_fall,
)
from tests.integration.harness import InProcessTestCase, address
from tests.integration.processes import Ddiscover, echo_server, load_client
from tests.integration.procfs import open_fds, rss_kib
from tests.integration.support import eventually, eventually_async, free_port, greeting

MANY = 8000
LORIS = 3000
LORIS_MAXCONN = 1000
LORIS_IDLE = 2.0
FLOOD = 300
NOFILE = 128
INTERVAL = 0.2


class LoadTests(TestCase):
    """``twistd -n ddiscover`` under thousands of held, idle or excess connections."""

    timeout = 120

    def setUp(self) -> None:
        self.etcd = EtcdProcess.started(self)
        self.port = free_port()

    async def serve(self, *args: str, nofile: int | None = None) -> Ddiscover:
        """Start twistd with a fast check interval and ``args``; wait until it watches etcd."""
        ddiscover = Ddiscover(
            self, self.etcd.url, "--check-interval", str(INTERVAL), "--rise", "1", *args,
            nofile=nofile,
        )  # fmt: skip
        await ddiscover.serving()
        return ddiscover

    async def web_on(self, ddiscover: Ddiscover, name: str) -> None:
        """Register service ``web`` on one echo backend process; wait until it is UP."""
        _, backend = await echo_server(self, "echo", name)
        self.etcd.put("/backends/web/port", str(self.port))
        self.etcd.put(f"/backends/web/{name}", backend)
        await ddiscover.all_up(f"web/{name}")

    async def test_8000_connections_are_held_and_released(self) -> None:
        """8,000 proxied connections echo and stay open, then close without leaking an fd."""
        ddiscover = await self.serve("--maxconn", str(MANY + 100))
        await self.web_on(ddiscover, "many")
        fds, rss = open_fds(ddiscover.pid), rss_kib(ddiscover.pid)

        clients = load_client(self, "hold", self.port, MANY, 256)
        opened = await clients.report(timeout=90)
        self.assertEqual(opened["outcomes"], {"ok": MANY}, opened)
        await ddiscover.connections(MANY)
        held_fds, held_rss = open_fds(ddiscover.pid), rss_kib(ddiscover.pid)
        self.assertGreaterEqual(held_fds, 2 * MANY)
        row = (await ddiscover.rows())["web/many"]
        self.assertEqual((row["scur"], row["stot"]), (str(MANY), str(MANY)))

        clients.send("close\n")
        self.assertEqual(await clients.report(), {"closed": MANY})
        await ddiscover.connections(0)
        await ddiscover.fds_at_most(fds)
        print(
            f"\n    {MANY} connections opened in {opened['seconds']} s; ddiscover fds "
            f"{fds} -> {held_fds} -> {open_fds(ddiscover.pid)}, RSS {rss} -> {held_rss} KiB "
            f"({(held_rss - rss) * 1024 // MANY} bytes per connection)"
        )

    async def test_slow_loris_is_closed_by_idle_timeout_and_waits_at_maxconn(self) -> None:
        """Idle clients beyond maxconn wait in the backlog, each is closed by the idle timeout,
        and the stats port answers within a second throughout."""
        ddiscover = await self.serve(
            "--maxconn", str(LORIS_MAXCONN), "--idle-timeout", str(LORIS_IDLE)
        )
        await self.web_on(ddiscover, "patient")

        clients = load_client(self, "idle", self.port, LORIS, 60)
        finished = defer.ensureDeferred(clients.report(timeout=90))
        slowest, busiest, states = 0.0, 0, set()
        while not finished.called:
            asked = time.monotonic()
            frontend = (await ddiscover.rows())["web/FRONTEND"]
            slowest = max(slowest, time.monotonic() - asked)
            busiest = max(busiest, int(frontend["scur"]))
            states.add(frontend["status"])
            await deferLater(reactor, 0.05, lambda: None)
        report = await finished

        self.assertEqual(report["outcomes"], {"ok": LORIS}, report)
        self.assertEqual(report["ends"], {"reset": LORIS}, report)
        # The client stamps each greeting when its process, busy with thousands of sockets,
        # gets to it, which can be well after ddiscover read it (over 0.8 s on a loaded
        # 2-core machine): allow for that lag; a close before half the timeout still fails.
        self.assertGreaterEqual(report["idle_min"], LORIS_IDLE / 2, report)
        self.assertLess(report["idle_max"], LORIS_IDLE + 2.0, report)
        self.assertGreater(report["waited_max"], LORIS_IDLE, report)
        self.assertIn("FULL", states)
        self.assertLessEqual(busiest, LORIS_MAXCONN)
        self.assertLess(slowest, 1.0)
        await ddiscover.connections(0)
        self.assertIn(f"maxconn {LORIS_MAXCONN} reached", ddiscover.output)
        print(
            f"\n    {LORIS} idle clients, maxconn {LORIS_MAXCONN}: at most {busiest} proxied, "
            f"longest wait {report['waited_max']} s, closed {report['idle_min']}-"
            f"{report['idle_max']} s after the greeting; slowest stats answer "
            f"{slowest * 1000:.0f} ms"
        )

    async def test_fd_exhaustion_is_survived_without_blaming_the_backend(self) -> None:
        """Under a 128-fd limit a flood of 300 clients leaves the backend UP and twistd serving."""
        # A maxconn far above what fits, so descriptors do run out (the derived one fits).
        ddiscover = await self.serve("--fall", "2", "--maxconn", "4096", nofile=NOFILE)
        self.assertIn("--maxconn 4096 needs about", ddiscover.output)
        await self.web_on(ddiscover, "steady")

        flood = load_client(self, "hold", self.port, FLOOD, FLOOD)
        outcomes = (await flood.report())["outcomes"]
        self.assertEqual(sum(outcomes.values()), FLOOD)
        self.assertLess(outcomes.get("ok", 0), NOFILE // 2, outcomes)
        await eventually(lambda: "failed on our side" in ddiscover.output)
        # Keep the fds exhausted for more than fall checks, so a miscounted EMFILE would show.
        await deferLater(reactor, 3 * INTERVAL, lambda: None)
        flood.send("close\n")
        await flood.report()

        await ddiscover.connections(0)
        row = (await ddiscover.rows())["web/steady"]
        self.assertEqual((row["status"], row["chkfail"], row["chkdown"]), ("UP", "0", "0"))
        self.assertNotIn("is DOWN", ddiscover.output)
        self.assertEqual([await greeting(self.port) for _ in range(3)], ["steady"] * 3)
        print(f"\n    flood of {FLOOD} under --nofile={NOFILE}: {dict(outcomes)}")

    async def test_flood_waits_under_derived_maxconn(self) -> None:
        """Under a 128-fd limit, maxconn is derived (30) and a flood of 300 never runs ddiscover
        out of descriptors: no connect fails on our side, and the frontend shows FULL."""
        ddiscover = await self.serve("--fall", "2", nofile=NOFILE)
        self.assertIn("maxconn 30, derived from the open-files limit 128", ddiscover.output)
        await self.web_on(ddiscover, "steady")
        flood = load_client(self, "hold", self.port, FLOOD, FLOOD)
        await ddiscover.connections(30)

        async def full() -> bool:
            return (await ddiscover.rows())["web/FRONTEND"]["status"] == "FULL"

        # /health is live; the CSV comes from a snapshot up to a second old (docs/stats.md).
        await eventually_async(full, timeout=5)
        flood.send("close\n")
        outcomes = (await flood.report())["outcomes"]
        self.assertNotIn("failed on our side", ddiscover.output)
        print(f"\n    flood of {FLOOD} under --nofile={NOFILE}, derived maxconn: {outcomes}")


class BackendFaultTests(InProcessTestCase):
    """ddiscover in this process in front of backends that die, stall, blackhole or flap."""

    settings: ClassVar[dict[str, Any]] = {
        "check_interval": INTERVAL,
        "rise": 2,
        "fall": 2,
        "connect_timeout": 0.3,
        "drain_timeout": 0.5,
        "access_log": True,
    }

    def setUp(self) -> None:
        super().setUp()
        self.outcomes = OutcomeLog()

    def start(self, endpoint_for: EndpointFactory | None = None, **overrides: Any) -> None:
        """Start ddiscover with every check and passive report recorded in ``outcomes``."""
        checks = self.outcomes.endpoints(tcp_endpoint_factory(cast(IReactorTCP, reactor)))
        super().start(endpoint_for or checks, **overrides)
        self.patch(self.health, "report", self.outcomes.reporting(self.health.report))

    async def serve_web(self, **backends: str) -> None:
        """Register service ``web`` on these ``id=host:port`` backends; wait until all are UP."""
        self.register("web", self.port, **backends)
        await self.all_up(*backends.values())

    def server(self, host_port: str) -> Counters:
        """The counters of the ``web`` backend at ``host_port``."""
        servers = self.listeners.frontends()["web"].servers
        return next(c for b, c in servers.items() if b.address == address(host_port))

    def state_lines(self, server: str) -> list[str]:
        """``UP``/``DOWN`` for each state line logged about ``web/<server>``, in order."""
        prefix = f"Server web/{server} is "
        return [
            line[len(prefix) :].split(",", 1)[0] for line in self.logged if line.startswith(prefix)
        ]

    def access_lines(self, server: str) -> list[str]:
        """The access-log lines of the connections that ended on ``web/<server>``."""
        line = re.compile(rf"^\S+ web/{server} -?\d+/\d+ \d+/\d+ \S\S$")
        return [text for text in self.logged if line.match(text)]

    async def test_backend_killed_mid_transfer_resets_the_client(self) -> None:
        """A backend SIGKILLed while streaming resets its client at once, and scur returns to 0."""
        streamer, backend = await echo_server(self, "stream", "streamer")
        self.start()
        await self.serve_web(s=backend)
        stream = await WatchedStream.open(self.port, b"left unread by the backend\n")
        await eventually(lambda: stream.received > 1_000_000)

        streamer.signal(signal.SIGKILL)
        killed = time.monotonic()
        await stream.ended
        assert stream.reason is not None
        self.assertTrue(stream.reason.check(ConnectionLost), stream.reason)
        self.assertLess(stream.ended_at - killed, 1.0)
        frontend = self.listeners.frontends()["web"]
        await eventually(lambda: frontend.counters.scur == 0)
        self.assertEqual((frontend.counters.srv_abrt, self.server(backend).srv_abrt), (1, 1))
        await eventually(lambda: not self.health.is_up(address(backend)))
        self.assertEqual(self.state_lines("s"), ["UP", "DOWN"])
        access = self.access_lines("s")
        self.assertEqual(len(access), 1, access)
        self.assertTrue(access[0].endswith(" SD"), access)

    async def test_stopped_backend_passes_checks_and_idle_timeout_closes_it(self) -> None:
        """A SIGSTOPped backend stays UP (the kernel accepts), and the idle timeout resets
        the connection that stalls on it."""
        frozen, backend = await echo_server(self, "echo", "frozen")
        self.start(idle_timeout=1.0)
        await self.serve_web(f=backend)
        frozen.signal(signal.SIGSTOP)
        checked_before = len(self.outcomes.of(address(backend)))

        stream = await WatchedStream.open(self.port, b"hello\n")
        sent = time.monotonic()
        await stream.ended
        stalled = stream.ended_at - sent

        assert stream.reason is not None
        self.assertTrue(stream.reason.check(ConnectionLost), stream.reason)
        self.assertEqual(stream.received, 0)
        self.assertGreaterEqual(stalled, 1.0 - 0.05)
        self.assertLess(stalled, 1.5)
        during = self.outcomes.of(address(backend))[checked_before:]
        self.assertGreaterEqual(len(during), 3)
        self.assertEqual({outcome.status for outcome in during}, {CheckStatus.L4OK})
        self.assertTrue(self.health.is_up(address(backend)))
        self.assertEqual(self.state_lines("f"), ["UP"])
        access = self.access_lines("f")
        self.assertEqual(len(access), 1, access)
        self.assertTrue(access[0].endswith(" 6/0 cD"), access)

    async def test_blackholed_backend_times_out_and_clients_are_redispatched(self) -> None:
        """Connects to a blackholed backend time out after connect-timeout, its clients reach
        the other backend, and it goes DOWN with L4TOUT."""
        good = InProcessBackend.started(self, "good")
        hole = BlackholeBackend("hole")
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(hole.stop()))
        self.start(check_interval=1.0, connect_timeout=0.3)
        await self.serve_web(g=good.address, h=hole.address)

        await hole.blackhole()
        answers: list[tuple[str, float]] = []
        while self.health.is_up(address(hole.address)):
            asked = time.monotonic()
            answers.append((await greeting(self.port), time.monotonic() - asked))

        self.assertEqual({name for name, _ in answers}, {"good"})
        slow = [took for _, took in answers if took >= 0.3]
        self.assertGreaterEqual(len(slow), 1, answers)
        self.assertLess(max(slow), 0.3 * 2 + 0.3)
        self.assertEqual(self.server(hole.address).wredis, len(slow))
        record = self.health.record(address(hole.address))
        assert record is not None and record.last is not None
        self.assertIs(record.last.status, CheckStatus.L4TOUT)
        self.assertEqual(self.state_lines("h"), ["UP", "DOWN"])
        self.assertEqual(
            len([line for line in self.logged if "web/h is DOWN, reason: Layer4 timeout" in line]),
            1,
        )
        await eventually(
            lambda: any(
                outcome.check and outcome.status is CheckStatus.L4TOUT
                for outcome in self.outcomes.of(address(hole.address))
            )
        )
        self.assertEqual([await greeting(self.port) for _ in range(4)], ["good"] * 4)

    async def test_flapping_backend_follows_rise_and_fall_exactly(self) -> None:
        """A backend toggling faster than rise/fall changes state exactly as rise/fall says,
        and no connection is sent to it while it is DOWN."""
        stable = InProcessBackend.started(self, "stable")
        flap = FlappingBackend("flap")
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(flap.stop()))
        self.start()
        await self.serve_web(s=stable.address, f=flap.address)
        changes: list[tuple[bool, int]] = []

        def changed(changed_address: Address, old: HealthRecord, new: HealthRecord) -> None:
            if changed_address == address(flap.address):
                changes.append((new.is_up, self.server(flap.address).stot))

        self.health.subscribe(changed)
        toggling = LoopingCall(lambda: defer.Deferred.fromCoroutine(flap.toggle()))
        toggled = toggling.start(0.7 * INTERVAL, now=True)
        answers: list[str] = []
        while len(changes) < 6:
            try:
                answers.append(await greeting(self.port))
            except ConnectionResetError:
                answers.append("reset")
            self.assertLess(len(answers), 20_000, "fewer than 6 state changes")
        toggling.stop()
        await toggled

        outcomes = self.outcomes.of(address(flap.address))
        expected = transitions_by_rise_fall(outcomes, rise=2, fall=2)
        observed = [up for up, _ in changes]
        self.assertEqual(observed, expected[1:])
        logged = ["UP"] + ["UP" if up else "DOWN" for up in observed]
        self.assertEqual(self.state_lines("f"), logged)
        now = (None, self.server(flap.address).stot)
        for (up, sent), (_, sent_by_next_change) in zip(changes, [*changes[1:], now], strict=True):
            if not up:
                self.assertEqual(sent_by_next_change, sent, "a connection went to a DOWN server")
        reset = [line for line in self.access_lines("f") if line.endswith(" SD")]
        self.assertEqual(answers.count("reset"), len(reset))
        self.assertEqual(set(answers) - {"reset"}, {"stable", "flap"})
        print(
            f"\n    {len(outcomes)} counted outcomes, {len(observed)} state changes, "
            f"{len(answers)} clients ({answers.count('reset')} reset by the flapping backend)"
        )
