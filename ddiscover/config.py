"""The validated run-time configuration, as one frozen value built by :mod:`ddiscover.tap`."""

from __future__ import annotations

import attrs
from hyperlink import URL

from ddiscover.registry.access import EtcdAccess


@attrs.frozen
class Config:
    """Everything ddiscover needs to know at start; every field is already in its final type.

    Durations are seconds.  ``etcd`` holds one or more base URLs such as
    ``http://10.0.0.5:2379`` that the registry fails over between, in order.
    ``stats_auth`` is the ``(user, password)`` of the stats page, or ``None`` for no auth and
    no admin actions; it is left out of ``repr`` so it never reaches a log.  ``maxconn`` 0
    (the option's default) means "derive it from the open-files limit", which
    :func:`ddiscover.tap.makeService` does, setting ``fd_limit`` too, before anything is
    built; ``fd_limit`` 0 means unknown (then listeners are not budgeted).
    """

    etcd: tuple[URL, ...]
    prefix: str = "/backends"
    interface: str = "0.0.0.0"
    stats_port: int = 1936
    stats_interface: str = "127.0.0.1"
    stats_auth: tuple[str, str] | None = attrs.field(default=None, repr=False)
    check_interval: float = 2.0
    rise: int = 3
    fall: int = 2
    connect_timeout: float = 5.0
    idle_timeout: float = 60.0
    retries: int = 3
    maxconn: int = 4096
    fd_limit: int = 0
    drain_timeout: float = 8.0
    log_level: str = "info"
    backlog: int = 4096
    watch_timeout: float = 60.0
    etcd_timeout: float = 5.0
    access_log: bool = False
    etcd_access: EtcdAccess = attrs.field(factory=EtcdAccess)
