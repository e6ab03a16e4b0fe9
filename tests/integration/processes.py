"""Child processes for the fault tests: ``twistd -n ddiscover``, the load client, the backends.

Each is spawned on the test's reactor, reports on stdout, and is SIGKILLed (by PID) in the
test's cleanup.  :class:`Ddiscover` also counts the process's own file descriptors in
``/proc`` and queries its stats port.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sys
from typing import Any, cast

import treq
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ConnectError, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport, IReactorProcess
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.integration.procfs import open_fds
from tests.integration.support import (
    ROOT,
    entrypoint,
    environment,
    eventually,
    eventually_async,
    free_port,
)

PRLIMIT = "/usr/bin/prlimit"


class _Lines(protocol.ProcessProtocol):
    """Keeps a child's output; stdout lines are also queued for :meth:`Child.line`.

    When the child ends, ``exit_code`` (-1 if a signal ended it) and ``exit_signal`` are set,
    then ``ended`` fires.
    """

    def __init__(self) -> None:
        self.output = bytearray()
        self.lines: defer.DeferredQueue[str] = defer.DeferredQueue()
        self._partial = b""
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.exit_code = -1
        self.exit_signal: int | None = None

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.output += data
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for line in lines:
            self.lines.put(line.decode())

    def errReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.output += data

    def processEnded(self, reason: Failure) -> None:  # noqa: N802 (Twisted's name)
        value = reason.value
        assert isinstance(value, ProcessDone | ProcessTerminated)
        if value.exitCode is not None:
            self.exit_code = value.exitCode
        self.exit_signal = value.signal
        self.ended.callback(None)


class Child:
    """A child process whose stdout lines the test reads; SIGKILLed in the test's cleanup."""

    def __init__(self, test: TestCase, argv: list[str], env: dict[str, str]) -> None:
        self._protocol = _Lines()
        self.transport: IProcessTransport = cast(IReactorProcess, reactor).spawnProcess(
            self._protocol, argv[0], argv, env=env, path=str(ROOT)
        )
        self.pid: int = self.transport.pid
        test.addCleanup(self.kill)

    @property
    def output(self) -> str:
        """Everything the child wrote so far, stdout and stderr."""
        return self._protocol.output.decode(errors="replace")

    @property
    def running(self) -> bool:
        """Whether the child has not ended yet."""
        return not self._protocol.ended.called

    @property
    def exit_signal(self) -> int | None:
        """The signal that ended the child, if one did."""
        return self._protocol.exit_signal

    async def ended(self) -> int:
        """Wait until the child ends; its exit code, or -1 if a signal ended it."""
        await self._protocol.ended
        return self._protocol.exit_code

    async def line(self, timeout: float = 60.0) -> str:
        """The next line the child prints on stdout; fails the test after ``timeout``."""
        waiting = self._protocol.lines.get()
        waiting.addTimeout(timeout, reactor)
        try:
            line: str = await waiting
        except defer.TimeoutError:
            raise AssertionError(f"no line within {timeout}s; output: {self.output}") from None
        return line

    async def report(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next stdout line, decoded as a JSON object."""
        report: dict[str, Any] = json.loads(await self.line(timeout))
        return report

    def send(self, text: str) -> None:
        """Write ``text`` to the child's stdin."""
        self.transport.write(text.encode())

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the child, by PID."""
        os.kill(self.pid, signum)

    async def kill(self) -> None:
        """SIGKILL the child (continuing it first if it was stopped) and wait until it ends."""
        if self.running:
            os.kill(self.pid, signal.SIGKILL)
            await self._protocol.ended


async def echo_server(test: TestCase, mode: str, name: str) -> tuple[Child, str]:
    """Start :mod:`tests.integration.echo_server` in ``mode``; (the child, its host:port)."""
    child = Child(
        test, [sys.executable, "-m", "tests.integration.echo_server", mode, name], environment()
    )
    return child, f"127.0.0.1:{int(await child.line(10))}"


def load_client(test: TestCase, *args: object) -> Child:
    """Start :mod:`tests.integration.load_client` with ``args``."""
    argv = [sys.executable, "-m", "tests.integration.load_client", *map(str, args)]
    return Child(test, argv, environment())


class Ddiscover(Child):
    """``twistd -n ddiscover`` as started by the Dockerfile, with a stats port of its own.

    ``nofile`` runs it under ``prlimit --nofile=N:N`` (soft and hard), so it cannot raise it.
    """

    def __init__(
        self, test: TestCase, etcd_url: str, *args: str, nofile: int | None = None
    ) -> None:
        self.stats_port = free_port()
        argv = [
            *entrypoint(),
            "--interface", "127.0.0.1", "--stats-port", str(self.stats_port), *args,
        ]  # fmt: skip
        if nofile is not None:
            argv = [PRLIMIT, f"--nofile={nofile}:{nofile}", *argv]
        super().__init__(test, argv, environment(ETCD_HOST=etcd_url))

    async def status(self) -> tuple[int, dict[str, Any]]:
        """``GET /health``: the status code and the decoded body."""
        response = await treq.get(
            f"http://127.0.0.1:{self.stats_port}/health", persistent=False, timeout=5
        )
        body: dict[str, Any] = await response.json()
        return response.code, body

    async def health(self) -> dict[str, Any]:
        """``GET /health``, decoded; fails the test on any status but 200."""
        code, body = await self.status()
        assert code == 200, code
        return body

    async def rows(self) -> dict[str, dict[str, str]]:
        """The rows of ``/;csv``, by ``service/server`` (``web/FRONTEND``, ``web/BACKEND`` too)."""
        response = await treq.get(
            f"http://127.0.0.1:{self.stats_port}/;csv", persistent=False, timeout=5
        )
        assert response.code == 200, response.code
        text = (await response.text()).lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {f"{row['pxname']}/{row['svname']}": row for row in rows}

    async def serving(self) -> dict[str, Any]:
        """Wait until the stats port answers 200 and the registry is being watched; the body
        of that answer."""
        body: dict[str, Any] = {}

        async def watching() -> bool:
            nonlocal body
            if not self.running:
                raise AssertionError(f"twistd exited: {self.output}")
            try:
                code, body = await self.status()
            except ConnectError:
                return False
            return code == 200 and body["registry"]["state"] == "watching"

        await eventually_async(watching, timeout=20)
        return body

    async def all_up(self, *servers: str) -> None:
        """Wait until each ``service/server`` row says UP."""

        async def up() -> bool:
            rows = await self.rows()
            return all(rows.get(server, {}).get("status") == "UP" for server in servers)

        await eventually_async(up, timeout=20)

    async def connections(self, count: int, timeout: float = 30.0) -> None:
        """Wait until ``/health`` reports exactly ``count`` proxied connections."""
        latest = -1

        async def reached() -> bool:
            nonlocal latest
            latest = (await self.health())["connections"]
            return bool(latest == count)

        try:
            await eventually_async(reached, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"{latest} connections, not {count}") from None

    async def fds_at_most(self, limit: int) -> None:
        """Wait until the process has at most ``limit`` file descriptors open."""
        await eventually(lambda: open_fds(self.pid) <= limit, timeout=10)
