"""A fake endpoint factory for outbound connects whose outcome each test decides by hand.

``FakeEndpoints`` has the shape of ddiscover's endpoint factory, ``(address, timeout) ->
IStreamClientEndpoint``, and records every ``connect()`` as an :class:`Attempt`.  The test
fires the attempt with the same values a real ``TCP4ClientEndpoint`` produces: a protocol
connected to a ``StringTransport``, ``ConnectionRefusedError``, ``TimeoutError``, the
``ConnectBindError(EMFILE)`` that ``tcp.Client`` raises when we are out of file descriptors,
and ``ConnectingCancelledError`` when the connect is cancelled.
"""

from __future__ import annotations

import errno
import os

import attrs
from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from ddiscover.catalog import Address


def _peer(address: Address) -> IPv4Address | IPv6Address:
    if ":" in address.host:
        return IPv6Address("TCP", address.host, address.port)
    return IPv4Address("TCP", address.host, address.port)


def _errno_error(kind: type[error.ConnectError], code: int) -> error.ConnectError:
    return kind(code, os.strerror(code))


@attrs.define(eq=False)
class Attempt:
    """One ``connect()``: where to, with which timeout, and the Deferred the test settles."""

    address: Address
    timeout: float
    factory: IProtocolFactory
    cancelled: bool = False
    deferred: Deferred[IProtocol] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.deferred = Deferred(self._cancel)

    def succeed(self) -> StringTransport:
        """Connect: build the protocol, attach it to a new ``StringTransport``, fire."""
        protocol = self.factory.buildProtocol(_peer(self.address))
        assert protocol is not None, "the factory built no protocol"
        transport = StringTransport(peerAddress=_peer(self.address))
        protocol.makeConnection(transport)
        self.deferred.callback(protocol)
        return transport

    def refuse(self) -> None:
        """Fail as a connect to a closed port does."""
        self.deferred.errback(_errno_error(error.ConnectionRefusedError, errno.ECONNREFUSED))

    def time_out(self) -> None:
        """Fail as the connector does when its ``timeout`` expires."""
        self.deferred.errback(error.TimeoutError())

    def not_resolved(self) -> None:
        """Fail as a hostname endpoint does when the name does not resolve."""
        self.deferred.errback(error.DNSLookupError(self.address.host))

    def emfile(self) -> None:
        """Fail as ``connectTCP`` does when the process has no file descriptor left."""
        self.deferred.errback(_errno_error(error.ConnectBindError, errno.EMFILE))

    def _cancel(self, deferred: Deferred[IProtocol]) -> None:
        self.cancelled = True
        deferred.errback(error.ConnectingCancelledError(_peer(self.address)))


@implementer(IStreamClientEndpoint)
@attrs.frozen
class _FakeEndpoint:
    endpoints: FakeEndpoints
    address: Address
    timeout: float

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:  # noqa: N803
        attempt = Attempt(self.address, self.timeout, protocolFactory)
        self.endpoints.attempts.append(attempt)
        return attempt.deferred


@attrs.define(eq=False)
class FakeEndpoints:
    """The endpoint factory: call it like ``endpoint_for(address, timeout)``."""

    attempts: list[Attempt] = attrs.Factory(list)

    def __call__(self, address: Address, timeout: float) -> IStreamClientEndpoint:
        return _FakeEndpoint(self, address, timeout)

    def pending(self) -> list[Attempt]:
        """The attempts the test has not settled yet, oldest first."""
        return [a for a in self.attempts if not a.deferred.called]

    def last(self, address: Address) -> Attempt:
        """The most recent attempt to connect to ``address``."""
        return [a for a in self.attempts if a.address == address][-1]
