"""The stats port's limits on clients, over real loopback sockets (:mod:`ddiscover.stats.site`).

Each test listens a :class:`StatsSite` on 127.0.0.1 with the real reactor and plays the
client with a blocking socket in a thread, as a hostile or careless client would.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.static import Data

from ddiscover.stats.site import StatsSite

reactor: Any = _reactor


def _read_all(sock: socket.socket, limit: float = 5.0) -> bytes:
    """Everything the server sends until it closes (a reset raises)."""
    sock.settimeout(limit)
    return b"".join(iter(lambda: sock.recv(65536), b""))


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """In a client thread: wait until the reactor's state satisfies ``condition``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


class StatsSiteTests(TestCase):
    """Request timeout, connection cap, and clean refusals of oversized heads."""

    def listen(self, **options: Any) -> int:
        root = Resource()
        root.putChild(b"", Data(b"ok\n", "text/plain"))
        site = self.site = StatsSite(root, reactor, **options)
        port: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number: int = port.getHost().port  # type: ignore[attr-defined]
        return number

    def connect(self, port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(sock.close)
        return sock

    def test_no_access_line_per_request(self) -> None:
        """Requests served log nothing: an idle ddiscover's healthchecks are not news."""
        port = self.listen()
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

        def client() -> bytes:
            sock = self.connect(port)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return _read_all(sock)

        def check(answer: bytes) -> None:
            self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
            self.assertEqual([formatEvent(e) for e in events if "GET" in formatEvent(e)], [])

        d: Deferred[Any] = threads.deferToThread(client)
        return d.addCallback(check)  # type: ignore[return-value]

    def test_trickled_head_times_out(self) -> None:
        """A client sending a header line every 0.2 s gets 408 once the deadline passes."""
        port = self.listen(request_timeout=1.0)

        def client() -> tuple[float, bytes]:
            sock = self.connect(port)
            start = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            sock.settimeout(0.2)
            for i in range(50):
                try:
                    sock.sendall(b"X-Slow-%d: y\r\n" % i)
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                return time.monotonic() - start, data + _read_all(sock)
            return time.monotonic() - start, b""

        def check(result: tuple[float, bytes]) -> None:
            elapsed, data = result
            self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data)
            self.assertLess(elapsed, 3.0)

        d: Deferred[Any] = threads.deferToThread(client)
        return d.addCallback(check)  # type: ignore[return-value]

    def test_connection_cap(self) -> None:
        """Past the cap a connection gets 503 and a close; the ones inside are served."""
        port = self.listen(max_connections=3)

        def client() -> tuple[bytes, bytes, bytes]:
            idle = [self.connect(port) for _ in range(3)]
            _until(lambda: self.site.open == 3)
            extra = self.connect(port)
            refused = _read_all(extra)
            idle[0].sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            served = _read_all(idle[0])
            idle[0].close()
            _until(lambda: self.site.open == 2)
            again = self.connect(port)
            again.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return refused, served, _read_all(again)

        def check(result: tuple[bytes, bytes, bytes]) -> None:
            refused, served, again = result
            self.assertTrue(refused.startswith(b"HTTP/1.1 503 "), refused)
            self.assertTrue(served.startswith(b"HTTP/1.1 200 "), served)
            self.assertTrue(again.startswith(b"HTTP/1.1 200 "), again)

        d: Deferred[Any] = threads.deferToThread(client)
        return d.addCallback(check)  # type: ignore[return-value]

    def test_oversized_heads_are_answered_not_reset(self) -> None:
        """A 100 KB request line gets 414, a 100 KB header 431: read whole, no reset."""
        port = self.listen()

        def send(head: bytes) -> bytes:
            sock = self.connect(port)
            with contextlib.suppress(OSError):  # The answer may come before the end.
                sock.sendall(head)
            return _read_all(sock)

        def client() -> tuple[bytes, bytes]:
            line = b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
            header = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n"
            return send(line), send(header)

        def check(result: tuple[bytes, bytes]) -> None:
            line, header = result
            self.assertTrue(line.startswith(b"HTTP/1.1 414 "), line[:80])
            self.assertTrue(header.startswith(b"HTTP/1.1 431 "), header[:80])

        d: Deferred[Any] = threads.deferToThread(client)
        return d.addCallback(check)  # type: ignore[return-value]
