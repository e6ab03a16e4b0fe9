"""``--access-log``: one log line per finished proxied connection, in haproxy's terms.

Off by default, and then it costs nothing: :class:`~ddiscover.proxy.listeners.Listeners`
hands each service proxy :class:`LoggedSession` only when the option is on, so without it no
per-connection or per-read code runs.  When on, each side of a connection counts the bytes it
reads, and the session logs once both sockets are closed::

    127.0.0.1:51234 web/abc123 1/1503 120/4096 --

that is: client, ``service/server`` (``<NOSRV>`` when no backend was UP), connect time and
total time in milliseconds (haproxy's ``Tc``/``Tt``; ``-1`` when no backend connected), bytes
client-to-backend / backend-to-client, and haproxy's termination state (see
:class:`~ddiscover.modes.tcp.Session`).  The event also carries each value as a field
(``client``, ``service``, ``server``, ``address``, ``connect_ms``, ``duration_ms``,
``bytes_in``, ``bytes_out``, ``termination``, ``retries``) for JSON log consumers.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import ITransport

from ddiscover._log import make_logger
from ddiscover.modes.tcp import Dispatcher, Session
from ddiscover.proxy.relay import BackendSide, ClientSide

log = make_logger()

_LINE = (
    "{client} {service}/{server} {connect_ms}/{duration_ms} {bytes_in}/{bytes_out} {termination}"
)


class _CountingClientSide(ClientSide):
    """A client side that also counts the bytes it forwards, for the access log."""

    received = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        super().dataReceived(data)


class _CountingBackendSide(BackendSide):
    """A backend side that also counts the bytes it forwards, for the access log."""

    received = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        super().dataReceived(data)


class LoggedSession(Session):
    """A session that logs one access-log line when its last socket closes."""

    client_side = _CountingClientSide
    backend_side = _CountingBackendSide

    def __init__(self, proxy: Dispatcher) -> None:
        super().__init__(proxy)
        self.accepted = proxy.reactor.seconds()
        self.connected_at: float | None = None

    def backend_connected(self) -> None:
        """Note the connect time, then start forwarding."""
        self.connected_at = self._proxy.reactor.seconds()
        super().backend_connected()

    def _finish(self) -> None:
        """Close the session's books, then log it (``_finish`` is this package's hook)."""
        super()._finish()
        proxy, server = self._proxy, self.server
        client, backend = self.client, self.backend
        assert isinstance(client, _CountingClientSide)
        assert isinstance(backend, _CountingBackendSide)
        connected = self.connected_at
        log.info(
            _LINE,
            client=_peer(client.transport),
            service=proxy.name,
            server=server.id if server is not None else "<NOSRV>",
            address=str(server.address) if server is not None else "",
            connect_ms=-1 if connected is None else _ms(connected - self.accepted),
            duration_ms=_ms(proxy.reactor.seconds() - self.accepted),
            bytes_in=client.received,
            bytes_out=backend.received,
            termination=self.termination,
            retries=max(0, self.attempts - 1),
        )


def _peer(transport: ITransport | None) -> str:
    """``host:port`` of the client (``[host]:port`` for IPv6)."""
    # object, not IAddress: mypy-zope cannot narrow an interface to a class that provides it.
    peer: object = transport.getPeer() if transport is not None else None
    if isinstance(peer, IPv6Address):
        return f"[{peer.host}]:{peer.port}"
    if isinstance(peer, IPv4Address):
        return f"{peer.host}:{peer.port}"
    return str(peer)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
