"""The TCP connect check: connect, hang up at once, and say how it went in haproxy's words.

The health checker and the registrar's ``--check`` both use :func:`connect_check`, so a
backend is judged the same way whichever of them looks at it, and every failure, whatever
exception it comes as (a refused connect, a timeout, a hostname that does not resolve), is a
failed check rather than an error that escapes the caller's loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import attrs
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IProtocol,
    IProtocolFactory,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from ddiscover.catalog import Address
from ddiscover.health.result import CheckResult, CheckStatus, classify_failure
from ddiscover.proxy import fastpath
from ddiscover.proxy.reactor import ProxyReactor

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
    connect_only = True
    """Tells :class:`LeanEndpoint` that the connect is all this factory's protocol needs."""


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


@implementer(IStreamClientEndpoint)
@attrs.frozen
class LeanEndpoint:
    """A TCP client endpoint over the proxy's lean connector (:func:`fastpath.connect`).

    ``TCP4ClientEndpoint`` goes through ``connectTCP``'s ``Connector`` and ``Client`` and a
    wrapping factory; ``fastpath.connect`` does ``socket()``, ``connect()`` and one wait for
    writability, falling back to ``connectTCP`` for hostnames.  It serves factories marked
    ``connect_only`` (the check's), whose protocol is not even given a transport: the connect
    is all it asks for, so the socket is closed at once and the Deferred fires with the
    unconnected protocol.  Other factories get Twisted's own TCP endpoint.
    ``bench/check_cost.py`` measured 0.51x the CPU per check of the endpoint
    (0.49x against a closed port).  A cancelled connect fails with ``CancelledError``.
    """

    reactor: IReactorTCP
    host: str
    port: int
    timeout: float

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:  # noqa: N803
        if not getattr(protocolFactory, "connect_only", False):
            kind = TCP6ClientEndpoint if ":" in self.host else TCP4ClientEndpoint
            endpoint = kind(self.reactor, self.host, self.port, self.timeout)
            return cast(Deferred[IProtocol], endpoint.connect(protocolFactory))
        factory = _Connecting(protocolFactory)
        connector: IConnector | None = None

        def cancel(_: Deferred[IProtocol]) -> None:
            factory.cancelled = True  # its UserError is not the outcome: CancelledError is
            if connector is not None:
                connector.stopConnecting()

        factory.done = Deferred(cancel)
        try:
            reactor = cast(ProxyReactor, self.reactor)
            connector = fastpath.connect(reactor, self.host, self.port, factory, self.timeout)
        except Exception:
            return fail()
        return factory.done


class _Connecting(ClientFactory):
    """Hands the connect's outcome to the endpoint's Deferred; quiet, one per connect."""

    noisy = False
    done: Deferred[IProtocol]
    cancelled = False

    def __init__(self, wrapped: IProtocolFactory) -> None:
        self._wrapped = wrapped

    # The stubs type buildProtocol by the factory's own protocol class; this one hands on
    # whatever the wrapped factory builds.
    def buildProtocol(self, addr: IAddress | None) -> IProtocol | None:  # type: ignore[override]
        assert addr is not None, "connectors always say where they connected"
        protocol = self._wrapped.buildProtocol(addr)
        if protocol is None:
            self._settle(Failure(error.NoProtocol()))
            return None
        self._settle(protocol)
        return None

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self._settle(reason)

    def _settle(self, outcome: IProtocol | Failure) -> None:
        if self.cancelled or self.done.called:
            return
        if isinstance(outcome, Failure):
            self.done.errback(outcome)
        else:
            self.done.callback(outcome)


def tcp_endpoint_factory(reactor: IReactorTCP) -> EndpointFactory:
    """Endpoints for checks: lean TCP connects bounded by the given timeout."""

    def endpoint_for(address: Address, timeout: float) -> IStreamClientEndpoint:
        return LeanEndpoint(reactor, address.host, address.port, timeout)

    return endpoint_for
