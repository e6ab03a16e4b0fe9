"""``twistd -n ddiscover`` as a real process, started with the Dockerfile's own ENTRYPOINT:
option errors, forwarding end to end, and a graceful SIGTERM that drains open connections."""

from __future__ import annotations

import json
import signal
import sys

import treq
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.integration.backends import ProcessBackend
from tests.integration.etcd import EtcdProcess
from tests.integration.processes import Ddiscover
from tests.integration.support import (
    ROOT,
    HeldConnection,
    entrypoint,
    environment,
    eventually_async,
    free_port,
    greeting,
    refuses,
)


class OptionErrorTests(TestCase):
    """Bad options stop twistd with a one-line error naming the option and the value."""

    async def run_twistd(self, *args: str, **env: str) -> tuple[int, list[str]]:
        out, err, code = await getProcessOutputAndValue(
            entrypoint()[0], [*entrypoint()[1:], *args], env=environment(**env)
        )
        lines = (out + err).decode().strip().splitlines()
        return code, lines

    async def test_bad_value(self) -> None:
        """--rise 0 exits 1 with one line naming the option, the rule and the value: not
        twistd's 60-line usage text, which is all ``docker logs`` would show."""
        code, lines = await self.run_twistd("--etcd", "127.0.0.1:2379", "--rise", "0")
        self.assertEqual(
            (code, lines),
            (
                1,
                [
                    "twistd ddiscover: --rise must be a whole number from 1 to 1000, got '0' "
                    "(see twistd ddiscover --help)"
                ],
            ),
        )

    async def test_no_etcd(self) -> None:
        """Without --etcd or ETCD_HOST, twistd says how to name etcd."""
        code, lines = await self.run_twistd()
        self.assertEqual(
            (code, lines),
            (
                1,
                [
                    "twistd ddiscover: --etcd is required (or set ETCD_HOST), e.g. 10.0.0.5:2379 "
                    "(see twistd ddiscover --help)"
                ],
            ),
        )


class TwistdTests(TestCase):
    """A real ``twistd`` process in front of real backends registered in a real etcd."""

    timeout = 60

    def setUp(self) -> None:
        self.etcd = EtcdProcess.started(self)
        self.port = free_port()
        self.process = Ddiscover(
            self, self.etcd.url, "--check-interval", "0.2", "--rise", "1", "--drain-timeout", "5"
        )

    async def test_serves_and_drains_on_sigterm(self) -> None:
        """twistd forwards a registered service; SIGTERM stops accepting, drains, exits 0."""
        body = await self.process.serving()
        self.assertEqual(body["status"], "serving")
        backend = ProcessBackend.started(self, "real")
        self.etcd.put("/backends/web/port", str(self.port), ttl=15)
        self.etcd.put("/backends/web/r1", backend.address, ttl=15)

        async def reaches_backend() -> bool:
            try:
                return await greeting(self.port) == "real"
            except OSError:
                return False

        await eventually_async(reaches_backend)
        code, body = await self.process.status()
        self.assertEqual((code, body["services"], body["listening"]), (200, 1, 1))

        held = await HeldConnection.open(self.port)
        self.assertEqual(held.name, "real")

        self.process.signal(signal.SIGTERM)

        await eventually_async(lambda: refuses(self.port))
        self.assertTrue(self.process.running, "exited before the open connection ended")
        code, body = await self.process.status()
        self.assertEqual((code, body["status"]), (503, "stopping"))
        self.assertEqual(await held.echo(b"still here\n"), b"still here\n")
        await held.close()
        code = await self.process.ended()
        self.assertEqual(code, 0, (self.process.exit_signal, self.process.output[-3000:]))
        output = self.process.output
        self.assertIn("service web appeared on port", output)
        self.assertRegex(output, r"draining \d+ connections for up to 5.0s")
        self.assertIn("received SIGTERM", output)


class QuietLogTests(TestCase):
    """At ``--log-level info`` an idle ddiscover logs nothing per request."""

    timeout = 60

    async def test_nothing_per_request(self) -> None:
        """Stats hits on every path, health checks and etcd connections add no line; Twisted's
        own per-connection and per-listener lines never appear."""
        etcd = EtcdProcess.started(self)
        port = free_port()
        process = Ddiscover(self, etcd.url, "--check-interval", "0.2", "--rise", "1")
        await process.serving()
        backend = ProcessBackend.started(self, "real")
        etcd.put("/backends/web/port", str(port), ttl=30)
        etcd.put("/backends/web/r1", backend.address, ttl=30)
        await process.all_up("web/r1")
        before = process.output
        for _ in range(10):
            for path in ("/health", "/;csv", "/;json", "/metrics", "/"):
                response = await treq.get(
                    f"http://127.0.0.1:{process.stats_port}{path}", persistent=False, timeout=5
                )
                await response.content()
            self.assertEqual(await greeting(port), "real")
        await process.all_up("web/r1")
        self.assertEqual(process.output[len(before) :].splitlines(), [])
        self.assertIn("service web: listening on", before)
        for chatter in ("Starting factory", "Stopping factory", " starting on ", '"GET '):
            self.assertNotIn(chatter, process.output)


def healthcheck() -> list[str]:
    """The Dockerfile's HEALTHCHECK command, with ``python`` resolved to this Python."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    [command] = [line.strip()[4:] for line in lines if line.strip().startswith("CMD [")]
    python, *args = json.loads(command)
    assert python == "python", python
    return [sys.executable, *args]


class HealthcheckTests(TestCase):
    """The Dockerfile's HEALTHCHECK, run as Docker would, against a real twistd ddiscover."""

    timeout = 60

    async def check(self, port: int) -> tuple[int, list[str]]:
        """Run the healthcheck against the stats port ``port``: exit status and output."""
        argv = healthcheck()
        env = environment(DDISCOVER_HEALTH_URL=f"http://127.0.0.1:{port}/health")
        out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=env)
        return code, (out + err).decode().strip().splitlines()

    async def test_healthy_and_not(self) -> None:
        """0 while ddiscover serves; 1 with one line naming the URL when nothing answers."""
        etcd = EtcdProcess.started(self)
        process = Ddiscover(self, etcd.url)
        await process.serving()
        self.assertEqual(await self.check(process.stats_port), (0, []))
        port = free_port()
        code, lines = await self.check(port)
        self.assertEqual(code, 1)
        [line] = lines
        self.assertTrue(line.startswith(f"http://127.0.0.1:{port}/health: "), line)
        self.assertIn("Connection refused", line)
