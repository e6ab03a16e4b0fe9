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

from twisted.internet import protocol
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort, IReactorTCP, ITCPTransport

_SCRIPT = Path(__file__).with_name("backend_server.py")


class _Greeter(protocol.Protocol):
    def connectionMade(self) -> None:
        factory = self.factory
        assert isinstance(factory, _GreeterFactory)
        factory.connections.append(self)
        cast(ITCPTransport, self.transport).write(factory.name + b"\n")

    def dataReceived(self, data: bytes) -> None:
        cast(ITCPTransport, self.transport).write(data)

    def connectionLost(self, reason: object = None) -> None:
        factory = self.factory
        assert isinstance(factory, _GreeterFactory)
        factory.connections.remove(self)


class _GreeterFactory(protocol.ServerFactory):
    protocol = _Greeter

    def __init__(self, name: str) -> None:
        self.name = name.encode()
        self.connections: list[_Greeter] = []


class InProcessBackend:
    """A greeting echo server on 127.0.0.1 in this process; :meth:`stop` makes it refuse."""

    def __init__(self, reactor: IReactorTCP, name: str) -> None:
        self.name = name
        self.factory = _GreeterFactory(name)
        self.port: IListeningPort = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        host = self.port.getHost()
        assert isinstance(host, IPv4Address)
        self.address = f"127.0.0.1:{host.port}"

    async def stop(self) -> None:
        """Stop listening and drop every connection, as a crashed container would."""
        for connection in list(self.factory.connections):
            cast(ITCPTransport, connection.transport).abortConnection()
        stopped = self.port.stopListening()
        if stopped is not None:
            await stopped


class ProcessBackend:
    """The same server as a child process, so a test can SIGKILL it like a real container."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(_SCRIPT), name], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.address = f"127.0.0.1:{int(self.process.stdout.readline())}"

    def kill(self) -> None:
        """SIGKILL the backend (by PID) and reap it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
