"""The TCP connect check: connect, hang up at once, and say how it went in haproxy's words.

The health checker and the registrar's ``--check`` both use :func:`connect_check`, so a
backend is judged the same way whichever of them looks at it, and every failure, whatever
exception it comes as (a refused connect, a timeout, a hostname that does not resolve), is a
failed check rather than an error that escapes the caller's loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.internet.defer import CancelledError
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from ddiscover.catalog import Address
from ddiscover.health.result import CheckResult, CheckStatus, classify_failure

EndpointFactory = Callable[[Address, float], IStreamClientEndpoint]
"""Builds the endpoint for one check: ``(address, connect timeout) -> endpoint``."""


class _CloseAtOnce(Protocol):
    """The check's end of a connection: the connect is all it proves, so it closes at once.

    ``loseConnection`` rather than ``abortConnection``: nothing was written, so there is nothing
    to flush and it releases the socket on the next reactor turn just as soon, and it is part
    of ``ITransport``, which every endpoint's transport provides (``abortConnection`` is only
    promised by ``ITCPTransport``).  Closing here, not where the connect Deferred fires, means
    the socket is released even if that Deferred's consumer has gone away.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


class _CheckFactory(Factory):
    """Builds :class:`_CloseAtOnce`; quiet, since it starts and stops on every check."""

    protocol = _CloseAtOnce
    noisy = False


async def connect_check(endpoint: IStreamClientEndpoint, clock: IReactorTime) -> CheckResult:
    """Connect through ``endpoint`` once and hang up; every failure becomes a result.

    Only cancellation (the caller no longer wants the answer) propagates: endpoints report a
    cancelled connect as ``ConnectingCancelledError``.
    """
    started = clock.seconds()
    try:
        await endpoint.connect(_CheckFactory())
    except (CancelledError, ConnectingCancelledError):
        raise
    except Exception:
        return classify_failure(Failure(), clock.seconds() - started)
    return CheckResult(CheckStatus.L4OK, "", clock.seconds() - started)


async def check_address(
    endpoint_for: EndpointFactory, address: Address, timeout: float, clock: IReactorTime
) -> CheckResult:
    """Check ``address`` through an endpoint from ``endpoint_for``; a factory that raises
    (a malformed host, say) is a failed check too, not an error for the caller's loop."""
    try:
        endpoint = endpoint_for(address, timeout)
    except Exception:
        return classify_failure(Failure())
    return await connect_check(endpoint, clock)


def tcp_endpoint_factory(reactor: IReactorTCP) -> EndpointFactory:
    """Endpoints for checks: plain TCP connects bounded by the given timeout."""

    def endpoint_for(address: Address, timeout: float) -> IStreamClientEndpoint:
        kind = TCP6ClientEndpoint if ":" in address.host else TCP4ClientEndpoint
        return cast(IStreamClientEndpoint, kind(reactor, address.host, address.port, timeout))

    return endpoint_for
