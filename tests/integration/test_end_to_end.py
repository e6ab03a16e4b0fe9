"""The whole of ddiscover in this process on the real reactor, against a real etcd process and
real loopback backends: what an operator sees, asserted on the bytes clients receive."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from ddiscover.registry.watcher import WatchState
from tests.integration.backends import InProcessBackend, ProcessBackend
from tests.integration.harness import InProcessTestCase, address
from tests.integration.support import (
    HeldConnection,
    eventually,
    eventually_async,
    exchange,
    free_port,
    greeting,
    refuses,
)

INTERVAL = 0.2
FALL = 2


class EndToEndTests(InProcessTestCase):
    """ddiscover built by ``build_service`` on the real reactor, driven only through etcd v2."""

    settings: ClassVar[dict[str, Any]] = {
        "check_interval": INTERVAL,
        "rise": 2,
        "fall": FALL,
        "connect_timeout": 1.0,
        "drain_timeout": 1.0,
    }

    def listening(self, service: str) -> bool:
        frontend = self.listeners.frontends().get(service)
        return frontend is not None and frontend.listening

    async def serve_web(self, **backends: InProcessBackend | ProcessBackend) -> None:
        """Start ddiscover with service ``web`` on these backends and wait until all are UP."""
        self.start()
        self.register("web", self.port, **{key: b.address for key, b in backends.items()})
        await self.all_up(*(b.address for b in backends.values()))

    async def test_service_appears_and_disappears_live(self) -> None:
        """A service written to etcd is listened for at once; deleting it stops the listener."""
        backend = InProcessBackend.started(self, "alpha")
        self.start()
        await eventually(lambda: self.watcher.state is WatchState.WATCHING)
        written = time.monotonic()
        self.register("web", self.port, a1=backend.address)
        await eventually(lambda: self.listening("web"))
        opened = time.monotonic() - written
        await self.all_up(backend.address)
        self.assertEqual(await greeting(self.port), "alpha")
        print(f"\n    etcd write -> listener open: {opened * 1000:.1f} ms")
        self.assertLess(opened, 1.0)

        self.delete("/backends/web", recursive=True)
        await eventually(lambda: "web" not in self.listeners.frontends())
        await eventually_async(lambda: refuses(self.port))

    async def test_round_robin_over_two_backends(self) -> None:
        """Consecutive connections alternate between the two UP backends."""
        one, two = InProcessBackend.started(self, "one"), InProcessBackend.started(self, "two")
        await self.serve_web(b1=one, b2=two)
        names = [await greeting(self.port) for _ in range(6)]
        self.assertEqual(set(names), {"one", "two"})
        self.assertEqual(names[0::2], [names[0]] * 3)
        self.assertEqual(names[1::2], [names[1]] * 3)

    async def test_killed_backend_goes_down_and_no_client_fails(self) -> None:
        """A SIGKILLed backend is DOWN within fall x inter (+1 inter) and no client notices."""
        alive, doomed = (
            ProcessBackend.started(self, "alive"),
            ProcessBackend.started(self, "doomed"),
        )
        await self.serve_web(a=alive, d=doomed)
        doomed.kill()
        killed = time.monotonic()
        down_after: float | None = None
        reached: list[str] = []
        while down_after is None or len(reached) < 40:
            reached.append(await greeting(self.port))
            if down_after is None and not self.health.is_up(address(doomed.address)):
                down_after = time.monotonic() - killed
        print(f"\n    backend killed -> DOWN: {down_after * 1000:.0f} ms, "
              f"{len(reached)} client connections, all answered")  # fmt: skip
        self.assertLessEqual(down_after, (FALL + 1) * INTERVAL + 0.3)
        self.assertEqual(set(reached), {"alive"})
        counters = self.listeners.frontends()["web"].counters
        self.assertGreaterEqual(counters.wredis, 1)

    async def test_half_close_reaches_the_backend_and_the_reply_comes_back(self) -> None:
        """A client that shuts down its write side still gets the backend's whole reply."""
        backend = ProcessBackend.started(self, "echo")
        self.start()
        self.register("web", self.port, e=backend.address)
        await self.all_up(backend.address)
        payload = b"x" * 300_000
        reply = await exchange(self.port, payload, half_close=True)
        self.assertEqual(reply, b"echo\n" + payload)

    async def test_etcd_killed_and_restarted_without_closing_listeners(self) -> None:
        """With etcd dead, every listener stays and forwards; after restart, changes flow again."""
        one, two = InProcessBackend.started(self, "one"), InProcessBackend.started(self, "two")
        self.start()
        self.register("web", self.port, b1=one.address)
        await self.all_up(one.address)

        self.etcd.kill()
        await eventually(lambda: self.watcher.state is WatchState.UNREACHABLE)
        for _ in range(5):
            self.assertEqual(await greeting(self.port), "one")

        self.etcd.restart()
        await eventually(lambda: self.watcher.state is WatchState.WATCHING)
        self.put("/backends/web/b2", two.address)
        await self.all_up(two.address)
        self.assertEqual({await greeting(self.port) for _ in range(4)}, {"one", "two"})
        stopped = [line for line in self.logged if "stopped listening" in line]
        self.assertEqual(stopped, [])
        unreachable = [line for line in self.logged if "unreachable" in line]
        self.assertEqual(len(unreachable), 1, unreachable)

    async def test_bad_values_are_ignored_and_good_services_keep_working(self) -> None:
        """Bad keys are rejected one by one; the good service listens and forwards."""
        backend = InProcessBackend.started(self, "good")
        other_port = free_port()
        self.start()
        self.register("web", self.port, g=backend.address)
        self.put("/backends/web/broken", "abc")
        self.put("/backends/web/far", "1.2.3.4:99999")
        self.put("/backends/api/port", "http")
        self.put("/backends/api/x", backend.address)
        self.put("/backends/clash/port", str(self.port))
        self.put("/backends/clash/c", backend.address)
        self.put("/backends/other/port", str(other_port))
        await eventually(lambda: self.listening("other"))
        await self.all_up(backend.address)
        self.assertEqual(await greeting(self.port), "good")
        self.assertEqual(sorted(self.listeners.frontends()), ["other", "web"])
        rejections = self.watcher.catalog.rejections
        self.assertEqual(
            {r.key for r in rejections},
            {
                "/backends/web/broken",
                "/backends/web/far",
                "/backends/api/port",
                "/backends/api",
                "/backends/clash",
            },
        )
        clash = next(r for r in rejections if r.key == "/backends/clash")
        self.assertEqual(clash.reason, f"port {self.port} is already used by service web")
        lines = [f"ignoring {r.key}: {r.reason}" for r in rejections]
        # A rejection is logged once it persisted for a second (the registrar's next write
        # may be about to fix it), so wait for the lines, then check each came once.
        await eventually(lambda: all(line in self.logged for line in lines))
        for line in lines:
            self.assertEqual(self.logged.count(line), 1, line)

    async def test_killed_backend_goes_down_by_checks_alone(self) -> None:
        """With no traffic at all, checks take a SIGKILLed backend DOWN in fall x inter (+1)."""
        alive, doomed = (
            ProcessBackend.started(self, "alive"),
            ProcessBackend.started(self, "doomed"),
        )
        await self.serve_web(a=alive, d=doomed)
        doomed.kill()
        took = await eventually(lambda: not self.health.is_up(address(doomed.address)))
        print(f"\n    backend killed -> DOWN by checks alone: {took * 1000:.0f} ms")
        self.assertLessEqual(took, (FALL + 1) * INTERVAL + 0.1)
        self.assertEqual({await greeting(self.port) for _ in range(10)}, {"alive"})
        self.assertEqual(self.listeners.frontends()["web"].counters.wredis, 0)

    async def test_removal_from_etcd_spares_open_connections(self) -> None:
        """A deregistered backend, then a removed service: open connections carry on."""
        one, two = ProcessBackend.started(self, "one"), ProcessBackend.started(self, "two")
        await self.serve_web(b1=one, b2=two)
        held = await HeldConnection.open(self.port)
        first = held.name
        other = "two" if first == "one" else "one"

        self.delete("/backends/web/b1" if first == "one" else "/backends/web/b2")
        await eventually(lambda: len(self.watcher.catalog.services["web"].backends) == 1)
        self.assertEqual({await greeting(self.port) for _ in range(4)}, {other})
        self.assertEqual(await held.echo(b"after deregistration\n"), b"after deregistration\n")

        self.delete("/backends/web", recursive=True)
        await eventually(lambda: "web" not in self.listeners.frontends())
        await eventually_async(lambda: refuses(self.port))
        self.assertEqual(await held.echo(b"after removal\n"), b"after removal\n")
        await held.close()


class EndToEndV3Tests(EndToEndTests):
    """The same behaviour with ddiscover reading etcd through the v3 API."""

    api = "v3"
