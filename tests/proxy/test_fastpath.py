"""The proxy's own transports on the real reactor and real sockets: what each shortcut must keep.

Every failure of the lean connect must reach the factory with the exception ``connectTCP``
would have given, so that redispatch and health reports classify it the same; a write must
never reorder bytes; an accepted client must not be read before the session says so.  The
forwarding behaviour over these transports is tested end to end in
``test_relay_loopback.py``, whose proxy listens through :func:`fastpath.listen`.
"""

from __future__ import annotations

import errno
import select
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

from twisted.internet import error, tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IAddress, IConnector
from twisted.internet.protocol import ClientFactory, Protocol, ServerFactory, connectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ddiscover.health.result import CheckStatus, classify_failure
from ddiscover.proxy import fastpath
from ddiscover.proxy.fastpath import BackendTransport, ClientTransport, LeanConnect, ProxyPort
from tests.proxy import blackhole, closed_port

KB = 1024


class Recorder(Protocol):
    """Keeps what it reads; ``made`` fires with the transport, ``lost`` once it is lost."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.made: Deferred[Any] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.chunks: list[int] = []
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def until(self, size: int) -> Deferred[None]:
        """Fires once ``size`` bytes in all have been received."""
        waiting: Deferred[None] = Deferred()
        self._waiting.append((size, waiting))
        self._wake()
        return waiting

    def connectionMade(self) -> None:
        self.made.callback(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(len(data))
        self.received += data
        self._wake()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.lost.callback(None)

    def _wake(self) -> None:
        ready = [d for size, d in self._waiting if len(self.received) >= size]
        self._waiting = [(n, d) for n, d in self._waiting if d not in ready]
        for waiting in ready:
            waiting.callback(None)


class Outcome(ClientFactory):
    """A connect's factory: its protocol is ``protocol_made``; ``failed`` fires on failure."""

    noisy = False

    def __init__(self) -> None:
        self.protocol_made = Recorder()
        self.failed: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def buildProtocol(self, addr: IAddress | None) -> Recorder:
        return self.protocol_made

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.reason = reason
        self.failed.callback(None)

    async def failure(self) -> Failure:
        """The reason the connect failed, once it has."""
        await self.failed
        assert self.reason is not None
        return self.reason


class Accepting(ServerFactory):
    """A server whose accepted connections are :class:`Recorder` protocols, kept in order."""

    noisy = False

    def __init__(self) -> None:
        self.accepted: list[Recorder] = []
        self.first: Deferred[Recorder] = Deferred()

    def buildProtocol(self, addr: IAddress | None) -> Recorder:
        recorder = Recorder()
        self.accepted.append(recorder)
        if len(self.accepted) == 1:
            self.first.callback(recorder)
        return recorder


class LeanConnectTests(TestCase):
    """Each way a connect ends, as the session's factory sees it."""

    timeout = 10

    def setUp(self) -> None:
        from twisted.internet import reactor  # noqa: PLC0415

        self.reactor: Any = reactor

    def listen(self, factory: ServerFactory, interface: str = "127.0.0.1") -> int:
        port = self.reactor.listenTCP(0, factory, interface=interface)
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def test_hostname_and_fake_reactor_use_connect_tcp(self) -> None:
        """Only IP literals on a real reactor take the lean path; a hostname is resolved by
        Twisted's own connector, and a fake reactor records an ordinary connectTCP."""
        connector = fastpath.connect(self.reactor, "localhost", closed_port(), Outcome(), 1)
        self.assertIsInstance(connector, tcp.Connector)
        connector.stopConnecting()
        fake = MemoryReactorClock()
        fastpath.connect(fake, "127.0.0.1", 80, Outcome(), 3)
        [(host, port, _, timeout, _)] = fake.tcpClients
        self.assertEqual((host, port, timeout), ("127.0.0.1", 80, 3))

    async def test_connected(self) -> None:
        """A completed connect hands the protocol a BackendTransport that knows both ends and
        carries bytes both ways."""
        server = Accepting()
        port = self.listen(server)
        outcome = Outcome()
        connector = fastpath.connect(self.reactor, "127.0.0.1", port, outcome, 5)
        self.assertIsInstance(connector, LeanConnect)
        transport = await outcome.protocol_made.made
        self.assertIsInstance(transport, BackendTransport)
        self.assertEqual(transport.getPeer(), IPv4Address("TCP", "127.0.0.1", port))
        self.assertEqual(connector.getDestination(), transport.getPeer())
        accepted = await server.first
        self.assertEqual(transport.getHost(), accepted.transport.getPeer())  # type: ignore[union-attr]
        transport.write(b"ping")
        await accepted.until(4)
        self.assertEqual(bytes(accepted.received), b"ping")
        accepted.transport.write(b"pong")  # type: ignore[union-attr]
        await outcome.protocol_made.until(4)
        self.assertEqual(bytes(outcome.protocol_made.received), b"pong")
        connector.disconnect()
        await outcome.protocol_made.lost
        reason = outcome.protocol_made.reason
        self.assertTrue(reason and reason.check(error.ConnectionDone), reason)
        self.assertFalse(outcome.failed.called)

    async def test_ipv6_literal(self) -> None:
        """An IPv6 literal connects over AF_INET6 and reports IPv6 addresses."""
        if not socket.has_ipv6:
            self.skipTest("no IPv6")
        try:
            port = self.listen(Accepting(), interface="::1")
        except error.CannotListenError as e:
            self.skipTest(f"no ::1 here: {e}")
        outcome = Outcome()
        fastpath.connect(self.reactor, "::1", port, outcome, 5)
        transport = await outcome.protocol_made.made
        self.assertEqual(transport.getPeer(), IPv6Address("TCP", "::1", port))
        self.assertIsInstance(transport.getHost(), IPv6Address)
        transport.loseConnection()
        await outcome.protocol_made.lost

    async def test_refused(self) -> None:
        """A refused connect is ConnectionRefusedError, classified L4CON, socket closed."""
        outcome = Outcome()
        connector = fastpath.connect(self.reactor, "127.0.0.1", closed_port(), outcome, 5)
        reason = await outcome.failure()
        self.assertTrue(reason.check(error.ConnectionRefusedError), reason)
        result = classify_failure(reason)
        self.assertEqual((result.status, result.info), (CheckStatus.L4CON, "Connection refused"))
        self.assertEqual(cast(LeanConnect, connector).fileno(), -1)
        self.assertNotIn(connector, self.reactor.getWriters())

    async def test_error_seen_as_writable(self) -> None:
        """Where the reactor reports a failed connect as writable (select, poll) rather than
        as an error (epoll), doWrite finds the errno in SO_ERROR and reports it the same."""
        outcome = Outcome()
        connector = cast(
            LeanConnect, fastpath.connect(self.reactor, "127.0.0.1", closed_port(), outcome, 5)
        )
        self.reactor.removeWriter(connector)
        # Loopback refuses within the kernel: wait (bounded) for the socket to be writable.
        select.select([], [connector.fileno()], [], 5)
        connector.doWrite()
        self.assertTrue(outcome.failed.called)
        reason = await outcome.failure()
        self.assertTrue(reason.check(error.ConnectionRefusedError), reason)
        self.assertEqual(connector.fileno(), -1)

    async def test_timeout(self) -> None:
        """A connect that is never answered fails with TimeoutError (L4TOUT) after timeout."""
        outcome = Outcome()
        started = self.reactor.seconds()
        connector = fastpath.connect(self.reactor, "127.0.0.1", blackhole(self), outcome, 0.2)
        reason = await outcome.failure()
        self.assertTrue(reason.check(error.TimeoutError), reason)
        self.assertGreaterEqual(self.reactor.seconds() - started, 0.19)
        self.assertEqual(classify_failure(reason).status, CheckStatus.L4TOUT)
        self.assertNotIn(connector, self.reactor.getWriters())

    async def test_stop_connecting(self) -> None:
        """stopConnecting gives up at once with UserError, cancelling the timeout; a second
        call does nothing."""
        outcome = Outcome()
        connector = fastpath.connect(self.reactor, "127.0.0.1", blackhole(self), outcome, 5)
        self.assertIn(connector, self.reactor.getWriters())
        connector.stopConnecting()
        self.assertTrue(outcome.failed.called)
        reason = await outcome.failure()
        self.assertTrue(reason.check(error.UserError), reason)
        self.assertNotIn(connector, self.reactor.getWriters())
        connector.stopConnecting()

    async def test_no_socket(self) -> None:
        """When no socket can be made (EMFILE), the failure is a ConnectBindError that
        classify_failure calls SOCKERR (never blamed on the backend), reported on the next
        reactor turn rather than from inside connect()."""

        def no_fds(*args: object) -> socket.socket:
            raise OSError(errno.EMFILE, "Too many open files")

        self.patch(fastpath.socket, "socket", no_fds)
        outcome = Outcome()
        fastpath.connect(self.reactor, "127.0.0.1", 80, outcome, 5)
        self.assertFalse(outcome.failed.called)
        reason = await outcome.failure()
        self.assertTrue(reason.check(error.ConnectBindError), reason)
        self.assertEqual(classify_failure(reason).status, CheckStatus.SOCKERR)


class TransportTests(TestCase):
    """Writes and reads of the fast transports, on real sockets."""

    timeout = 10

    def setUp(self) -> None:
        from twisted.internet import reactor  # noqa: PLC0415

        self.reactor: Any = reactor

    def wrap(self, sock: socket.socket) -> tuple[BackendTransport, Recorder]:
        """A BackendTransport with a Recorder on ``sock``, not yet reading; reset in cleanup."""
        recorder = Recorder()
        transport = BackendTransport(
            sock, recorder, self.reactor, IPv4Address("TCP", "127.0.0.1", 1)
        )
        recorder.makeConnection(transport)
        self.addCleanup(lambda: recorder.lost)
        self.addCleanup(transport.abortConnection)
        return transport, recorder

    def pair(self) -> tuple[BackendTransport, Recorder, socket.socket]:
        """A BackendTransport on one end of a socket pair, and the raw other end."""
        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        transport, recorder = self.wrap(ours)
        return transport, recorder, theirs

    def test_write_goes_straight_to_the_socket(self) -> None:
        """With nothing buffered, a write is sent before it returns: nothing is buffered and
        the socket is not watched for writability."""
        transport, _, theirs = self.pair()
        transport.write(b"now")
        self.assertNotIn(transport, self.reactor.getWriters())
        self.assertEqual((transport._tempDataLen, transport.dataBuffer), (0, b""))
        theirs.setblocking(False)
        self.assertEqual(theirs.recv(10), b"now")

    async def test_writes_keep_their_order_behind_a_full_socket(self) -> None:
        """What the kernel does not take is buffered, and later writes queue behind it."""
        ours, theirs = socket.socketpair()
        transport, _ = self.wrap(ours)
        reader, received = self.wrap(theirs)
        first = bytes(range(256)) * (16 * KB)  # 4 MB: more than any socket buffer here
        transport.write(first)
        self.assertGreater(transport._tempDataLen, 0)
        self.assertIn(transport, self.reactor.getWriters())
        transport.write(b"-then-this")
        expected = first + b"-then-this"
        reader.startReading()
        await received.until(len(expected))
        self.assertEqual(bytes(received.received), expected)

    def test_reads_up_to_read_size(self) -> None:
        """One doRead takes up to READ_SIZE (256 KiB), not Twisted's 64 KiB bufferSize."""
        transport, recorder, theirs = self.pair()
        theirs.setblocking(False)
        sent = 0
        try:
            while sent < fastpath.READ_SIZE + 64 * KB:
                sent += theirs.send(b"x" * (64 * KB))
        except BlockingIOError:
            pass
        self.assertGreater(sent, 64 * KB)
        transport.doRead()
        self.assertEqual(recorder.chunks, [min(sent, fastpath.READ_SIZE)])
        self.assertEqual(transport.bufferSize, 64 * KB)


class ListenTests(TestCase):
    """Accepted clients are created paused, in batches that fit under maxconn."""

    timeout = 10

    def setUp(self) -> None:
        from twisted.internet import reactor  # noqa: PLC0415

        self.reactor: Any = reactor

    def test_fake_reactor_uses_listen_tcp(self) -> None:
        fake = MemoryReactorClock()
        fastpath.listen(fake, 8080, Accepting(), 4096, "127.0.0.1", lambda: 1)
        [(port, _, backlog, interface)] = fake.tcpServers
        self.assertEqual((port, backlog, interface), (8080, 4096, "127.0.0.1"))

    async def test_accepted_client_is_not_read_until_resumed(self) -> None:
        """A client accepted on a ProxyPort is a ClientTransport that is not read (its bytes
        wait in the kernel) until resumeProducing, and then arrive whole."""
        server = Accepting()
        port = fastpath.listen(self.reactor, 0, server, 50, "127.0.0.1", lambda: 1)
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, ProxyPort)
        client = socket.create_connection(("127.0.0.1", cast(IPv4Address, port.getHost()).port))
        self.addCleanup(client.close)
        client.sendall(b"early bytes")
        accepted = await server.first
        transport = cast(ClientTransport, await accepted.made)
        self.assertIsInstance(transport, ClientTransport)
        self.assertEqual(transport.getPeer().port, client.getsockname()[1])
        self.assertNotIn(transport, self.reactor.getReaders())
        transport.resumeProducing()
        self.assertIn(transport, self.reactor.getReaders())
        await accepted.until(len(b"early bytes"))
        self.assertEqual(bytes(accepted.received), b"early bytes")
        transport.loseConnection()
        await accepted.lost

    async def test_batches_fit_the_room_left(self) -> None:
        """A wake-up accepts at most room() clients, even once tcp.Port has grown its batch,
        and none without room; the others wait in the kernel's accept queue."""
        server = Accepting()
        room = 2
        port = fastpath.listen(self.reactor, 0, server, 50, "127.0.0.1", lambda: room)
        self.addCleanup(port.stopListening)
        assert isinstance(port, ProxyPort)
        port.stopReading()  # the test wakes it up
        for _ in range(5):
            client = socket.create_connection(("127.0.0.1", port.getHost().port))
            self.addCleanup(client.close)
        port.numberAccepts = 120  # as tcp.Port grows it after full batches
        port.doRead()
        self.assertEqual(len(server.accepted), 2)
        room = 0
        port.doRead()
        self.assertEqual(len(server.accepted), 2)
        room = 100
        port.doRead()
        self.assertEqual(len(server.accepted), 5)
        for accepted in server.accepted:
            accepted.transport.loseConnection()  # type: ignore[union-attr]
        await gatherResults([accepted.lost for accepted in server.accepted])


class OtherReactorsTests(SynchronousTestCase):
    """``twistd --reactor poll`` or ``select`` takes the fast path too (any POSIX reactor).

    They report a refused connect differently from epoll (select as writability, poll as an
    error event), so the fast-path and loopback tests are run again under each, by trial in
    a child process, since one process has one reactor.
    """

    def test_poll_and_select(self) -> None:
        root = Path(__file__).resolve().parents[2]
        suites = [
            f"tests.proxy.test_fastpath.{name}"
            for name in ("LeanConnectTests", "TransportTests", "ListenTests")
        ] + ["tests.proxy.test_relay_loopback"]
        for reactor in ("poll", "select"):
            run = subprocess.run(
                [sys.executable, "-m", "twisted.trial", f"--reactor={reactor}", *suites],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            self.assertEqual(run.returncode, 0, f"--reactor={reactor}:\n{run.stdout[-3000:]}")
            self.assertRegex(run.stdout, r"PASSED \(successes=\d\d+\)")
