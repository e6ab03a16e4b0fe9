"""Helpers for end-to-end tests: free ports, blocking loopback clients run off the reactor
thread, and waiting for a condition with a deadline instead of sleeping a fixed time."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

CLIENT_TIMEOUT = 5.0


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


async def eventually(
    condition: Callable[[], bool],
    timeout: float = 10.0,
    clock: IReactorTime = reactor,
) -> float:
    """Wait until ``condition()`` holds, checking every reactor millisecond; return the wait.

    Fails the test with :class:`AssertionError` after ``timeout`` seconds.
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await deferLater(clock, 0.001, lambda: None)
    return time.monotonic() - start
