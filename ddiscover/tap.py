"""The ``twistd ddiscover`` command line: options, their validation, and a thin makeService.

Every value is checked here, where it is parsed, so a bad option stops the process with one
line that names the option and the value; nothing past this module sees an unchecked value.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs
from twisted.application.service import IService
from twisted.python import usage

from ddiscover import __version__
from ddiscover._log import make_logger, set_level
from ddiscover.command import CommandOptions, with_log_level
from ddiscover.config import Config
from ddiscover.process import freeze_startup_objects, raise_fd_limit, stop_gracefully_on_sigterm
from ddiscover.proxy.budget import fd_budget, fit_maxconn
from ddiscover.registry.options import (
    ETCD_OPTIONS,
    LOG_LEVEL_OPTION,
    check_log_level,
    parse_access,
    parse_endpoints,
)

log = make_logger()


def _number(kind: Callable[[str], Any], minimum: float, maximum: float | None = None) -> Any:
    """A parser for one numeric option: its type and allowed range."""

    def parse(name: str, raw: object) -> Any:
        word = "a whole number" if kind is int else "a number"
        bounds = f">= {minimum:g}" if maximum is None else f"from {minimum:g} to {maximum:g}"
        try:
            value = kind(str(raw).strip())
        except ValueError:
            raise usage.UsageError(f"--{name} must be {word} {bounds}, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise usage.UsageError(f"--{name} must be {word} {bounds}, got {raw!r}")
        return value

    return parse


_NUMBERS = {
    "stats-port": _number(int, 0, 65535),
    "check-interval": _number(float, 0.01),
    "rise": _number(int, 1, 1000),
    "fall": _number(int, 1, 1000),
    "connect-timeout": _number(float, 0.01),
    "idle-timeout": _number(float, 0.01),
    "retries": _number(int, 1, 100),
    "maxconn": _number(int, 0),
    "drain-timeout": _number(float, 0),
    "backlog": _number(int, 1, 65535),
}


def parse_stats_auth(raw: str) -> tuple[str, str]:
    """Split ``user:password``; an error says what is wrong without repeating the password."""
    user, sep, password = raw.partition(":")
    problem = "no ':'" if not sep else "an empty user" if not user else "an empty password"
    if not sep or not user or not password:
        raise usage.UsageError(f"--stats-auth must be user:password, got {problem}")
    return user, password


def _parse_interface(name: str, raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw.strip().strip("[]")))
    except ValueError:
        raise usage.UsageError(f"--{name} {raw!r} is not an IP address") from None


class Options(CommandOptions):
    """Options of ``twistd ddiscover``; values on the command line win over ``ETCD_HOST``."""

    command = "ddiscover"
    synopsis = "[options]"
    longdesc = (
        "Watch etcd for services registered the docker-register way "
        "(<prefix>/<service>/<id> = host:port, <prefix>/<service>/port = listen port) "
        "and forward every TCP connection on a service's port, round-robin, to a healthy "
        "backend. See docs/configuration.md for every option."
    )
    optParameters: ClassVar[list[list[Any]]] = [
        [
            "etcd",
            None,
            None,
            "etcd endpoint(s): host:port or http://host:port, comma-separated to fail over "
            "in order. Defaults to $ETCD_HOST; one of the two is required.",
        ],
        ["prefix", None, "/backends", "Key prefix the services are registered under."],
        ["interface", None, "0.0.0.0", "Address the service listeners bind to."],
        ["stats-port", None, 1936, "Port of the stats/health HTTP server (0 disables it)."],
        ["stats-interface", None, "127.0.0.1", "Address the stats server binds to."],
        [
            "stats-auth",
            None,
            None,
            "user:password for HTTP basic auth on every stats path but /health; also "
            "enables the admin actions (drain, disable, enable). Off by default.",
        ],
        ["check-interval", None, 2.0, "Seconds between health checks of a backend (inter)."],
        ["rise", None, 3, "Consecutive successful checks that bring a DOWN backend UP."],
        ["fall", None, 2, "Consecutive failed checks that take an UP backend DOWN."],
        ["connect-timeout", None, 5.0, "Seconds allowed for one connect to a backend."],
        ["idle-timeout", None, 60.0, "Close a proxied connection idle this long both ways."],
        ["retries", None, 3, "Connect attempts per client connection, on different backends."],
        [
            "maxconn",
            None,
            0,
            "Global cap on proxied connections; above it, stop accepting. 0 (the default) "
            "derives it from the open-files limit: about (limit - reserve) / 2.",
        ],
        ["drain-timeout", None, 8.0, "On SIGTERM, seconds open connections may take to finish."],
        ["backlog", None, 4096, "Listen backlog of each service port."],
        LOG_LEVEL_OPTION,
        *ETCD_OPTIONS,
    ]
    optFlags: ClassVar[list[list[Any]]] = [
        [
            "access-log",
            None,
            "Log one line per finished proxied connection (off by default).",
        ],
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._environ = os.environ if environ is None else environ

    def opt_version(self) -> None:
        """Print the version of ddiscover and exit."""
        print(f"ddiscover {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        """Check every value, fill ``--etcd`` from ``ETCD_HOST``, and build :attr:`config`."""
        for name, parse in _NUMBERS.items():
            self[name] = parse(name, self[name])
        prefix = self["prefix"].strip()
        if not prefix.startswith("/") or prefix.rstrip("/") == "" or "//" in prefix:
            raise usage.UsageError(
                f"--prefix must be an absolute etcd path like /backends, got {prefix!r}"
            )
        check_log_level(self)
        endpoints = parse_endpoints(self, self._environ)
        self.config = Config(
            etcd=endpoints,
            etcd_access=parse_access(self, self._environ, endpoints),
            prefix=prefix.rstrip("/"),
            interface=_parse_interface("interface", self["interface"]),
            stats_port=self["stats-port"],
            stats_interface=_parse_interface("stats-interface", self["stats-interface"]),
            stats_auth=(
                parse_stats_auth(self["stats-auth"]) if self["stats-auth"] is not None else None
            ),
            access_log=bool(self["access-log"]),
            check_interval=self["check-interval"],
            rise=self["rise"],
            fall=self["fall"],
            connect_timeout=self["connect-timeout"],
            idle_timeout=self["idle-timeout"],
            retries=self["retries"],
            maxconn=self["maxconn"],
            drain_timeout=self["drain-timeout"],
            backlog=self["backlog"],
            log_level=self["log-level"],
        )


def makeService(options: Options) -> IService:
    """Resolve the process-wide parts (reactor, fd limit, log level) and build the service."""
    # Imported here, not at module level: `twistd --reactor` must be able to install another
    # reactor before anything touches the global one, and option parsing stays light.
    from twisted.internet import reactor  # noqa: PLC0415

    from ddiscover.app import build_service  # noqa: PLC0415

    set_level(options.config.log_level)
    config = fit_to_fd_limit(options.config, raise_fd_limit())
    reactor.callWhenRunning(stop_gracefully_on_sigterm, reactor, reactor.stop)
    reactor.callWhenRunning(freeze_startup_objects)
    # Freeze again once the catalog is in: its services, backends, health records and
    # listeners live as long as the process too, and at 1,000 services x 5 backends each full
    # collection walking them took 200-300 ms of the reactor (bench/stats_render.py).
    service = build_service(config, reactor, on_first_catalog=freeze_startup_objects)
    return with_log_level(service, config.log_level, options)


def fit_to_fd_limit(config: Config, limit: int) -> Config:
    """``config`` with its maxconn derived from (or checked against) the open-files ``limit``."""
    maxconn, problem = fit_maxconn(config.maxconn, fd_budget(limit))
    if problem is not None:
        log.warn("{problem}", problem=problem)
    elif config.maxconn == 0:
        log.info(
            "maxconn {maxconn}, derived from the open-files limit {limit}",
            maxconn=maxconn,
            limit=limit,
        )
    return attrs.evolve(config, maxconn=maxconn, fd_limit=limit)
