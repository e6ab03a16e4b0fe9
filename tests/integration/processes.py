"""Child processes for the fault tests: ``twistd -n ddiscover``, the load client, the backends.

Each is spawned on the test's reactor, reports on stdout, and is SIGKILLed (by PID) in the
test's cleanup.  :class:`Ddiscover` also reads the process's own file descriptors and RSS
from ``/proc`` and queries its stats port.
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

from tests.integration.support import eventually, eventually_async, free_port
from tests.integration.test_twistd import ROOT, entrypoint, environment

PRLIMIT = "/usr/bin/prlimit"


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


_TCP_STATES = {
    "01": "ESTABLISHED",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "0A": "LISTEN",
}


def fd_kinds(pid: int) -> dict[str, int]:
    """What process ``pid``'s descriptors are, counted by kind.

    TCP sockets are named by state and ports (``tcp LISTEN :8080``, ``tcp ESTABLISHED ->
    :2379``: the local port of a connection is left out, so connections to one server count
    together); other descriptors by what ``/proc/PID/fd`` links to (``pipe``,
    ``anon_inode:[eventpoll]``, a path).
    """
    sockets: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                name = _TCP_STATES.get(state, state)
                if name == "LISTEN":
                    sockets[inode] = f"tcp LISTEN :{int(local.rsplit(':')[1], 16)}"
                else:
                    sockets[inode] = f"tcp {name} -> :{int(remote.rsplit(':')[1], 16)}"
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            kind = sockets.get(target[8:-1], "socket (not TCP)")
        elif target.startswith("pipe:"):
            kind = "pipe"
        else:
            kind = target
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid``, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


class _Lines(protocol.ProcessProtocol):
    """Keeps a child's output; stdout lines are also queued for :meth:`Child.line`."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.lines: defer.DeferredQueue[str] = defer.DeferredQueue()
        self._partial = b""
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.output += data
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for line in lines:
            self.lines.put(line.decode())

    def errReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.output += data

    def processEnded(self, reason: Failure) -> None:  # noqa: N802 (Twisted's name)
        assert reason.check(ProcessDone, ProcessTerminated)
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

    async def health(self) -> dict[str, Any]:
        """``GET /health``, decoded; fails the test on any status but 200."""
        response = await treq.get(
            f"http://127.0.0.1:{self.stats_port}/health", persistent=False, timeout=5
        )
        assert response.code == 200, response.code
        body: dict[str, Any] = await response.json()
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

    async def serving(self) -> None:
        """Wait until the stats port answers and the registry is being watched."""

        async def watching() -> bool:
            if not self.running:
                raise AssertionError(f"twistd exited: {self.output}")
            try:
                body = await self.health()
            except ConnectError:
                return False
            return bool(body["registry"]["state"] == "watching")

        await eventually_async(watching, timeout=20)

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
