"""``/metrics``: Prometheus text exposition, named like haproxy's exporter with ``ddiscover_``.

A custom collector on a private ``CollectorRegistry`` builds every family from live state at
scrape time, through the same :func:`~ddiscover.stats.rows.build_rows` as the page, so a
backend that leaves the registry has no series from the next scrape on.  The names and
labels are haproxy's (``haproxy_server_current_sessions{proxy,server}`` becomes
``ddiscover_server_current_sessions{proxy,server}``; status and check status are one series
per state with a ``state`` label), so haproxy dashboards port by renaming the prefix; the
``ddiscover_registry_*`` families describe the etcd watch.

:class:`MetricsResource` renders in the reactor thread, where the state lives (not
``prometheus_client.twisted``, which collects in a thread-pool thread and imports the global
reactor), and negotiates OpenMetrics from the ``Accept`` header.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import cast

import attrs
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.web.resource import Resource
from twisted.web.server import Request

from ddiscover.health.result import CheckStatus
from ddiscover.registry.watcher import WatchState
from ddiscover.stats.rows import BACKEND, FRONTEND, KIND_NAMES, SERVER, Row, build_rows
from ddiscover.stats.snapshot import Snapshot, Snapshots, serve
from ddiscover.stats.state import StatsState

GAUGE, COUNTER = "gauge", "counter"

# (name after ddiscover_<kind>_, row field, type, scale, help), per kind of row.
_Spec = tuple[str, str, str, float, str]
_SESSIONS: tuple[_Spec, ...] = (
    ("current_sessions", "scur", GAUGE, 1, "Current number of active sessions."),
    ("max_sessions", "smax", GAUGE, 1, "Maximum observed number of active sessions."),
    ("sessions_total", "stot", COUNTER, 1, "Total number of sessions."),
    ("bytes_in_total", "bin", COUNTER, 1, "Current total of incoming bytes."),
    ("bytes_out_total", "bout", COUNTER, 1, "Current total of outgoing bytes."),
    ("current_session_rate", "rate", GAUGE, 1, "Current number of sessions per second."),
    ("max_session_rate", "rate_max", GAUGE, 1, "Maximum observed sessions per second."),
)
_ERRORS: tuple[_Spec, ...] = (
    ("connection_errors_total", "econ", COUNTER, 1, "Total number of connection errors."),
    ("response_errors_total", "eresp", COUNTER, 1, "Total number of response errors."),
    ("retry_warnings_total", "wretr", COUNTER, 1, "Total number of retry warnings."),
    ("redispatch_warnings_total", "wredis", COUNTER, 1, "Total number of redispatches."),
    ("client_aborts_total", "cli_abrt", COUNTER, 1, "Data transfers aborted by the client."),
    ("server_aborts_total", "srv_abrt", COUNTER, 1, "Data transfers aborted by the server."),
    ("loadbalanced_total", "lbtot", COUNTER, 1, "Times the server was chosen."),
    ("last_session_seconds", "lastsess", GAUGE, 1, "Seconds since the last session."),
)
_SPECS: dict[int, tuple[_Spec, ...]] = {
    FRONTEND: (
        *_SESSIONS,
        ("limit_sessions", "slim", GAUGE, 1, "Configured session limit (global maxconn)."),
        ("connections_total", "conn_tot", COUNTER, 1, "Total number of connections."),
    ),
    BACKEND: (
        *_SESSIONS,
        *_ERRORS,
        ("active_servers", "act", GAUGE, 1, "Current number of active servers."),
        ("backup_servers", "bck", GAUGE, 1, "Current number of backup servers."),
        ("weight", "weight", GAUGE, 1, "Service total weight."),
    ),
    SERVER: (
        *_SESSIONS,
        *_ERRORS,
        ("weight", "weight", GAUGE, 1, "Server's effective weight."),
        ("check_failures_total", "chkfail", COUNTER, 1, "Total number of failed checks."),
        ("check_up_down_total", "chkdown", COUNTER, 1, "Total number of UP->DOWN changes."),
        ("check_last_change_seconds", "lastchg", GAUGE, 1, "Seconds since the last change."),
        ("downtime_seconds_total", "downtime", COUNTER, 1, "Total downtime in seconds."),
        ("check_duration_seconds", "check_duration", GAUGE, 0.001, "Last check's duration."),
        (
            "registry_ttl_read_seconds",
            "ddiscover_ttl_read",
            GAUGE,
            1,
            "TTL etcd gave the key at its last read.",
        ),
        ("registry_read_age_seconds", "ddiscover_read_age", GAUGE, 1, "Seconds since that read."),
    ),
}

_FRONTEND_STATES = ("OPEN", "FULL", "STOP")
_BACKEND_STATES = ("UP", "DOWN")
_SERVER_STATES = ("UP", "DOWN", "MAINT", "DRAIN", "NOLB")
_CHECK_STATES = ("INI", *(status.value for status in CheckStatus))


def _labels(row: Row) -> list[str]:
    return [row.pxname] if row.type != SERVER else [row.pxname, row.svname]


def _state_word(row: Row) -> str:
    """The one state of the row's state set: ``UP 1/2`` counts as UP, ``no check`` as DOWN."""
    word = row.status.split(" ", 1)[0]
    if row.type == SERVER and word not in _SERVER_STATES:
        return "DOWN"
    return word


def _proxy_families(rows: Sequence[Row], part: int | None = None) -> Iterator[Metric]:
    for kind, specs in _SPECS.items():
        prefix = f"ddiscover_{KIND_NAMES[kind].lower()}_"
        label_names = ["proxy"] if kind != SERVER else ["proxy", "server"]
        typed = [row for row in rows if row.type == kind]
        step = part * len(_CHECK_STATES) if part else max(len(typed), 1)
        for suffix, field, metric_type, scale, help_text in specs:
            kind_of = CounterMetricFamily if metric_type == COUNTER else GaugeMetricFamily
            for start in range(0, max(len(typed), 1), step):
                family = kind_of(prefix + suffix, help_text, labels=label_names)
                for row in typed[start : start + step]:
                    value = row.value(field)
                    if isinstance(value, int):
                        family.add_metric(_labels(row), value * scale)
                yield family
        states = {FRONTEND: _FRONTEND_STATES, BACKEND: _BACKEND_STATES}.get(kind, _SERVER_STATES)
        yield from _state_sets(
            (prefix + "status", "Current status, one series per state.", [*label_names, "state"]),
            [(row, _state_word(row)) for row in typed],
            states,
            part,
        )
    yield from _state_sets(
        (
            "ddiscover_server_check_status",
            "Status of the last health check, one series per check status.",
            ["proxy", "server", "state"],
        ),
        [(row, row.check_status) for row in rows if row.type == SERVER and row.check_status],
        _CHECK_STATES,
        part,
    )


def _state_sets(
    family: tuple[str, str, list[str]],
    current: list[tuple[Row, str]],
    states: tuple[str, ...],
    part: int | None,
) -> Iterator[Metric]:
    """A state-set family: a series per row and state, 1 for the row's state, else 0.

    With ``part``, as several families of the same name, ``part`` rows each, for
    :func:`exposition_slices` to encode a part per reactor turn.
    """
    step = part or max(len(current), 1)
    for start in range(0, max(len(current), 1), step):
        gauge = GaugeMetricFamily(*family[:2], labels=family[2])
        for row, word in current[start : start + step]:
            labels = _labels(row)
            for state in states:
                gauge.add_metric([*labels, state], 1 if state == word else 0)
        yield gauge


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _process_families(state: StatsState) -> Iterator[Metric]:
    process = state.process
    info = GaugeMetricFamily("ddiscover_process_build_info", "Build info.", labels=["version"])
    info.add_metric([process.version], 1)
    yield info
    yield _gauge("ddiscover_process_start_time_seconds", "Start time.", process.started)
    yield _gauge(
        "ddiscover_process_uptime_seconds", "Seconds since start.", state.now - process.started
    )
    yield _gauge(
        "ddiscover_process_current_connections", "Proxied connections now.", process.connections
    )
    yield _gauge("ddiscover_process_max_connections", "Global maxconn.", process.maxconn)
    yield _gauge("ddiscover_process_max_fds", "Open-files limit (ulimit-n).", process.fd_limit)
    lag = process.loop_lag
    if lag is not None:
        yield HistogramMetricFamily(
            "ddiscover_process_loop_lag_seconds",
            "How late the reactor ran a timer due every 0.1 s: the stall every connection saw.",
            buckets=list(lag.buckets),
            sum_value=lag.total,
        )
        yield _gauge(
            "ddiscover_process_loop_lag_max_seconds", "Largest loop lag since start.", lag.max
        )


def _registry_families(state: StatsState) -> Iterator[Metric]:
    registry = state.registry
    info = GaugeMetricFamily(
        "ddiscover_registry_info", "The etcd watched.", labels=["api", "endpoint", "prefix"]
    )
    info.add_metric([registry.api, registry.endpoint, registry.prefix], 1)
    yield info
    watch = GaugeMetricFamily(
        "ddiscover_registry_watch_state", "State of the etcd watch.", labels=["state"]
    )
    for word in WatchState:
        watch.add_metric([word.value], 1 if word.value == registry.state else 0)
    yield watch
    yield _gauge(
        "ddiscover_registry_watch_state_seconds",
        "Seconds since the watch entered its state.",
        state.now - registry.since,
    )
    yield CounterMetricFamily(
        "ddiscover_registry_events_total", "Changes read from etcd.", value=registry.events
    )
    yield CounterMetricFamily(
        "ddiscover_registry_resyncs_total", "Full listings after a gap.", value=registry.resyncs
    )
    last = registry.last_event_at
    yield _gauge(
        "ddiscover_registry_last_event_age_seconds",
        "Seconds since the last change read from etcd (NaN: none yet).",
        math.nan if last is None else state.now - last,
    )
    index = registry.last_index
    yield _gauge(
        "ddiscover_registry_last_index",
        "Last etcd index (v3: revision) seen.",
        math.nan if index is None else index,
    )
    yield _gauge(
        "ddiscover_registry_rejected_keys", "Keys ignored as unusable.", registry.rejected_keys
    )
    yield _gauge(
        "ddiscover_registry_alive",
        "1 while the watch loop runs (or waits to retry).",
        registry.alive,
    )
    yield _gauge(
        "ddiscover_registry_in_sync",
        "1 while the view of etcd is known current (what /health's 200 means).",
        registry.in_sync,
    )
    synced = registry.last_sync_at
    yield _gauge(
        "ddiscover_registry_last_sync_age_seconds",
        "Seconds since etcd last confirmed the view (NaN: never).",
        math.nan if synced is None else state.now - synced,
    )


class StatsCollector(Collector):
    """Every ``ddiscover_*`` family, built from the state read at each scrape."""

    def __init__(
        self,
        state: Callable[[], StatsState],
        rows: Callable[[], Sequence[Row]] | None = None,
        part: int | None = None,
    ) -> None:
        self._state = state
        self._rows = rows
        self._part = part

    def describe(self) -> list[Metric]:
        """Nothing: describing would mean collecting when the collector is registered."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Read the state once and yield every family from it."""
        state = self._state()
        rows = build_rows(state) if self._rows is None else self._rows()
        yield from _proxy_families(rows, self._part)
        yield from _process_families(state)
        yield from _registry_families(state)


def metrics_registry(
    state: Callable[[], StatsState],
    rows: Callable[[], Sequence[Row]] | None = None,
    part: int | None = None,
) -> CollectorRegistry:
    """A private registry with ddiscover's collector and the standard ``process_*`` one.

    ``rows`` are those of ``state``'s result when the caller already built them; ``part``
    splits the big state-set families (see :func:`_state_sets`).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(state, rows, part))
    ProcessCollector(registry=registry)
    return registry


@attrs.frozen
class _Families:
    """A registry of given families, for an encoder to write a few of them."""

    families: tuple[Metric, ...]

    def collect(self) -> tuple[Metric, ...]:
        return self.families


_EOF = b"# EOF\n"
_SAMPLES = 1000
"""Samples encoded per slice: a family of servers' states has tens of thousands."""
_PART = 100
"""Rows per part of a state-set family built for a sliced exposition."""


def _without_comments(chunk: bytes) -> bytes:
    """``chunk`` without its leading ``# HELP``/``# TYPE``/``# UNIT`` lines."""
    while chunk.startswith(b"# "):
        chunk = chunk.partition(b"\n")[2]
    return chunk


def exposition_slices(
    registry: CollectorRegistry, encoder: Callable[[CollectorRegistry], bytes]
) -> Iterator[bytes]:
    """What ``encoder`` writes of ``registry``, :data:`_SAMPLES` samples at a time.

    Both of Prometheus's encoders write the families one after the other, each its comment
    lines then its samples, and OpenMetrics ends with ``# EOF``: so a family is encoded in
    parts of its samples, the comments kept from the first part, ``# EOF`` written once.
    """
    ends, previous = False, None
    for family in registry.collect():
        samples = family.samples
        for start in range(0, max(len(samples), 1), _SAMPLES):
            part = copy.copy(family)
            part.samples = samples[start : start + _SAMPLES]
            chunk = encoder(cast(CollectorRegistry, _Families((part,))))
            if chunk.endswith(_EOF):
                chunk, ends = chunk[: -len(_EOF)], True
            # A family in parts (see _state_sets) has its comments once, too.
            first = start == 0 and family.name != previous
            yield chunk if first else _without_comments(chunk)
        previous = family.name
    if ends:
        yield _EOF


class MetricsResource(Resource):
    """``GET /metrics``: the registry in the format the scraper asks for.

    With ``snapshots``, the families are those of the fresh snapshot, encoded once per
    snapshot and content type, a family per reactor turn.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, snapshots: Snapshots | None = None) -> None:
        super().__init__()
        self._registry = registry
        self._snapshots = snapshots

    def render_GET(self, request: Request) -> bytes | int:
        """The exposition, at once without ``snapshots``, in slices with them."""
        accept = request.getHeader("accept")
        encoder, content_type = choose_encoder(accept or "")
        request.setHeader(b"content-type", content_type.encode())
        request.setHeader(b"cache-control", b"no-cache")
        if self._snapshots is None:
            return encoder(self._registry)

        def slices(snapshot: Snapshot) -> Iterator[bytes]:
            registry = metrics_registry(lambda: snapshot.state, lambda: snapshot.rows, _PART)
            return exposition_slices(registry, encoder)

        return serve(self._snapshots, request, ("metrics", content_type), slices)
