"""What the proxy needs of a reactor, named once below every module that uses it.

:mod:`ddiscover.modes.tcp`, :mod:`ddiscover.proxy.service`, :mod:`ddiscover.proxy.fastpath` and
:mod:`ddiscover.proxy.listeners` all take a :class:`ProxyReactor`; keeping it here, rather than
in one of them, is what lets them import each other in one direction only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet import protocol
from twisted.internet.interfaces import IConnector, IDelayedCall, IListeningPort


class ProxyReactor(Protocol):
    """What the proxy needs of a reactor: TCP listen and connect, and the clock.

    ``MemoryReactorClock`` satisfies it as is.  The global reactor's ``callLater`` returns a
    ``DelayedCall``, which mypy-zope does not match against ``IDelayedCall`` structurally, so
    the twistd edge casts the reactor to this type.
    """

    def listenTCP(
        self,
        port: int,
        factory: protocol.ServerFactory,
        backlog: int = ...,
        interface: str = ...,
    ) -> IListeningPort:
        """Listen on ``interface:port`` with an accept queue of ``backlog``."""

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: protocol.ClientFactory,
        timeout: float = ...,
    ) -> IConnector:
        """Connect to ``host:port``, giving up after ``timeout`` seconds."""

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> IDelayedCall:
        """Call ``callable`` after ``delay`` seconds."""

    def seconds(self) -> float:
        """The reactor's current time."""
