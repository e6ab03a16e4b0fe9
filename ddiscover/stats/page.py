"""The HTML stats page, laid out like haproxy's so its operators read it at a glance.

A ``twisted.web.template`` element over :func:`~ddiscover.stats.rows.build_rows`: the skeleton
is ``page.xml`` and the style ``page.css`` (package data, inlined so the page is one request),
the tables are built with ``tags``.  Every string from outside is cut with
:func:`ddiscover.text.clip` (a 1 MB value is a couple of hundred characters and its size on
the page; CSV and JSON keep it whole).  Every string from outside (service names, backend ids,
registry keys, reasons) goes through the template's escaping; nothing is pasted as markup.
No JavaScript: refreshing is the ``Refresh`` header, admin actions are a plain form.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.resources import files

import attrs
from twisted.web.iweb import IRequest
from twisted.web.template import Element, Tag, XMLString, renderer, tags

from ddiscover.loop_lag import LagReading
from ddiscover.stats.rows import FRONTEND, KIND_NAMES, SERVER, Row
from ddiscover.stats.state import RegistryState, ServiceState, StatsState
from ddiscover.text import clip

_PACKAGE = files("ddiscover.stats")
_TEMPLATE = _PACKAGE.joinpath("page.xml").read_text(encoding="utf-8")
CSS = _PACKAGE.joinpath("page.css").read_text(encoding="utf-8")

_CLASSES = {
    "frontend": "frontend",
    "frontend_stopped": "frontend_stopped",
    "backend": "backend",
    "up": "active_up",
    "going_down": "active_going_down",
    "going_up": "active_going_up",
    "down": "active_down",
    "draining": "active_draining",
    "maint": "maintain",
    "no_check": "active_no_check",
}

_GROUPS = (
    ("Session rate", ("Cur", "Max", "Limit")),
    ("Sessions", ("Cur", "Max", "Limit", "Total", "Last")),
    ("Bytes", ("In", "Out")),
    ("Errors", ("Conn", "Resp")),
    ("Warnings", ("Retr", "Redis")),
    ("Server", ("Status", "LastChk", "Act", "Chk", "Dwn", "Dwntme")),
    ("Registry", ("Address", "Key", "TTL read", "Read")),
)
_COLUMNS = 1 + sum(len(columns) for _, columns in _GROUPS)

_ACTIONS = (
    ("", "Choose an action..."),
    ("enable", "Set state to READY"),
    ("drain", "Set state to DRAIN"),
    ("disable", "Set state to MAINT"),
)


def human(seconds: int) -> str:
    """A duration as haproxy's page writes it: ``14s``, ``2m05s``, ``3h07m``, ``4d02h``."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def uptime(seconds: int) -> str:
    """The process uptime as haproxy writes it: ``0d 0h12m34s``."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h{rest // 60:02d}m{rest % 60:02d}s"


def _number(value: int | str | None) -> str:
    if value is None:
        return ""
    return f"{value:,}" if isinstance(value, int) else value


@attrs.frozen
class View:
    """How the page was asked for: ``;up`` hides DOWN servers, ``;norefresh`` stops refresh."""

    hide_down: bool = False
    refresh: bool = True

    def path(self) -> str:
        """The URL of this view."""
        return "/" + ("" if not self.hide_down else ";up") + ("" if self.refresh else ";norefresh")


class StatsPage(Element):
    """The whole page for one :class:`StatsState` and its rows."""

    loader = XMLString(_TEMPLATE)

    def __init__(self, state: StatsState, rows: Iterable[Row], view: View) -> None:
        super().__init__()
        self._state = state
        self._rows = tuple(rows)
        self._view = view

    @renderer
    def page(self, request: IRequest, tag: Tag) -> Tag:
        process = self._state.process
        return tag.fillSlots(pid=str(process.pid), version=process.version)

    @renderer
    def css(self, request: IRequest, tag: Tag) -> Tag:
        return tag(CSS)

    @renderer
    def process(self, request: IRequest, tag: Tag) -> Tag:
        state = self._state
        process = state.process
        listening = sum(1 for r in self._rows if r.type == FRONTEND and r.condition == "frontend")
        return tag(
            _line("pid = ", str(process.pid)),
            _line("uptime = ", uptime(int(state.now - process.started))),
            _line(
                "system limits: ",
                f"ulimit-n = {process.fd_limit:,}; maxconn = {process.maxconn:,}",
            ),
            _line(
                "current conns = ",
                f"{process.connections:,}; services = {len(state.services)} "
                f"({listening} listening)",
            ),
            _line(
                "checks: ",
                f"every {process.check_interval:g}s, rise {process.rise}, fall {process.fall}",
            ),
            _line("admin actions: ", "on" if process.admin else "off (no --stats-auth)"),
            *_lag_line(process.loop_lag),
        )

    @renderer
    def registry(self, request: IRequest, tag: Tag) -> Tag:
        now, registry = self._state.now, self._state.registry
        last = registry.last_event_at
        plural = "" if registry.resyncs == 1 else "s"
        counts = f"{registry.events:,} events, {registry.resyncs} resync{plural}"
        return tag(
            _line("etcd = ", clip(registry.endpoint)),
            _line("API = ", registry.api, "; prefix = ", clip(registry.prefix)),
            _line(
                "watch = ",
                tags.span(registry.state, class_=f"watch-{registry.state}"),
                f" for {human(int(now - registry.since))}",
            ),
            _line(
                "last revision = " if registry.api == "v3" else "last index = ",
                "none yet" if registry.last_index is None else str(registry.last_index),
            ),
            _line(
                "last event = ",
                f"none yet ({counts})"
                if last is None
                else f"{human(int(now - last))} ago ({counts})",
            ),
            _line("ignored keys = ", str(registry.rejected_keys)),
            _line("in sync = ", _sync_text(now, registry)),
            *(
                [_line("last error = ", tags.span(registry.last_error, class_="error"))]
                if registry.last_error
                else []
            ),
        )

    @renderer
    def options(self, request: IRequest, tag: Tag) -> Tag:
        view = self._view
        hide = attrs.evolve(view, hide_down=not view.hide_down)
        refresh = attrs.evolve(view, refresh=not view.refresh)
        return tag(
            tags.b("Display option:"),
            tags.ul(
                tags.li(
                    tags.a(
                        "Show all servers" if view.hide_down else "Hide 'DOWN' servers",
                        href=hide.path(),
                    )
                ),
                tags.li(tags.a("Refresh now", href=view.path())),
                tags.li(
                    tags.a(
                        "Enable refresh" if not view.refresh else "Disable refresh",
                        href=refresh.path(),
                    )
                ),
            ),
            tags.b("External resources:"),
            tags.ul(
                tags.li(tags.a("CSV export", href="/;csv")),
                tags.li(tags.a("JSON export", href="/;json")),
                tags.li(tags.a("Prometheus metrics", href="/metrics")),
                tags.li(tags.a("Health", href="/health")),
            ),
        )

    @renderer
    def services(self, request: IRequest, tag: Tag) -> Tag:
        state = self._state
        if not state.services:
            return tag(
                tags.p(
                    f"No service is registered under {clip(state.registry.prefix)} yet.",
                    class_="empty",
                )
            )
        by_proxy: dict[int, list[Row]] = {}
        for row in self._rows:
            by_proxy.setdefault(row.iid, []).append(row)
        return tag(
            [
                self._service(service, by_proxy.get(iid, []))
                for iid, service in enumerate(state.services, start=1)
            ]
        )

    @renderer
    def ignored(self, request: IRequest, tag: Tag) -> Tag:
        stray = self._state.registry.stray
        if not stray:
            return tag()
        return tag(
            tags.h3("> Ignored registry keys outside any service"),
            tags.table(
                tags.tr(tags.th("Key"), tags.th("Reason")),
                [tags.tr(tags.td(clip(r.key)), tags.td(clip(r.reason))) for r in stray],
                class_="ignored",
            ),
        )

    def _service(self, service: ServiceState, rows: list[Row]) -> Tag:
        """One table: title, column headers, rows, ignored keys, and the admin form."""
        process = self._state.process
        admin = process.admin and bool(service.servers)
        width = _COLUMNS + (1 if admin else 0)
        if service.port is None:
            description = "not listening: rejected by the registry"
        else:
            description = (
                f"port {service.port} · round-robin · check every "
                f"{process.check_interval:g}s, rise {process.rise}, fall {process.fall}"
            )
        leading = [tags.th(rowspan="2")] * (2 if admin else 1)
        name = clip(service.name)
        # The name sits in a table of its own, as on haproxy's page, so a long one does not
        # widen the first column.
        title = tags.table(class_="pxhead")(
            tags.tr(
                tags.th(tags.a(name, href=f"#px-{name}"), class_="pxname"),
                tags.th(description, class_="desc"),
            )
        )
        table = tags.table(class_="tbl", id=f"px-{name}")(
            tags.tr(class_="titre")(
                leading,
                [tags.th(group, colspan=str(len(columns))) for group, columns in _GROUPS],
            ),
            tags.tr(class_="titre")(
                [tags.th(column) for _, columns in _GROUPS for column in columns]
            ),
            [
                self._row(row, admin)
                for row in rows
                if not (
                    self._view.hide_down and row.type == SERVER and row.status.startswith("DOWN")
                )
            ],
            [
                tags.tr(
                    tags.td(f"ignored {clip(r.key)}: {clip(r.reason)}", colspan=str(width)),
                    class_="rejected",
                )
                for r in service.rejections
                # The service's own rejection is the frontend's status already.
                if r.key != f"{self._state.registry.prefix}/{service.name}"
            ],
        )
        if not admin:
            return tags.div(title, table, class_="proxy")
        table(
            tags.tr(
                tags.td(
                    "Choose the action to perform on the checked servers: ",
                    tags.select(
                        [tags.option(label, value=value) for value, label in _ACTIONS],
                        name="action",
                    ),
                    " ",
                    tags.input(type="submit", value="Apply"),
                    colspan=str(width),
                ),
                class_="admin",
            )
        )
        return tags.form(method="post", action=self._view.path(), class_="proxy")(
            tags.input(type="hidden", name="b", value=name), title, table
        )

    def _row(self, row: Row, admin: bool) -> Tag:
        cells: list[Tag] = []
        if admin:
            box = tags.input(type="checkbox", name="s", value=clip(row.svname))
            cells.append(tags.td(box if row.type == SERVER else "", class_="ac"))
        cells.extend(_cells(row))
        return tags.tr(cells, class_=_CLASSES[row.condition], **{"data-server": clip(row.svname)})


def _sync_text(now: float, registry: RegistryState) -> str:
    """Whether the view is known current, and how long since etcd last confirmed it."""
    word = "yes" if registry.in_sync else "NO" if registry.alive else "NO (watch loop stopped)"
    synced = registry.last_sync_at
    if synced is None:
        return f"{word}; never confirmed by etcd"
    return f"{word}; confirmed {human(int(now - synced))} ago"


def _lag_line(lag: LagReading | None) -> list[Tag]:
    """How late the reactor runs timers: the last probe and the worst since start."""
    if lag is None or lag.last is None:
        return []
    return [
        _line(
            "event-loop lag = ",
            f"{lag.last * 1000:.1f} ms now; max {lag.max * 1000:.1f} ms over {lag.count:,} probes",
        )
    ]


def _line(label: str, *value: str | Tag) -> Tag:
    return tags.p(tags.b(label), *value)


def _cells(row: Row) -> list[Tag]:
    """The cells of one row, in the order of ``_GROUPS``."""
    name = tags.td(clip(row.svname) if row.type == SERVER else KIND_NAMES[row.type], class_="name")
    if row.type == SERVER and row.addr:
        name(title=clip(row.addr))
    total = tags.td(_number(row.stot))
    if row.cli_abrt is not None:
        total(
            title=f"Cum. sessions: {row.stot}\n"
            f"Connection resets during transfers: {row.cli_abrt} client, {row.srv_abrt} server"
        )
    return [
        name,
        tags.td(_number(row.rate)),
        tags.td(_number(row.rate_max)),
        tags.td(""),
        tags.td(_number(row.scur)),
        tags.td(_number(row.smax)),
        tags.td(_number(row.slim)),
        total,
        tags.td("" if row.lastsess is None or row.lastsess < 0 else human(row.lastsess)),
        tags.td(_number(row.bin)),
        tags.td(_number(row.bout)),
        tags.td(_number(row.econ)),
        tags.td(_number(row.eresp)),
        tags.td(_number(row.wretr)),
        tags.td(_number(row.wredis)),
        _status(row),
        _last_check(row),
        tags.td(_active(row), class_="ac"),
        tags.td(_number(row.chkfail)),
        tags.td(_number(row.chkdown)),
        tags.td("" if row.downtime is None else human(row.downtime)),
        tags.td(clip(row.addr or ""), class_="al"),
        tags.td(clip(row.ddiscover_key or ""), class_="key"),
        tags.td("" if row.ddiscover_ttl_read is None else f"{row.ddiscover_ttl_read}s"),
        tags.td("" if row.ddiscover_read_age is None else human(row.ddiscover_read_age)),
    ]


def _active(row: Row) -> str:
    """haproxy's Act column: ``Y`` for an active server, the count of UP ones for a backend."""
    if row.type == SERVER:
        return "Y"
    return _number(row.act)


def _status(row: Row) -> Tag:
    if row.type == FRONTEND and row.ddiscover_reason is not None:
        return tags.td(clip(row.ddiscover_reason), class_="stopped")
    if row.lastchg is None:
        return tags.td(row.status, class_="ac")
    return tags.td(f"{human(row.lastchg)} {row.status}", class_="ac")


def _last_check(row: Row) -> Tag:
    if row.check_status is None:
        return tags.td("", class_="check")
    if row.check_duration is None:
        return tags.td(row.check_status, class_="check", title="Initializing: not checked yet")
    detail = row.check_desc or ""
    if row.last_chk:
        detail += f": {clip(row.last_chk)}"
    return tags.td(f"{row.check_status} in {row.check_duration}ms", class_="check", title=detail)
