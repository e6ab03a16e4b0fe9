"""The HTML stats page, laid out like haproxy's so its operators read it at a glance.

A ``twisted.web.template`` element over :func:`~ddiscover.stats.rows.build_rows` makes the
skeleton, ``page.xml`` with the style ``page.css`` (package data, inlined so the page is one
request); the service tables, thousands of rows, are strings from :mod:`.tables`, cheap to
build and made a few at a time by :func:`page_slices`.  Every string from outside is cut with
:func:`ddiscover.text.clip` (a 1 MB value is a couple of hundred characters and its size on
the page; CSV and JSON keep it whole).  Every string from outside (service names, backend ids,
registry keys, reasons) is escaped; nothing is pasted as markup.
No JavaScript: refreshing is the ``Refresh`` header, admin actions are a plain form.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from importlib.resources import files

import attrs
from twisted.web.iweb import IRequest
from twisted.web.template import Comment, Element, Tag, XMLString, flattenString, renderer, tags

from ddiscover.loop_lag import LagReading
from ddiscover.stats.rows import FRONTEND, Row
from ddiscover.stats.state import RegistryState, StatsState
from ddiscover.stats.tables import human, service_table
from ddiscover.text import clip

_PACKAGE = files("ddiscover.stats")
_TEMPLATE = _PACKAGE.joinpath("page.xml").read_text(encoding="utf-8")
CSS = _PACKAGE.joinpath("page.css").read_text(encoding="utf-8")
_TABLES = "ddiscover:service-tables"
_SLICE = 40
"""Services per slice of the page (some 200 rows at 5 servers each)."""


def uptime(seconds: int) -> str:
    """The process uptime as haproxy writes it: ``0d 0h12m34s``."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h{rest // 60:02d}m{rest % 60:02d}s"


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
    def services(self, request: IRequest, tag: Tag) -> Tag | Comment:
        state = self._state
        if not state.services:
            return tag(
                tags.p(
                    f"No service is registered under {clip(state.registry.prefix)} yet.",
                    class_="empty",
                )
            )
        # Where :func:`page_slices` puts the tables, built as strings.
        return Comment(_TABLES)

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


def page_slices(state: StatsState, rows: Sequence[Row], view: View) -> Iterator[bytes]:
    """The whole page: the skeleton's head, the service tables a few at a time, its tail."""
    flattened: list[bytes] = []
    # The element waits on nothing: flattened at once.
    flattenString(None, StatsPage(state, rows, view)).addCallback(flattened.append)
    head, marker, tail = flattened[0].partition(f"<!--{_TABLES}-->".encode())
    yield b"<!DOCTYPE html>\n" + head
    if marker:
        by_proxy: dict[int, list[Row]] = {}
        for row in rows:
            by_proxy.setdefault(row.iid, []).append(row)
        services = state.services
        action = view.path()
        for start in range(0, len(services), _SLICE):
            yield "".join(
                service_table(
                    state.process,
                    state.registry.prefix,
                    service,
                    by_proxy.get(iid, []),
                    hide_down=view.hide_down,
                    action=action,
                )
                for iid, service in enumerate(services[start : start + _SLICE], start=start + 1)
            ).encode()
    yield tail


def render_page(state: StatsState, rows: Sequence[Row], view: View) -> bytes:
    """The whole page at once."""
    return b"".join(page_slices(state, rows, view))
