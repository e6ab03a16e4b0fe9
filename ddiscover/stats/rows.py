"""The rows of haproxy's stats table, built from a :class:`~ddiscover.stats.state.StatsState`.

One pure function, :func:`build_rows`, feeds every format: the HTML page, ``;csv``, ``;json``
and the Prometheus metrics.  Each service gives a ``FRONTEND`` row, one row per server, and a
``BACKEND`` row, in that order, as haproxy's ``show stat`` does; a service the registry
rejected as a whole gives only its ``FRONTEND`` row, stopped, with the reason.

A :class:`Row` has an attribute for each field of haproxy's CSV that applies to a TCP proxy,
named as in haproxy's ``doc/management.txt`` §9.1, and ``None`` where a field does not apply
to that kind of row; ddiscover's own fields (``ddiscover_*``) follow haproxy's static fields.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from ddiscover.catalog import Address
from ddiscover.health.state import HealthRecord
from ddiscover.proxy.balancer import Admin
from ddiscover.proxy.counters import Counters
from ddiscover.proxy.listeners import FULL, OPEN
from ddiscover.stats.state import KeyState, ServerState, ServiceState, StatsState

#: haproxy 2.6's static CSV fields, in order; tools read them by position.
# fmt: off
HAPROXY_FIELDS = (
    "pxname", "svname", "qcur", "qmax", "scur", "smax", "slim", "stot", "bin", "bout", "dreq",
    "dresp", "ereq", "econ", "eresp", "wretr", "wredis", "status", "weight", "act", "bck",
    "chkfail", "chkdown", "lastchg", "downtime", "qlimit", "pid", "iid", "sid", "throttle",
    "lbtot", "tracked", "type", "rate", "rate_lim", "rate_max", "check_status", "check_code",
    "check_duration", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other",
    "hanafail", "req_rate", "req_rate_max", "req_tot", "cli_abrt", "srv_abrt", "comp_in",
    "comp_out", "comp_byp", "comp_rsp", "lastsess", "last_chk", "last_agt", "qtime", "ctime",
    "rtime", "ttime", "agent_status", "agent_code", "agent_duration", "check_desc",
    "agent_desc", "check_rise", "check_fall", "check_health", "agent_rise", "agent_fall",
    "agent_health", "addr", "cookie", "mode", "algo", "conn_rate", "conn_rate_max", "conn_tot",
    "intercepted", "dcon", "dses", "wrew", "connect", "reuse", "cache_lookups", "cache_hits",
    "srv_icur", "src_ilim", "qtime_max", "ctime_max", "rtime_max", "ttime_max", "eint",
    "idle_conn_cur", "safe_conn_cur", "used_conn_cur", "need_conn_est", "uweight",
    "agg_server_status", "agg_server_status_check", "agg_check_status",
)
# fmt: on

#: ddiscover's fields, after haproxy's ``-`` column that ends the static fields: the registry
#: key, the TTL etcd reported when ddiscover last read it and the seconds since that read
#: (not the TTL left now: a v2 ``refresh=true`` renews a key without telling watchers), the
#: admin state, and why a frontend is not listening.
EXTRA_FIELDS = (
    "ddiscover_key",
    "ddiscover_ttl_read",
    "ddiscover_read_age",
    "ddiscover_admin",
    "ddiscover_reason",
)

FRONTEND, BACKEND, SERVER = 0, 1, 2
#: Each kind of row by name, as haproxy's JSON ``objType`` spells it.
KIND_NAMES = {FRONTEND: "Frontend", BACKEND: "Backend", SERVER: "Server"}

Value = int | str | None


@attrs.frozen
class Row:
    """One line of the stats table; ``condition`` picks haproxy's row colour.

    ``condition`` is one of ``frontend``, ``frontend_stopped``, ``backend``, ``up``,
    ``going_down``, ``going_up``, ``down``, ``draining``, ``maint`` and ``no_check``.
    """

    pxname: str
    svname: str
    type: int
    status: str
    condition: str
    iid: int
    sid: int = 0
    pid: int = 1
    mode: str = "tcp"
    scur: int | None = None
    smax: int | None = None
    slim: int | None = None
    stot: int | None = None
    bin: int | None = None
    bout: int | None = None
    econ: int | None = None
    eresp: int | None = None
    wretr: int | None = None
    wredis: int | None = None
    weight: int | None = None
    uweight: int | None = None
    act: int | None = None
    bck: int | None = None
    chkfail: int | None = None
    chkdown: int | None = None
    lastchg: int | None = None
    downtime: int | None = None
    lbtot: int | None = None
    rate: int | None = None
    rate_max: int | None = None
    check_status: str | None = None
    check_duration: int | None = None
    cli_abrt: int | None = None
    srv_abrt: int | None = None
    lastsess: int | None = None
    last_chk: str | None = None
    check_desc: str | None = None
    check_rise: int | None = None
    check_fall: int | None = None
    check_health: int | None = None
    addr: str | None = None
    algo: str | None = None
    conn_rate: int | None = None
    conn_rate_max: int | None = None
    conn_tot: int | None = None
    ddiscover_key: str | None = None
    ddiscover_ttl_read: int | None = None
    ddiscover_read_age: int | None = None
    ddiscover_admin: str | None = None
    ddiscover_reason: str | None = None

    def value(self, field: str) -> Value:
        """The value of a CSV field by name; ``None`` for fields that do not apply."""
        value: Value = getattr(self, field, None)
        return value


SLICE = 40
"""Services whose rows :func:`row_slices` builds at a time (some 280 rows at 5 servers)."""


def build_rows(state: StatsState) -> tuple[Row, ...]:
    """Every row of every service, services sorted by name, servers by id."""
    return tuple(row for part in row_slices(state) for row in part)


def row_slices(state: StatsState) -> Iterator[list[Row]]:
    """The rows of :func:`build_rows`, :data:`SLICE` services at a time."""
    rows: list[Row] = []
    for iid, service in enumerate(state.services, start=1):
        rows.append(_frontend(state, service, iid))
        if service.counters is not None:
            rows.extend(
                _server(state, service.name, server, iid, sid)
                for sid, server in enumerate(service.servers, start=1)
            )
            rows.append(_backend(state, service, service.counters, iid))
        if iid % SLICE == 0:
            yield rows
            rows = []
    if rows:
        yield rows


def _sessions(counters: Counters, now: float) -> dict[str, Any]:
    """The session and byte fields every kind of row has."""
    return {
        "scur": counters.scur,
        "smax": counters.smax,
        "stot": counters.stot,
        "bin": counters.bin,
        "bout": counters.bout,
        "rate": counters.rate.read(now),
        "rate_max": counters.rate.max,
    }


def _errors(counters: Counters, now: float) -> dict[str, Any]:
    """The fields backends and servers have beyond sessions: errors, warnings, aborts."""
    last = counters.last_session
    return {
        "econ": counters.econ,
        # haproxy counts sessions the server aborted among response errors.
        "eresp": counters.srv_abrt,
        "wretr": counters.wretr,
        "wredis": counters.wredis,
        "cli_abrt": counters.cli_abrt,
        "srv_abrt": counters.srv_abrt,
        "lbtot": counters.stot,
        "lastsess": -1 if last is None else int(now - last),
    }


def _registry(key: KeyState, now: float) -> dict[str, Any]:
    """The key fields: its path, the TTL etcd gave at the last read, and that read's age.

    Only what is known: a key refreshed with v2's ``refresh=true`` wakes no watcher, so the
    TTL left now cannot be computed from the last read (it was renewed since, unseen); the
    TTL read and the age of the read are shown as they are.  v3 sends no TTL (leases are
    not read), so it shows none.
    """
    seen = key.seen_at
    return {
        "ddiscover_key": key.path,
        "ddiscover_ttl_read": key.ttl if seen is not None else None,
        "ddiscover_read_age": None if seen is None else int(now - seen),
    }


def _frontend(state: StatsState, service: ServiceState, iid: int) -> Row:
    listening = service.listener in (OPEN, FULL)
    fields: dict[str, Any] = {}
    if service.counters is not None:
        counters = service.counters
        fields.update(_sessions(counters, state.now))
        fields.update(
            slim=state.process.maxconn,
            conn_rate=fields["rate"],
            conn_rate_max=fields["rate_max"],
            conn_tot=counters.stot,
        )
    if service.port is not None:
        fields["addr"] = str(Address(state.process.interface, service.port))
    return Row(
        pxname=service.name,
        svname="FRONTEND",
        type=FRONTEND,
        status=service.listener if listening else "STOP",
        condition="frontend" if listening else "frontend_stopped",
        iid=iid,
        ddiscover_reason=None if listening else service.listener,
        **_registry(service.key, state.now),
        **fields,
    )


def _routable(server: ServerState) -> bool:
    return server.admin is Admin.READY and server.health is not None and server.health.is_up


def _backend(state: StatsState, service: ServiceState, counters: Counters, iid: int) -> Row:
    active = sum(1 for server in service.servers if _routable(server))
    return Row(
        pxname=service.name,
        svname="BACKEND",
        type=BACKEND,
        status="UP" if active else "DOWN",
        condition="backend",
        iid=iid,
        act=active,
        bck=0,
        weight=active,
        uweight=len(service.servers),
        algo="roundrobin",
        **_sessions(counters, state.now),
        **_errors(counters, state.now),
    )


def _health_status(record: HealthRecord) -> str:
    """haproxy's status text; a backend not checked yet shows where its counter starts."""
    if record.checked:
        return record.status()
    return "DOWN" if record.health == 0 else f"DOWN {record.health}/{record.rise}"


def _condition(record: HealthRecord) -> str:
    if record.is_up:
        return "up" if record.health == record.full else "going_down"
    return "going_up" if record.health > 0 else "down"


def _server(state: StatsState, name: str, server: ServerState, iid: int, sid: int) -> Row:
    now, record = state.now, server.health
    fields: dict[str, Any] = {}
    if server.admin is Admin.MAINT:
        status, condition = "MAINT", "maint"
    elif record is None:
        status, condition = "no check", "no_check"
    elif server.admin is Admin.DRAIN and record.is_up:
        status, condition = "DRAIN", "draining"
    else:
        status, condition = _health_status(record), _condition(record)
    if record is not None:
        last = record.last
        fields.update(
            chkfail=record.failures,
            chkdown=record.downs,
            lastchg=int(now - record.changed_at),
            downtime=int(record.total_downtime(now)),
            check_status="INI" if last is None else last.status.value,
            check_duration=None if last is None else round(last.duration * 1000),
            last_chk=None if last is None else last.info or None,
            check_desc="Initializing" if last is None else last.status.description,
            check_rise=record.rise,
            check_fall=record.fall,
            check_health=record.health,
        )
    weight = 1 if server.admin is Admin.READY else 0
    return Row(
        pxname=name,
        svname=server.backend.id,
        type=SERVER,
        status=status,
        condition=condition,
        iid=iid,
        sid=sid,
        act=1,
        bck=0,
        weight=weight,
        uweight=1,
        addr=str(server.backend.address),
        ddiscover_admin=server.admin.value,
        **_sessions(server.counters, now),
        **_errors(server.counters, now),
        **_registry(server.key, now),
        **fields,
    )
