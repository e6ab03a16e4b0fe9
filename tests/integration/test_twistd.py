"""``twistd -n ddiscover`` as a real process, started with the Dockerfile's own ENTRYPOINT:
option errors, forwarding end to end, and a graceful SIGTERM that drains open connections."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, cast

import treq
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ConnectError, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.integration.backends import ProcessBackend
from tests.integration.etcd import EtcdProcess
from tests.integration.support import (
    HeldConnection,
    eventually_async,
    free_port,
    greeting,
    refuses,
)

ROOT = Path(__file__).resolve().parents[2]


def entrypoint() -> list[str]:
    """The Dockerfile's ENTRYPOINT, with ``twistd`` resolved next to this Python."""
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.MULTILINE)
    assert match is not None, "Dockerfile has no exec-form ENTRYPOINT"
    argv: list[str] = json.loads(match.group(1))
    assert argv[0] == "twistd"
    return [str(Path(sys.executable).with_name("twistd")), *argv[1:]]


def environment(**extra: str) -> dict[str, str]:
    """This environment without ETCD_*, with the checkout first on the path (for the plugin)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


class _Collect(protocol.ProcessProtocol):
    """Collects a child's output and fires ``ended`` with its exit code."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.output += data

    def errReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.output += data

    def processEnded(self, reason: Failure) -> None:  # noqa: N802 (Twisted's name)
        value = reason.value
        assert isinstance(value, ProcessDone | ProcessTerminated)
        self.signal = value.signal
        self.ended.callback(value.exitCode if value.exitCode is not None else -1)


class OptionErrorTests(TestCase):
    """Bad options stop twistd with a one-line error naming the option and the value."""

    async def run_twistd(self, *args: str, **env: str) -> tuple[int, list[str]]:
        out, err, code = await getProcessOutputAndValue(
            entrypoint()[0], [*entrypoint()[1:], *args], env=environment(**env)
        )
        lines = (out + err).decode().strip().splitlines()
        return code, lines

    async def test_bad_value(self) -> None:
        """--rise 0 exits 1 and the last line names the option, the rule and the value."""
        code, lines = await self.run_twistd("--etcd", "127.0.0.1:2379", "--rise", "0")
        self.assertEqual(code, 1)
        self.assertTrue(
            lines[-1].endswith(": --rise must be a whole number from 1 to 1000, got '0'"),
            lines[-1],
        )

    async def test_no_etcd(self) -> None:
        """Without --etcd or ETCD_HOST, twistd says how to name etcd."""
        code, lines = await self.run_twistd()
        self.assertEqual(code, 1)
        self.assertTrue(
            lines[-1].endswith(": --etcd is required (or set ETCD_HOST), e.g. 10.0.0.5:2379")
        )


class TwistdTests(TestCase):
    """A real ``twistd`` process in front of real backends registered in a real etcd."""

    timeout = 60

    def setUp(self) -> None:
        self.etcd = EtcdProcess.started(self)
        self.stats_port = free_port()
        self.port = free_port()
        self.process = _Collect()
        args = [
            "--interface", "127.0.0.1", "--stats-port", str(self.stats_port),
            "--check-interval", "0.2", "--rise", "1", "--drain-timeout", "5",
        ]  # fmt: skip
        argv = [*entrypoint(), *args]
        self.transport = cast(IReactorProcess, reactor).spawnProcess(
            self.process, argv[0], argv, env=environment(ETCD_HOST=self.etcd.url)
        )
        self.addCleanup(self.kill)

    async def kill(self) -> None:
        if not self.process.ended.called:
            os.kill(self.transport.pid, signal.SIGKILL)
            await self.process.ended

    async def health(self) -> tuple[int, dict[str, Any]]:
        response = await treq.get(f"http://127.0.0.1:{self.stats_port}/health", persistent=False)
        return response.code, await response.json()

    async def wait_for_health(self) -> dict[str, Any]:
        """Poll /health until twistd answers 200 (it takes a moment to import and bind)."""
        body: dict[str, Any] = {}

        async def healthy() -> bool:
            nonlocal body
            if self.process.ended.called:
                self.fail(f"twistd exited: {self.process.output.decode()}")
            try:
                code, body = await self.health()
            except ConnectError:
                return False
            return code == 200 and body["registry"]["state"] == "watching"

        await eventually_async(healthy, timeout=20)
        return body

    async def test_serves_and_drains_on_sigterm(self) -> None:
        """twistd forwards a registered service; SIGTERM stops accepting, drains, exits 0."""
        body = await self.wait_for_health()
        self.assertEqual(body["status"], "serving")
        backend = ProcessBackend("real")
        self.addCleanup(backend.kill)
        self.etcd.put("/backends/web/port", str(self.port), ttl=15)
        self.etcd.put("/backends/web/r1", backend.address, ttl=15)

        async def reaches_backend() -> bool:
            try:
                return await greeting(self.port) == "real"
            except OSError:
                return False

        await eventually_async(reaches_backend)
        code, body = await self.health()
        self.assertEqual((code, body["services"], body["listening"]), (200, 1, 1))

        held = await HeldConnection.open(self.port)
        self.assertEqual(held.name, "real")

        os.kill(self.transport.pid, signal.SIGTERM)

        await eventually_async(lambda: refuses(self.port))
        self.assertFalse(self.process.ended.called, "exited before the open connection ended")
        self.assertEqual(await held.echo(b"still here\n"), b"still here\n")
        await held.close()
        code = await self.process.ended
        self.assertEqual(code, 0, (self.process.signal, self.process.output.decode()[-3000:]))
        output = self.process.output.decode()
        self.assertIn("service web appeared on port", output)
        self.assertRegex(output, r"draining \d+ connections for up to 5.0s")
        self.assertIn("received SIGTERM", output)
