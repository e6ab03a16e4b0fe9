"""Helpers for end-to-end tests: the checkout and how to start its processes, free ports,
blocking loopback clients run off the reactor thread, and waiting for a condition with a
deadline instead of sleeping a fixed time."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTCP, IReactorTime, ITransport
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

CLIENT_TIMEOUT = 5.0
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


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel picked it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _exchange(port: int, payload: bytes, half_close: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as s:
        if payload:
            s.sendall(payload)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks: list[bytes] = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)
            if not half_close and b"\n" in b"".join(chunks):
                return b"".join(chunks)


async def exchange(port: int, payload: bytes = b"", half_close: bool = False) -> bytes:
    """Connect through the proxy from a thread; return what came back.

    Without ``half_close`` it returns at the first full line (the backend's greeting); with it,
    it sends ``payload``, shuts its write side, and reads until the proxy closes.
    """
    data: bytes = await deferToThread(_exchange, port, payload, half_close)
    return data


async def greeting(port: int) -> str:
    """The name of the backend a new connection on ``port`` reached."""
    return (await exchange(port)).split(b"\n", 1)[0].decode()


async def greeted_by(port: int, name: str) -> bool:
    """Whether a new connection on ``port`` reaches backend ``name``; False if it fails."""
    try:
        return await greeting(port) == name
    except OSError:
        return False


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> float:
    """Wait until ``condition()`` holds, checking every reactor millisecond; return the wait.

    Fails the test with :class:`AssertionError` after ``timeout`` seconds.
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await deferLater(cast(IReactorTime, reactor), 0.001, lambda: None)
    return time.monotonic() - start


async def eventually_async(
    condition: Callable[[], Awaitable[bool]], timeout: float = 10.0
) -> float:
    """Like :func:`eventually` for a condition that has to do I/O, such as connecting."""
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await deferLater(cast(IReactorTime, reactor), 0.01, lambda: None)
    return time.monotonic() - start


async def refuses(port: int) -> bool:
    """Whether a connect to ``port`` is refused now: for :func:`eventually_async`.

    A port is closed a reactor turn after ``stopListening``; a client that lands in its accept
    queue meanwhile is reset by the kernel, not refused, so only a refusal shows it closed.
    """
    try:
        await exchange(port)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False
    return False


class HeldConnection(protocol.Protocol):
    """A proxied connection a test keeps open across changes, to show it survives them."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.name = ""

    @classmethod
    async def open(cls, port: int) -> HeldConnection:
        """Connect to ``port`` on loopback and read the backend's greeting into ``name``."""
        held = cls()
        endpoint = TCP4ClientEndpoint(cast(IReactorTCP, reactor), "127.0.0.1", port)
        await connectProtocol(endpoint, held)
        await eventually(lambda: b"\n" in held.received)
        greeting, _, rest = bytes(held.received).partition(b"\n")
        held.name = greeting.decode()
        held.received = bytearray(rest)
        return held

    async def echo(self, data: bytes) -> bytes:
        """Send ``data`` and return the same number of bytes once they have come back."""
        cast(ITransport, self.transport).write(data)
        await eventually(lambda: len(self.received) >= len(data))
        reply = bytes(self.received[: len(data)])
        del self.received[: len(data)]
        return reply

    async def close(self) -> None:
        """Close the connection and wait until it is gone."""
        cast(ITransport, self.transport).loseConnection()
        await self.lost

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost.callback(None)
