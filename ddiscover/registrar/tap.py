"""The ``twistd ddiscover-register`` command line: options, their validation, a thin makeService.

Example, for a container publishing 8080 on the host whose address is 10.0.0.5::

    twistd -n ddiscover-register --etcd 10.0.0.1:2379 --service web --port 80 \\
        --address 10.0.0.5:8080 --check 127.0.0.1:8080
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any, ClassVar

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.web.client import HTTPConnectionPool

from ddiscover._log import set_level
from ddiscover.command import CommandOptions, with_log_level
from ddiscover.registrar.keys import Registration
from ddiscover.registrar.service import Registrar
from ddiscover.registry.client import EtcdHTTP, build_http_client
from ddiscover.registry.layout import BadValueError, parse_address, parse_port
from ddiscover.registry.options import (
    ETCD_OPTIONS,
    LOG_LEVEL_OPTION,
    check_log_level,
    parse_access,
    parse_endpoints,
)


class Options(CommandOptions):
    """Options of ``twistd ddiscover-register``; ``--etcd`` falls back to ``$ETCD_HOST``."""

    command = "ddiscover-register"
    synopsis = "--service NAME --port PORT --address HOST:PORT [options]"
    longdesc = (
        "Keep <prefix>/<service>/<id> = HOST:PORT and <prefix>/<service>/port = PORT alive in "
        "etcd (v2: TTL and refresh; v3: a lease and keepalive) while this process runs, and "
        "delete them when it stops. See docs/registrar.md."
    )
    optParameters: ClassVar[list[list[Any]]] = [
        ["etcd", None, None, "etcd endpoint(s), comma-separated; defaults to $ETCD_HOST."],
        ["prefix", None, "/backends", "Key prefix the services are registered under."],
        ["service", None, None, "Service name (may contain '/')."],
        ["port", None, None, "The port ddiscover listens on for this service."],
        ["address", None, None, "host:port this backend accepts connections on."],
        ["id", None, None, "Backend id (default: <hostname>-<address port>)."],
        ["ttl", None, 15, "Seconds the keys live without a refresh (at least 2)."],
        ["check", None, None, "Register only while this host:port accepts TCP connections."],
        LOG_LEVEL_OPTION,
        *ETCD_OPTIONS,
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._environ = os.environ if environ is None else environ

    def postOptions(self) -> None:
        """Check every value and build :attr:`registration`, :attr:`endpoints`, :attr:`access`."""
        for name in ("service", "port", "address"):
            if not self[name]:
                raise usage.UsageError(f"--{name} is required")
        self.endpoints = parse_endpoints(self, self._environ)
        self.access = parse_access(self, self._environ, self.endpoints)
        service = self["service"].strip("/")
        prefix = self["prefix"].rstrip("/")
        if not prefix.startswith("/") or "//" in prefix + "/" + service:
            raise usage.UsageError(
                f"--prefix and --service must make an etcd path, got {prefix!r} and {service!r}"
            )
        try:
            port = parse_port(str(self["port"]))
            address = parse_address(self["address"])
            self.check = parse_address(self["check"]) if self["check"] else None
        except BadValueError as e:
            raise usage.UsageError(str(e)) from None
        ttl = str(self["ttl"]).strip()
        if not ttl.isdigit() or int(ttl) < 2:
            raise usage.UsageError(f"--ttl must be a whole number >= 2, got {self['ttl']!r}")
        id = self["id"] or f"{socket.gethostname()}-{address.port}"
        if "/" in id or id == "port":
            raise usage.UsageError(f"--id {id!r} must not contain '/' nor be 'port'")
        check_log_level(self)
        self.registration = Registration(prefix, service, id, address, port, int(ttl))


class _RegistrarService(Service):
    """Runs the registrar, and closes the cached etcd connections once it has deregistered."""

    def __init__(self, registrar: Registrar, pool: HTTPConnectionPool) -> None:
        self._registrar = registrar
        self._pool = pool

    def startService(self) -> None:
        super().startService()
        self._registrar.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()

        async def stop() -> None:
            await self._registrar.stopService()
            await self._pool.closeCachedConnections()

        return Deferred.fromCoroutine(stop())


def makeService(options: Options) -> IService:
    """Resolve the reactor and build the registrar with its HTTP client."""
    from twisted.internet import reactor  # noqa: PLC0415 (twistd may install another)

    from ddiscover.health.probe import tcp_endpoint_factory  # noqa: PLC0415

    set_level(options["log-level"])
    http, pool = build_http_client(reactor, options.access.tls, 5.0)
    etcd = EtcdHTTP(
        http,
        reactor,
        options.endpoints,
        request_timeout=5.0,
        credentials=options.access.credentials,
        forget_connections=pool.closeCachedConnections,
    )
    registrar = Registrar(
        etcd,
        reactor,
        options.registration,
        options.access.api,
        check=options.check,
        endpoint_for=tcp_endpoint_factory(reactor),
    )
    return with_log_level(_RegistrarService(registrar, pool), options["log-level"], options)
