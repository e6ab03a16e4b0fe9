"""Real loopback backends for end-to-end tests: in-process Twisted servers and child processes.

Both kinds greet each client with ``<name>\\n`` and then echo, so a test can tell which backend
a proxied connection reached from the first line it reads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import cast

from twisted.internet import defer, protocol, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort, IReactorTCP, ITCPTransport
from twisted.trial.unittest import TestCase

_SCRIPT = Path(__file__).with_name("echo_server.py")


class Greeter(protocol.Protocol):
    """Greets with the factory's name, then echoes; the factory keeps it while it is open."""

    def connectionMade(self) -> None:
        factory = self.factory
        assert isinstance(factory, GreeterFactory)
        factory.connections.append(self)
        cast(ITCPTransport, self.transport).write(factory.name + b"\n")

    def dataReceived(self, data: bytes) -> None:
        cast(ITCPTransport, self.transport).write(data)

    def connectionLost(self, reason: object = None) -> None:
        factory = self.factory
        assert isinstance(factory, GreeterFactory)
        factory.connections.remove(self)


class GreeterFactory(protocol.ServerFactory):
    """Makes :class:`Greeter` connections named ``name``; lists the open ones."""

    protocol = Greeter
    noisy = False

    def __init__(self, name: str) -> None:
        self.name = name.encode()
        self.connections: list[Greeter] = []


class InProcessBackend:
    """A greeting echo server on 127.0.0.1 in this process; :meth:`stop` makes it refuse."""

    def __init__(self, reactor: IReactorTCP, name: str) -> None:
        self.factory = GreeterFactory(name)
        self.port: IListeningPort = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        host = self.port.getHost()
        assert isinstance(host, IPv4Address)
        self.address = f"127.0.0.1:{host.port}"

    @classmethod
    def started(cls, test: TestCase, name: str) -> InProcessBackend:
        """A backend on the global reactor, stopped in ``test``'s cleanup."""
        backend = cls(cast(IReactorTCP, reactor), name)
        test.addCleanup(lambda: defer.Deferred.fromCoroutine(backend.stop()))
        return backend

    async def stop(self) -> None:
        """Stop listening and drop every connection, as a crashed container would."""
        for connection in list(self.factory.connections):
            cast(ITCPTransport, connection.transport).abortConnection()
        stopped = self.port.stopListening()
        if stopped is not None:
            await stopped


class ProcessBackend:
    """The same server as a child process (:mod:`tests.integration.echo_server` in ``echo``
    mode), so a test can SIGKILL it like a real container."""

    def __init__(self, name: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(_SCRIPT), "echo", name], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.address = f"127.0.0.1:{int(self.process.stdout.readline())}"

    @classmethod
    def started(cls, test: TestCase, name: str) -> ProcessBackend:
        """A backend process that ``test``'s cleanup kills."""
        backend = cls(name)
        test.addCleanup(backend.kill)
        return backend

    def kill(self) -> None:
        """SIGKILL the backend (by PID) and reap it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
