"""Forwarding through real loopback sockets: what only the kernel can show.

Half-close, resets, refused ports, real socket buffers and backpressure.  The proxy is a
:class:`ServiceProxy` listening on port 0 of 127.0.0.1 through :func:`fastpath.listen`, as in
production, so both sockets of every session are the fast path's transports.  The backends
are Twisted servers in this process, and every test waits on Deferreds tied to events (data
arrived, EOF, connection lost, session closed).  The one exception is the slow-reader test,
which polls every 10 ms until the transfer has stalled, because "nothing moved" has no event.
Cleanup aborts whatever is still open and waits for every connection to be lost, so trial's
dirty-reactor check catches leaked sockets and timers.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import socket
import struct
import weakref
from typing import Any, cast

from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IListeningPort,
    IPushProducer,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from ddiscover.catalog import Address, Backend
from ddiscover.health.result import CheckStatus
from ddiscover.modes.tcp import Session
from ddiscover.proxy import fastpath
from ddiscover.proxy.service import ServiceProxy
from tests.proxy import FakeHealth, blackhole, closed_port, make_config

MB = 1024 * 1024


class _Reactor(IReactorTCP, IReactorTime):
    """What these tests need from the reactor."""


class Event:
    """Something that happens once; ``wait()`` gives a Deferred for it, before or after."""

    def __init__(self) -> None:
        self.fired = False
        self.value: Any = None
        self._waiters: list[Deferred[Any]] = []

    def fire(self, value: object = None) -> None:
        self.fired, self.value = True, value
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(value)

    def wait(self) -> Deferred[Any]:
        if self.fired:
            return succeed(self.value)
        self._waiters.append(Deferred())
        return self._waiters[-1]


@implementer(IHalfCloseableProtocol)
class Peer(Protocol):
    """A test end of a connection: keeps what it read, and events for EOF and loss.

    With ``close_on_eof`` it closes as soon as the other end sends FIN; otherwise it closes
    once it has both received and sent a FIN.
    """

    def __init__(self, close_on_eof: bool = True) -> None:
        self.close_on_eof = close_on_eof
        self.received = bytearray()
        self.made, self.eof, self.lost = Event(), Event(), Event()
        self.reason: Failure | None = None
        self._wanted: list[tuple[int, Deferred[None]]] = []
        self._write_shut = False

    @property
    def tcp(self) -> Any:
        """The TCP transport, typed loosely: tests use its half-close and producer methods."""
        return self.transport

    def connectionMade(self) -> None:
        self.made.fire()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        ready = [(n, d) for n, d in self._wanted if len(self.received) >= n]
        self._wanted = [(n, d) for n, d in self._wanted if len(self.received) < n]
        for _, waiter in ready:
            waiter.callback(None)

    def wait_for(self, count: int) -> Deferred[None]:
        """Fires once ``count`` bytes in all have been read."""
        if len(self.received) >= count:
            return succeed(None)
        self._wanted.append((count, Deferred()))
        return self._wanted[-1][1]

    def readConnectionLost(self) -> None:
        self.eof.fire()
        if self.close_on_eof or self._write_shut:
            self.tcp.loseConnection()

    def writeConnectionLost(self) -> None:
        self._write_shut = True
        if self.eof.fired:
            self.tcp.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.lost.fire()


class Echo(Peer):
    """Sends back what it reads."""

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.tcp.write(data)


class ReplyOnEOF(Peer):
    """Reads a request up to the client's FIN, then sends a 1 MB reply and closes."""

    def readConnectionLost(self) -> None:
        self.eof.fire()
        self.tcp.write(reply_for(bytes(self.received)))
        self.tcp.loseConnection()


class BannerThenHalfClose(Peer):
    """Sends a banner and its FIN at once, then keeps reading until the client's FIN."""

    def __init__(self) -> None:
        super().__init__(close_on_eof=False)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.tcp.write(b"banner")
        self.tcp.loseWriteConnection()


class ResetOnData(Peer):
    """Resets the connection as soon as anything arrives (``abortConnection`` sends RST)."""

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.tcp.abortConnection()


@implementer(IPushProducer)
class Pusher(Peer):
    """Streams ``total`` bytes of numbered 64 KiB chunks as fast as its transport allows."""

    total = 32 * MB

    def connectionMade(self) -> None:
        super().connectionMade()
        self.sent = 0
        self.paused = False
        self.tcp.registerProducer(self, True)
        self._push()

    def _push(self) -> None:
        while not self.paused and self.sent < self.total:
            self.tcp.write(chunk(self.sent // len(chunk(0))))
            self.sent += len(chunk(0))
        if self.sent >= self.total and not self.paused:
            self.tcp.unregisterProducer()
            self.tcp.loseConnection()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._push()

    def stopProducing(self) -> None:
        self.paused = True


def chunk(index: int) -> bytes:
    """The ``index``-th 64 KiB chunk the Pusher sends."""
    return struct.pack(">Q", index) * 8192


def reply_for(request: bytes) -> bytes:
    """The 1 MB reply ReplyOnEOF sends for ``request``."""
    return b"reply to " + request + b"\n" + bytes(range(256)) * (4 * 1024)


class _HalfOpenPeer(Peer):
    """Keeps its side open after the other end's FIN, until it is closed."""

    def __init__(self) -> None:
        super().__init__(close_on_eof=False)


def _socket_error(peer: Peer) -> int:
    """The pending error of ``peer``'s socket: ECONNRESET or EPIPE once a reset arrived, 0
    after an orderly close (the socket no longer reads, so Twisted has not taken it)."""
    return int(peer.tcp.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))


class PeerFactory(ServerFactory):
    """Builds one Peer subclass per accepted connection and keeps them all."""

    noisy = False

    def __init__(self, kind: type[Peer]) -> None:
        self.kind = kind
        self.peers: list[Peer] = []
        self.accepted = Event()

    def buildProtocol(self, addr: IAddress | None) -> Peer:
        peer = self.kind()
        self.peers.append(peer)
        self.accepted.fire(peer)
        return peer


class Tracker:
    """A session tracker with events for the first session opened and for "none open"."""

    def __init__(self) -> None:
        self.open: list[Session] = []
        self.opened = Event()
        self._idle: list[Deferred[None]] = []

    def session_opened(self, session: Session) -> None:
        self.open.append(session)
        self.opened.fire(session)

    def session_closed(self, session: Session) -> None:
        self.open.remove(session)
        if not self.open:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                waiter.callback(None)

    def idle(self) -> Deferred[None]:
        """Fires when no session is open."""
        if not self.open:
            return succeed(None)
        self._idle.append(Deferred())
        return self._idle[-1]


def number(port: IListeningPort) -> int:
    """The port number a listening port got."""
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    return address.port


def buffered(session: Session) -> int:
    """Bytes ddiscover holds in user space for both sockets of ``session``.

    ``FileDescriptor`` keeps a ``dataBuffer`` being sent from ``offset`` plus a list of later
    writes counted by ``_tempDataLen``.
    """
    total = 0
    for side in (session.client, session.backend):
        transport = cast(Any, side.transport)
        total += len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    return total


class LoopbackCase(TestCase):
    """Real sockets on 127.0.0.1: backends, a proxy and clients, all closed in cleanup."""

    timeout = 15

    def setUp(self) -> None:
        from twisted.internet import reactor  # noqa: PLC0415

        self.reactor = cast(_Reactor, reactor)
        self.health = FakeHealth()
        self.tracker = Tracker()
        self.peers: list[Peer] = []
        self.factories: list[PeerFactory] = []
        self.addCleanup(self._close_everything)

    async def _close_everything(self) -> None:
        peers = self.peers + [p for f in self.factories for p in f.peers]
        for peer in peers:
            if peer.made.fired and not peer.lost.fired:
                peer.tcp.abortConnection()
        for session in list(self.tracker.open):
            session.abort()
        await gatherResults([p.lost.wait() for p in peers if p.made.fired] + [self.tracker.idle()])

    def backend(self, name: str, kind: type[Peer]) -> tuple[Backend, PeerFactory]:
        """A backend server of ``kind`` on a fresh port, UP."""
        factory = PeerFactory(kind)
        self.factories.append(factory)
        port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        backend = Backend(name, Address("127.0.0.1", number(port)))
        self.health.up.add(backend.address)
        return backend, factory

    def proxy(self, backends: list[Backend], **config: Any) -> tuple[ServiceProxy, int]:
        """A ServiceProxy for ``backends`` listening on a fresh port."""
        proxy = ServiceProxy("svc", self.reactor, make_config(**config), self.health, self.tracker)
        proxy.update(frozenset(backends))
        port = fastpath.listen(self.reactor, 0, proxy, 50, "127.0.0.1", lambda: 1000)
        self.addCleanup(port.stopListening)
        return proxy, number(port)

    async def client(self, port: int, peer: Peer | None = None) -> Peer:
        """A client connected to ``port``."""
        peer = Peer() if peer is None else peer
        self.peers.append(peer)
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", port)
        await connectProtocol(endpoint, peer)
        return peer


class LoopbackTests(LoopbackCase):
    """Forwarding through real sockets on 127.0.0.1."""

    async def test_round_trip(self) -> None:
        """Bytes go through and back, and are counted."""
        backend, _ = self.backend("echo", Echo)
        proxy, port = self.proxy([backend])
        client = await self.client(port)
        client.tcp.write(b"hello")
        await client.wait_for(5)
        self.assertEqual(bytes(client.received), b"hello")
        session: Session = await self.tracker.opened.wait()
        self.assertIsInstance(session.client.transport, fastpath.ClientTransport)
        self.assertIsInstance(session.backend.transport, fastpath.BackendTransport)
        client.tcp.loseConnection()
        await self.tracker.idle()
        self.assertEqual((proxy.counters.bin, proxy.counters.bout), (5, 5))
        self.assertEqual((proxy.counters.stot, proxy.counters.scur), (1, 0))

    async def test_client_half_close_gets_whole_reply(self) -> None:
        """A client that shuts down its write side after its request still gets the whole
        reply, which the backend only sends after reading that FIN."""
        backend, _ = self.backend("replier", ReplyOnEOF)
        _, port = self.proxy([backend])
        client = await self.client(port)
        client.tcp.write(b"request")
        client.tcp.loseWriteConnection()
        await client.eof.wait()
        self.assertEqual(bytes(client.received), reply_for(b"request"))
        await self.tracker.idle()

    async def test_backend_half_close(self) -> None:
        """A backend that sends its FIN first still receives what the client sends after."""
        backend, backends = self.backend("banner", BannerThenHalfClose)
        _, port = self.proxy([backend])
        client = await self.client(port, Peer(close_on_eof=False))
        await client.eof.wait()
        self.assertEqual(bytes(client.received), b"banner")
        client.tcp.write(b"still here")
        client.tcp.loseWriteConnection()
        server = await backends.accepted.wait()
        await server.eof.wait()
        self.assertEqual(bytes(server.received), b"still here")
        await gatherResults([client.lost.wait(), server.lost.wait(), self.tracker.idle()])
        self.assertTrue(client.reason and client.reason.check(error.ConnectionDone))

    async def test_slow_reader_bounded(self) -> None:
        """While the client does not read, ddiscover stops reading the backend and holds
        well under 1 MB; once the client reads, all 32 MB arrive intact."""
        backend, backends = self.backend("pusher", Pusher)
        _, port = self.proxy([backend])
        client = await self.client(port)
        client.tcp.pauseProducing()
        session: Session = await self.tracker.opened.wait()
        pusher = cast(Pusher, await backends.accepted.wait())
        await pusher.made.wait()

        samples: list[int] = []
        stalled, last_sent = 0, -1
        while stalled < 5:
            await deferLater(self.reactor, 0.01, lambda: None)
            if session.backend.connected:
                samples.append(buffered(session))
            stalled = stalled + 1 if (pusher.paused and pusher.sent == last_sent) else 0
            last_sent = pusher.sent
        self.assertLess(pusher.sent, Pusher.total)
        self.assertLess(max(samples), MB)

        digest = hashlib.sha256()
        seen = 0
        original = client.dataReceived

        def read(data: bytes) -> None:
            nonlocal seen
            digest.update(data)
            seen += len(data)
            samples.append(buffered(session))
            original(data[:0])

        client.dataReceived = read  # type: ignore[method-assign]
        client.tcp.resumeProducing()
        await client.eof.wait()
        expected = hashlib.sha256()
        for index in range(Pusher.total // len(chunk(0))):
            expected.update(chunk(index))
        self.assertEqual((seen, digest.hexdigest()), (Pusher.total, expected.hexdigest()))
        self.assertLess(max(samples), MB)
        await self.tracker.idle()

    async def test_backend_reset_reaches_client(self) -> None:
        """A backend reset is passed on as a reset: the client sees a lost connection, not
        a clean end of stream."""
        backend, _ = self.backend("resetter", ResetOnData)
        proxy, port = self.proxy([backend])
        client = await self.client(port)
        client.tcp.write(b"x")
        await client.lost.wait()
        self.assertTrue(client.reason and client.reason.check(error.ConnectionLost), client.reason)
        await self.tracker.idle()
        self.assertEqual(proxy.counters.srv_abrt, 1)

    async def test_backend_reset_after_its_fin_reaches_client(self) -> None:
        """A backend that half-closed and then resets gets the client reset, not closed in
        order (Twisted's ``stopProducing`` on the lost socket would close the client's
        half-closed socket at once, with a FIN)."""
        backend, backends = self.backend("banner", BannerThenHalfClose)
        _, port = self.proxy([backend])
        client = await self.client(port, Peer(close_on_eof=False))
        await client.eof.wait()
        server = await backends.accepted.wait()
        server.tcp.abortConnection()
        await server.lost.wait()
        # ddiscover stopped reading the backend at its FIN: the next write meets the reset.
        client.tcp.write(b"x")
        await self.tracker.idle()
        self.assertIn(_socket_error(client), (errno.ECONNRESET, errno.EPIPE))

    async def test_client_reset_after_its_fin_reaches_backend(self) -> None:
        """A client that half-closed and then resets gets the backend reset, not closed."""
        backend, backends = self.backend("quiet", _HalfOpenPeer)
        _, port = self.proxy([backend])
        client = await self.client(port, Peer(close_on_eof=False))
        client.tcp.loseWriteConnection()
        server = await backends.accepted.wait()
        await server.eof.wait()
        client.tcp.abortConnection()
        await client.lost.wait()
        server.tcp.write(b"x")
        await self.tracker.idle()
        self.assertIn(_socket_error(server), (errno.ECONNRESET, errno.EPIPE))

    async def test_own_connect_coming_back_is_refused(self) -> None:
        """A backend that is the proxy's own port: our connect coming back in is closed at
        accept with one line, so a client costs one session instead of looping to maxconn."""
        proxy = ServiceProxy(
            "svc", self.reactor, make_config(), self.health, self.tracker, own_ends={}
        )
        port = fastpath.listen(self.reactor, 0, proxy, 50, "127.0.0.1", lambda: 1000)
        self.addCleanup(port.stopListening)
        proxy.port = number(port)
        own = Backend("self", Address("127.0.0.1", number(port)))
        self.health.up.add(own.address)
        proxy.update(frozenset({own}))
        with capturedLogs() as events:
            client = await self.client(number(port))
            await client.lost.wait()
            await self.tracker.idle()
        self.assertEqual(proxy.counters.stot, 1)
        self.assertEqual(proxy.own_ends, {})
        refused = [e for e in events if "loops back into ddiscover" in e["log_format"]]
        self.assertEqual(len(refused), 1)

    async def test_client_reset_right_after_connect(self) -> None:
        """A client that resets before the backend connect completes is noticed once the
        client is read again, and the backend connection is reset too."""
        backend, backends = self.backend("echo", Echo)
        proxy, port = self.proxy([backend])
        client = await self.client(port)
        client.tcp.abortConnection()
        server = await backends.accepted.wait()
        await gatherResults([server.lost.wait(), self.tracker.idle()])
        self.assertTrue(server.reason and server.reason.check(error.ConnectionLost), server.reason)
        self.assertEqual(proxy.counters.cli_abrt, 1)

    async def test_redispatch_from_refused_port(self) -> None:
        """A refused backend is reported and the client lands on the live one unawares."""
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        dead = Backend("a-dead", Address("127.0.0.1", probe.getsockname()[1]))
        probe.close()
        self.health.up.add(dead.address)
        live, _ = self.backend("b-live", Echo)
        proxy, port = self.proxy([dead, live])
        client = await self.client(port)
        client.tcp.write(b"hello")
        await client.wait_for(5)
        self.assertEqual(bytes(client.received), b"hello")
        [(address, result)] = self.health.reports
        self.assertEqual((address, result.status), (dead.address, CheckStatus.L4CON))
        self.assertEqual((proxy.counters.wredis, proxy.servers[dead].wredis), (1, 1))
        client.tcp.loseConnection()
        await self.tracker.idle()

    async def test_idle_timeout(self) -> None:
        """A proxied connection with nothing moving is closed after idle_timeout."""
        backend, backends = self.backend("echo", Echo)
        _, port = self.proxy([backend], idle_timeout=0.2)
        client = await self.client(port)
        client.tcp.write(b"ping")
        await client.wait_for(4)
        quiet_since = self.reactor.seconds()
        await client.lost.wait()
        self.assertGreaterEqual(self.reactor.seconds() - quiet_since, 0.19)
        server = await backends.accepted.wait()
        await gatherResults([server.lost.wait(), self.tracker.idle()])

    async def test_abort_during_connect_cancels_it(self) -> None:
        """Aborting a session (as the drain deadline does) while its backend connect hangs
        cancels the connect: no socket or timer is left behind."""
        hole = Backend("hole", Address("127.0.0.1", blackhole(self)))
        self.health.up.add(hole.address)
        _, port = self.proxy([hole], connect_timeout=10)
        client = await self.client(port)
        session: Session = await self.tracker.opened.wait()
        self.assertFalse(session.backend.connected)
        session.abort()
        await gatherResults([client.lost.wait(), self.tracker.idle()])
        self.assertEqual(self.health.reports, [])


class GarbageTests(LoopbackCase):
    """A finished session is freed by reference counting, without the cycle collector."""

    def setUp(self) -> None:
        super().setUp()
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)

    async def freed_after(self, client: Peer) -> bool:
        """Close ``client``, wait for its session to end and say whether it was freed."""
        opened = self.tracker.opened
        ref = weakref.ref(opened.value)
        opened.value = None
        client.tcp.loseConnection()
        await self.tracker.idle()
        # Let the reactor unwind the call that closed the last socket.
        await deferLater(self.reactor, 0, lambda: None)
        return ref() is None

    async def test_connected_session_freed(self) -> None:
        """A session that reached its backend at once, or after a refused connect was
        redispatched, is freed as soon as it ends."""
        for first in ([], [Backend("a-dead", Address("127.0.0.1", closed_port()))]):
            self.health.up.update(b.address for b in first)
            live, _ = self.backend("b-live", Echo)
            client = await self.client(self.proxy([*first, live])[1])
            client.tcp.write(b"hello")
            await client.wait_for(5)
            self.assertTrue(await self.freed_after(client), first)
            self.tracker.opened = Event()

    async def test_refused_session_freed(self) -> None:
        """A session whose every connect was refused is freed once its client is closed."""
        dead = Backend("dead", Address("127.0.0.1", closed_port()))
        self.health.up.add(dead.address)
        client = await self.client(self.proxy([dead], retries=2)[1])
        await client.lost.wait()
        self.assertTrue(await self.freed_after(client))
