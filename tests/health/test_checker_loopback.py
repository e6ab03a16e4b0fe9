"""The checker against real loopback sockets: what a connect to a listening or closed port does."""

from __future__ import annotations

from typing import cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import IAddress, IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, ServerFactory, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from ddiscover.catalog import Address
from ddiscover.health.checker import HealthChecker
from ddiscover.health.probe import _CheckFactory, connect_check, tcp_endpoint_factory
from ddiscover.health.result import CheckStatus, classify_failure
from ddiscover.health.state import HealthRecord
from tests.fake_endpoints import FakeEndpoints
from tests.health.test_checker import catalog


class _Reactor(IReactorTCP, IReactorTime):
    """What these tests need from the reactor."""


class _Tracked(Protocol):
    """A server-side connection that says when it is gone."""

    def __init__(self, gone: Deferred[None]) -> None:
        self._gone = gone

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._gone.callback(None)


class _Server(ServerFactory):
    """Accepts connections, keeping one Deferred per connection that fires when it closes."""

    noisy = False

    def __init__(self) -> None:
        self.gone: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        self.gone.append(Deferred())
        return _Tracked(self.gone[-1])


class LoopbackTests(TestCase):
    """Real connects on 127.0.0.1, waiting on subscriber callbacks rather than sleeping."""

    timeout = 5

    def setUp(self) -> None:
        from twisted.internet import reactor  # noqa: PLC0415

        self.reactor = cast(_Reactor, reactor)
        self.server = _Server()
        self.port = self.reactor.listenTCP(0, self.server, interface="127.0.0.1")
        self.closed: Deferred[None] | None = None
        self.addCleanup(lambda: Deferred.fromCoroutine(self._server_side_closed()))
        self.address = Address("127.0.0.1", cast(IPv4Address, self.port.getHost()).port)
        self.changes: list[Deferred[HealthRecord]] = [Deferred(), Deferred()]

    def endpoint(self, address: Address, timeout: float) -> IStreamClientEndpoint:
        """The production endpoints, over the lean connector."""
        return tcp_endpoint_factory(self.reactor)(address, timeout)

    async def stop_listening(self) -> None:
        """Close the listening port (once), so that connects to it are refused."""
        if self.closed is None:
            stopping = self.port.stopListening()
            assert stopping is not None
            self.closed = stopping
        await self.closed

    async def _server_side_closed(self) -> None:
        await self.stop_listening()
        await gatherResults(self.server.gone)

    def changed(self, address: Address, old: HealthRecord, new: HealthRecord) -> None:
        self.changes.pop(0).callback(new)

    def start_checker(self) -> HealthChecker:
        """A checker of ``web/abc`` at the listening port: interval 0.05 s, rise 1, fall 1."""
        checker = HealthChecker(
            self.reactor,
            self.endpoint,
            interval=0.05,
            rise=1,
            fall=1,
            connect_timeout=1.0,
            jitter=lambda limit: 0.0,
        )
        checker.subscribe(self.changed)
        checker.startService()
        self.addCleanup(checker.stopService)
        checker.reconcile(catalog(web=[("abc", self.address)]))
        return checker

    def test_up_then_down(self) -> Deferred[None]:
        """A listening port is UP after one check; once closed, its next check is L4CON."""
        return Deferred.fromCoroutine(self._up_then_down())

    async def _up_then_down(self) -> None:
        checker = self.start_checker()
        up = await self.changes[0]
        self.assertEqual((up.status(), checker.is_up(self.address)), ("UP", True))
        await self.stop_listening()
        down = await self.changes[0]
        assert down.last is not None
        self.assertEqual(
            (down.status(), down.last.status, down.last.info),
            ("DOWN", CheckStatus.L4CON, "Connection refused"),
        )

    def test_fake_refusal_matches_real(self) -> Deferred[None]:
        """The fake endpoint's refusal classifies exactly as a real refused connect does."""
        return Deferred.fromCoroutine(self._fake_refusal_matches_real())

    async def _fake_refusal_matches_real(self) -> None:
        await self.stop_listening()
        try:
            await self.endpoint(self.address, 1.0).connect(Factory.forProtocol(Protocol))
        except Exception:
            real = Failure()
        else:
            self.fail("connected to a closed port")
        fakes = FakeEndpoints()
        fake = fakes(self.address, 1.0).connect(Factory.forProtocol(Protocol))
        fakes.attempts[0].refuse()
        self.assertEqual(classify_failure(self.failureResultOf(fake)), classify_failure(real))


class LeanEndpointTests(LoopbackTests):
    """The lean endpoint keeps the endpoint contract for protocols that want a connection."""

    def test_check_makes_and_closes_a_connection(self) -> Deferred[None]:
        """A check connects (the server sees it) and the connection is closed at once."""
        return Deferred.fromCoroutine(self._check_makes_and_closes())

    async def _check_makes_and_closes(self) -> None:
        result = await connect_check(self.endpoint(self.address, 1.0), self.reactor)
        self.assertEqual(result.status, CheckStatus.L4OK)
        self.assertEqual(len(self.server.gone), 1)
        await self.server.gone[0]

    def test_other_protocols_get_a_transport(self) -> Deferred[None]:
        """A protocol not marked ``connect_only`` is connected as with any endpoint."""
        return Deferred.fromCoroutine(self._other_protocols())

    async def _other_protocols(self) -> None:
        connected = await self.endpoint(self.address, 1.0).connect(Factory.forProtocol(Protocol))
        protocol = cast(Protocol, connected)
        assert protocol.transport is not None
        peer = cast(IPv4Address, protocol.transport.getPeer())
        self.assertEqual(peer.port, self.address.port)
        protocol.transport.loseConnection()

    def test_cancel(self) -> Deferred[None]:
        """Cancelling a connect in progress fails it with ``CancelledError``, once."""
        return Deferred.fromCoroutine(self._cancel())

    async def _cancel(self) -> None:
        connecting = self.endpoint(self.address, 1.0).connect(_CheckFactory())
        connecting.cancel()
        with self.assertRaises(CancelledError):
            await connecting
