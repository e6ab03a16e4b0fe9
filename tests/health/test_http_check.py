"""The HTTP health check: one request, the response head judged in haproxy's words."""

from __future__ import annotations

from typing import cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from ddiscover.catalog import Address
from ddiscover.health.http_check import MAX_HEAD, HttpCheck, http_check
from ddiscover.health.result import CheckResult, CheckStatus
from ddiscover.policy.values import ProxyVersion, status_set
from ddiscover.proxy.proxy_protocol import v2_local
from tests.fake_endpoints import FakeEndpoints

BACKEND = Address("127.0.0.2", 8008)
LOCAL = IPv4Address("TCP", "127.0.0.1", 40000)
PEER = IPv4Address("TCP", "127.0.0.2", 8008)


@implementer(IStreamClientEndpoint)
class _Endpoint:
    """Connects after ``delay`` seconds on the test's clock, to a ``StringTransport``."""

    def __init__(self, clock: Clock, delay: float = 0.0) -> None:
        self._clock = clock
        self._delay = delay
        self.protocol: IProtocol | None = None
        self.transport = StringTransport(hostAddress=LOCAL, peerAddress=PEER)

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:  # noqa: N803
        connected: Deferred[IProtocol] = Deferred()

        def connect_now() -> None:
            protocol = protocolFactory.buildProtocol(PEER)
            assert protocol is not None
            protocol.makeConnection(self.transport)
            self.protocol = protocol
            connected.callback(protocol)

        self._clock.callLater(self._delay, connect_now)
        return connected


class HttpCheckTests(SynchronousTestCase):
    """Each way a response can go, on a fake transport and the test's clock."""

    def setUp(self) -> None:
        self.clock = Clock()

    def start(
        self, check: HttpCheck | None = None, delay: float = 0.0, drain: bool = False
    ) -> tuple[_Endpoint, Deferred[CheckResult]]:
        endpoint = _Endpoint(self.clock, delay)
        checking = Deferred.fromCoroutine(
            http_check(
                endpoint,
                self.clock,
                check or HttpCheck(),
                BACKEND,
                timeout=1.0,
                drain_on_404=drain,
            )
        )
        self.clock.advance(delay)
        return endpoint, checking

    def answer(self, response: bytes, **kwargs: object) -> tuple[CheckResult, StringTransport]:
        endpoint, checking = self.start(**kwargs)  # type: ignore[arg-type]
        assert endpoint.protocol is not None
        self.clock.advance(0.25)
        endpoint.protocol.dataReceived(response)
        return self.successResultOf(checking), endpoint.transport

    def test_request(self) -> None:
        """One HTTP/1.1 request: method, path, Host (the address by default), Connection: close."""
        endpoint, _ = self.start()
        self.assertEqual(
            endpoint.transport.value(),
            b"GET / HTTP/1.1\r\nHost: 127.0.0.2:8008\r\nUser-Agent: ddiscover-check\r\n"
            b"Connection: close\r\n\r\n",
        )
        endpoint, _ = self.start(HttpCheck(method="HEAD", path="/healthz?x=1", host="db"))
        self.assertTrue(endpoint.transport.value().startswith(b"HEAD /healthz?x=1 HTTP/1.1\r\n"))
        self.assertIn(b"\r\nHost: db\r\n", endpoint.transport.value())

    def test_ipv6_host(self) -> None:
        """An IPv6 backend's Host header is bracketed."""
        check = HttpCheck().request(Address("::1", 80))
        self.assertEqual(dict(check.headers)[b"host"], b"[::1]:80")

    def test_ok(self) -> None:
        """An expected status is L7OK with code and reason, and the check hangs up."""
        result, transport = self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(result, CheckResult(CheckStatus.L7OK, "200 OK", 0.25))
        self.assertTrue(transport.disconnecting)

    def test_wrong_status(self) -> None:
        """A status outside check_expect is L7STS with its code and reason."""
        result, _ = self.answer(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
        self.assertEqual(
            (result.status, result.info), (CheckStatus.L7STS, "503 Service Unavailable")
        )

    def test_not_found_drains_only_when_asked(self) -> None:
        """A 404 is L7OKC (drain) from a server that is UP, and judged normally otherwise."""
        response = b"HTTP/1.1 404 Not Found\r\n\r\n"
        drained, _ = self.answer(response, drain=True)
        self.assertEqual((drained.status, drained.info), (CheckStatus.L7OKC, "404 Not Found"))
        failed, _ = self.answer(response)
        self.assertEqual(failed.status, CheckStatus.L7STS)
        accepted, _ = self.answer(response, check=HttpCheck(expect=status_set("200,404")))
        self.assertEqual(accepted.status, CheckStatus.L7OK)

    def test_informational_then_final(self) -> None:
        """A 1xx response is skipped; the final status is judged."""
        result, _ = self.answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual((result.status, result.info), (CheckStatus.L7OK, "204 No Content"))

    def test_no_reason(self) -> None:
        """A status line without a reason phrase is fine; the info is the code alone."""
        result, _ = self.answer(b"HTTP/1.0 200\r\n\r\n")
        self.assertEqual((result.status, result.info), (CheckStatus.L7OK, "200"))

    def test_garbage(self) -> None:
        """Bytes that are not an HTTP response are L7RSP, saying what was wrong."""
        result, _ = self.answer(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        self.assertEqual(result.status, CheckStatus.L7RSP)
        self.assertIn("not an HTTP response: illegal status line", result.info)

    def test_head_too_large(self) -> None:
        """A response head larger than MAX_HEAD is L7RSP, read no further."""
        result, _ = self.answer(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: yyyyyyyy\r\n" * (MAX_HEAD // 8))
        self.assertEqual(result.status, CheckStatus.L7RSP)

    def test_cut_off(self) -> None:
        """A connection closed before the head is complete is L7RSP."""
        endpoint, checking = self.start()
        assert endpoint.protocol is not None
        endpoint.protocol.dataReceived(b"HTTP/1.1 200 OK\r\nX: ")
        endpoint.protocol.connectionLost(Failure(ConnectionError()))
        result = self.successResultOf(checking)
        self.assertEqual(
            (result.status, result.info),
            (CheckStatus.L7RSP, "connection closed before a complete response"),
        )

    def test_data_after_the_answer(self) -> None:
        """What arrives after the answer, and the close, change nothing."""
        endpoint, checking = self.start()
        assert endpoint.protocol is not None
        endpoint.protocol.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
        endpoint.protocol.dataReceived(b"garbage")
        endpoint.protocol.connectionLost(Failure(ConnectionError()))
        self.assertEqual(self.successResultOf(checking).status, CheckStatus.L7OK)

    def test_never_answers(self) -> None:
        """No complete head within the timeout, counted from the connect's start, is L7TOUT."""
        endpoint, checking = self.start(delay=0.6)
        self.clock.advance(0.39)
        self.assertNoResult(checking)
        self.clock.advance(0.01)
        result = self.successResultOf(checking)
        self.assertEqual((result.status, result.duration), (CheckStatus.L7TOUT, 1.0))
        self.assertTrue(endpoint.transport.disconnected)

    def test_timer_cancelled(self) -> None:
        """An answer in time leaves no delayed call behind."""
        self.answer(b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelled(self) -> None:
        """Cancelling the check aborts the connection and propagates as cancellation."""
        endpoint, checking = self.start()
        checking.cancel()
        self.failureResultOf(checking, CancelledError)
        self.assertTrue(endpoint.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_proxy_header(self) -> None:
        """check_send_proxy: v2 LOCAL, or v1 with the check's own ends, before the request."""
        endpoint, _ = self.start(HttpCheck(proxy=ProxyVersion.V2))
        self.assertTrue(endpoint.transport.value().startswith(v2_local() + b"GET / HTTP/1.1"))
        endpoint, _ = self.start(HttpCheck(proxy=ProxyVersion.V1))
        self.assertTrue(
            endpoint.transport.value().startswith(
                b"PROXY TCP4 127.0.0.1 127.0.0.2 40000 8008\r\nGET / HTTP/1.1"
            )
        )

    def test_connect_failures(self) -> None:
        """A refused or timed-out connect is reported as the TCP check reports it."""
        endpoints = FakeEndpoints()
        for settle, status in ((lambda a: a.refuse(), CheckStatus.L4CON),
                               (lambda a: a.time_out(), CheckStatus.L4TOUT)):  # fmt: skip
            checking = Deferred.fromCoroutine(
                http_check(endpoints(BACKEND, 1.0), self.clock, HttpCheck(), BACKEND, timeout=1.0)
            )
            settle(endpoints.last(BACKEND))
            self.assertEqual(self.successResultOf(checking).status, status)


class _Reactor(IReactorTCP, IReactorTime):
    """What the loopback tests need from the reactor."""


class _Canned(Protocol):
    """A server that answers the first bytes it reads with ``response`` (if any) and closes."""

    def __init__(self, response: bytes | None, gone: Deferred[None]) -> None:
        self._response = response
        self._gone = gone

    def dataReceived(self, data: bytes) -> None:
        if self._response is not None:
            assert self.transport is not None
            self.transport.write(self._response)
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._gone.callback(None)


class _Server(ServerFactory):
    noisy = False

    def __init__(self, response: bytes | None) -> None:
        self.response = response
        self.gone: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        self.gone.append(Deferred())
        return _Canned(self.response, self.gone[-1])


async def _stop(port: IListeningPort) -> None:
    """Stop listening and wait until the port is closed."""
    stopping = port.stopListening()
    if stopping is not None:
        await stopping


class HttpCheckLoopbackTests(TestCase):
    """Real HTTP checks of real loopback servers answering 200, 503, 404, garbage, or never."""

    timeout = 5

    def setUp(self) -> None:
        from twisted.internet import reactor  # noqa: PLC0415

        self.reactor = cast(_Reactor, reactor)

    async def check(self, response: bytes | None, drain: bool = False) -> CheckResult:
        server = _Server(response)
        port = self.reactor.listenTCP(0, server, interface="127.0.0.1")
        address = Address("127.0.0.1", cast(IPv4Address, port.getHost()).port)
        endpoint = TCP4ClientEndpoint(self.reactor, address.host, address.port, timeout=0.5)
        try:
            return await http_check(
                endpoint, self.reactor, HttpCheck(), address, timeout=0.5, drain_on_404=drain
            )
        finally:
            await _stop(port)
            await gatherResults(server.gone)

    async def test_answers(self) -> None:
        """200 passes, 503 fails, 404 drains an UP server, garbage is L7RSP, silence L7TOUT."""
        cases = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False, CheckStatus.L7OK, "200 OK"),
            (b"HTTP/1.1 503 Service Unavailable\r\n\r\n", False, CheckStatus.L7STS,
             "503 Service Unavailable"),
            (b"HTTP/1.1 404 Not Found\r\n\r\n", True, CheckStatus.L7OKC, "404 Not Found"),
            (b"\x00\x01garbage\r\n\r\n", False, CheckStatus.L7RSP, None),
            (None, False, CheckStatus.L7TOUT, ""),
        ]  # fmt: skip
        for response, drain, status, info in cases:
            result = await self.check(response, drain)
            self.assertEqual(result.status, status, response)
            if info is not None:
                self.assertEqual(result.info, info)

    async def test_refused(self) -> None:
        """A closed port is L4CON, as for a TCP check."""
        server = _Server(None)
        port = self.reactor.listenTCP(0, server, interface="127.0.0.1")
        address = Address("127.0.0.1", cast(IPv4Address, port.getHost()).port)
        await _stop(port)
        endpoint = TCP4ClientEndpoint(self.reactor, address.host, address.port, timeout=0.5)
        result = await http_check(endpoint, self.reactor, HttpCheck(), address, timeout=0.5)
        self.assertEqual(result.status, CheckStatus.L4CON)
