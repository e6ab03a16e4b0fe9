"""The HTTP health check (``check = "http"``): one HTTP/1.1 request, judged by its status.

Each check connects, sends one request (``check_method`` ``GET``, ``check_path`` ``/``, a
``Host`` header that defaults to the checked address, ``Connection: close``), reads the
response head, and hangs up.  It works for services in TCP mode: Patroni's pattern, where the
data port is PostgreSQL and the check asks the REST API on another port (``check_port``)
whether this node is the primary.  The status is matched against ``check_expect`` (default
200-399: haproxy's and nginx's "2xx or 3xx" rather than Envoy's 200 only), and the result is
worded as haproxy words it:

- ``L7OK`` with the code and reason, ``200 OK``: a status that is expected;
- ``L7STS``, ``503 Service Unavailable``: a status that is not;
- ``L7OKC``, ``404 Not Found``: a 404 from a server that is UP, when the caller asks for it;
  haproxy's ``http-check disable-on-404``, which puts the server in DRAIN (NOLB) without
  failing it, so an application can ask to be drained before it stops; from a server that is
  not UP a 404 is judged like any other status, as in haproxy;
- ``L7RSP``: not an HTTP response, a head larger than :data:`MAX_HEAD` bytes, or the
  connection closed before the head was complete;
- ``L7TOUT``: no complete response head within the check's timeout, which counts from the
  start of the connect, so a check never takes longer than a TCP check would;
- connect failures as the TCP check reports them (``L4CON``, ``L4TOUT``, ``SOCKERR``).

The response is parsed by h11 (a well-kept, strict HTTP/1.1 parser), bounded to
:data:`MAX_HEAD` bytes.  A check that must send a PROXY header (``check_send_proxy``) sends it
before the request: v2 LOCAL, or v1 with the check connection's own addresses.
"""

from __future__ import annotations

from collections.abc import Container

import attrs
import h11
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from ddiscover.catalog import Address
from ddiscover.health.result import CheckResult, CheckStatus, classify_failure
from ddiscover.policy.values import ProxyVersion, StatusSet
from ddiscover.proxy.proxy_protocol import check_header
from ddiscover.text import clip

MAX_HEAD = 8192
"""The most bytes of response head (status line and headers) a check reads."""

USER_AGENT = "ddiscover-check"


@attrs.frozen
class HttpCheck:
    """What one service's HTTP checks send and accept."""

    method: str = "GET"
    path: str = "/"
    host: str | None = None
    expect: Container[int] = StatusSet(((200, 399),))
    proxy: ProxyVersion = ProxyVersion.NONE

    def request(self, address: Address) -> h11.Request:
        """The request of a check of ``address``."""
        return h11.Request(
            method=self.method,
            target=self.path,
            headers=[
                ("Host", self.host or str(address)),
                ("User-Agent", USER_AGENT),
                ("Connection", "close"),
            ],
        )


@attrs.frozen
class _Problem:
    """A check that got no usable response: the status that says why, and the detail."""

    status: CheckStatus
    info: str = ""


class _CheckProtocol(Protocol):
    """One check's connection: send the request, read up to the response head, hang up.

    ``answer`` fires once, with h11's ``Response`` or a :class:`_Problem`; whatever comes
    after it is ignored.  Cancelling ``answer`` aborts the connection.
    """

    def __init__(self, request: h11.Request, proxy: ProxyVersion) -> None:
        self._proxy = proxy
        self._parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self._request = self._parser.send(request) + self._parser.send(h11.EndOfMessage())
        self.answer: Deferred[h11.Response | _Problem] = Deferred(self._cancel)

    def connectionMade(self) -> None:
        assert self.transport is not None
        # Twisted types getHost/getPeer as IAddress; only IP addresses get a v1 header.
        local: object = self.transport.getHost()
        peer: object = self.transport.getPeer()
        prefix = b""
        if isinstance(local, IPv4Address | IPv6Address) and isinstance(
            peer, IPv4Address | IPv6Address
        ):
            prefix = check_header(self._proxy, local, peer)
        self.transport.write(prefix + self._request)

    def dataReceived(self, data: bytes) -> None:
        if self.answer.called:
            return
        self._parser.receive_data(data)
        self._read()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.answer.called:
            message = "connection closed before a complete response"
            self._settle(_Problem(CheckStatus.L7RSP, message))

    def time_out(self) -> None:
        """The check's time is up: give up on the response and abort the connection.

        Aborted rather than closed: a server that does not answer may not read either, and
        a close would wait for our request to be read.
        """
        if not self.answer.called:
            self.answer.callback(_Problem(CheckStatus.L7TOUT))
            self._abort()

    def _read(self) -> None:
        try:
            while True:
                event = self._parser.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.Response):
                    self._settle(event)
                    return
                if not isinstance(event, h11.InformationalResponse):
                    self._settle(_Problem(CheckStatus.L7RSP, "no response"))
                    return
        except h11.RemoteProtocolError as error:
            self._settle(_Problem(CheckStatus.L7RSP, f"not an HTTP response: {clip(str(error))}"))

    def _settle(self, answer: h11.Response | _Problem) -> None:
        self.answer.callback(answer)
        if self.transport is not None:
            self.transport.loseConnection()

    def _cancel(self, _answer: Deferred[h11.Response | _Problem]) -> None:
        self._abort()

    def _abort(self) -> None:
        """Drop the connection now (``abortConnection`` is ITCPTransport's, not ITransport's)."""
        if self.transport is not None:
            abort = getattr(self.transport, "abortConnection", self.transport.loseConnection)
            abort()


def _judge(
    response: h11.Response | _Problem, check: HttpCheck, drain_on_404: bool
) -> tuple[CheckStatus, str]:
    if isinstance(response, _Problem):
        return response.status, response.info
    code = response.status_code
    detail = f"{code} {clip(response.reason.decode('latin-1'))}".rstrip()
    if code == 404 and drain_on_404:
        return CheckStatus.L7OKC, detail
    if code in check.expect:
        return CheckStatus.L7OK, detail
    return CheckStatus.L7STS, detail


async def http_check(
    endpoint: IStreamClientEndpoint,
    clock: IReactorTime,
    check: HttpCheck,
    address: Address,
    *,
    timeout: float,
    drain_on_404: bool = False,
) -> CheckResult:
    """Check ``address`` over ``endpoint`` (which bounds the connect by ``timeout``) once.

    ``drain_on_404`` is whether the server is UP now, so that a 404 drains it (``L7OKC``).
    Every failure is a result; only cancellation propagates.
    """
    started = clock.seconds()
    protocol = _CheckProtocol(check.request(address), check.proxy)
    factory = Factory.forProtocol(lambda: protocol)
    factory.noisy = False
    try:
        await endpoint.connect(factory)
    except (CancelledError, ConnectingCancelledError):
        raise
    except Exception:
        return classify_failure(Failure(), clock.seconds() - started)
    remaining = max(0.0, timeout - (clock.seconds() - started))
    timer = clock.callLater(remaining, protocol.time_out)
    try:
        response = await protocol.answer
    finally:
        if timer.active():
            timer.cancel()
    status, info = _judge(response, check, drain_on_404)
    return CheckResult(status, info, clock.seconds() - started)
