"""The service tables of the stats page, built as strings.

At 1,000 services x 5 backends the page has some 7,000 rows of 25 cells; building them as
``twisted.web.template`` tags and flattening those cost seconds of reactor time, so each
table is one string made with f-strings and :func:`html.escape`, the same markup the
template wrote (attributes in the same order, escaped the same way: ``&<>`` in text, and
``"`` too in attributes).  Every string from outside is cut with :func:`ddiscover.text.clip`
and escaped; nothing from outside is pasted as markup.
"""

from __future__ import annotations

from html import escape

from ddiscover.stats.rows import FRONTEND, KIND_NAMES, SERVER, Row
from ddiscover.stats.state import ProcessState, ServiceState
from ddiscover.text import clip

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

GROUPS = (
    ("Session rate", ("Cur", "Max", "Limit")),
    ("Sessions", ("Cur", "Max", "Limit", "Total", "Last")),
    ("Bytes", ("In", "Out")),
    ("Errors", ("Conn", "Resp")),
    ("Warnings", ("Retr", "Redis")),
    ("Server", ("Status", "LastChk", "Act", "Chk", "Dwn", "Dwntme")),
    ("Registry", ("Address", "Key", "TTL read", "Read")),
)
_COLUMNS = 1 + sum(len(columns) for _, columns in GROUPS)
_GROUP_ROW = "".join(f'<th colspan="{len(columns)}">{group}</th>' for group, columns in GROUPS)
_COLUMN_ROW = "".join(f"<th>{column}</th>" for _, columns in GROUPS for column in columns)

_ACTIONS = (
    ("", "Choose an action..."),
    ("enable", "Set state to READY"),
    ("drain", "Set state to DRAIN"),
    ("disable", "Set state to MAINT"),
)
_SELECT = "".join(f'<option value="{value}">{label}</option>' for value, label in _ACTIONS)


def text(value: str) -> str:
    """``value`` escaped for an element's content."""
    return escape(value, quote=False)


def attr(value: str) -> str:
    """``value`` escaped for a double-quoted attribute."""
    return escape(value, quote=False).replace('"', "&quot;")


def human(seconds: int) -> str:
    """A duration as haproxy's page writes it: ``14s``, ``2m05s``, ``3h07m``, ``4d02h``."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _number(value: int | str | None) -> str:
    if value is None:
        return ""
    return f"{value:,}" if isinstance(value, int) else text(value)


def service_table(
    process: ProcessState,
    prefix: str,
    service: ServiceState,
    rows: list[Row],
    *,
    hide_down: bool,
    action: str,
) -> str:
    """One service: title, column headers, rows, ignored keys, and the admin form.

    ``action`` is the path the admin form posts to.
    """
    admin = process.admin and bool(service.servers)
    width = _COLUMNS + (1 if admin else 0)
    if service.port is None:
        description = "not listening: rejected by the registry"
    else:
        description = (
            f"port {service.port} · round-robin · check every "
            f"{process.check_interval:g}s, rise {process.rise}, fall {process.fall}"
        )
    leading = '<th rowspan="2"></th>' * (2 if admin else 1)
    name = clip(service.name)
    # The name sits in a table of its own, as on haproxy's page, so a long one does not
    # widen the first column.
    title = (
        f'<table class="pxhead"><tr><th class="pxname"><a href="#px-{attr(name)}">{text(name)}'
        f'</a></th><th class="desc">{text(description)}</th></tr></table>'
    )
    parts = [
        f'<table class="tbl" id="px-{attr(name)}"><tr class="titre">{leading}{_GROUP_ROW}</tr>'
        f'<tr class="titre">{_COLUMN_ROW}</tr>'
    ]
    parts.extend(
        _row(row, admin)
        for row in rows
        if not (hide_down and row.type == SERVER and row.status.startswith("DOWN"))
    )
    parts.extend(
        f'<tr class="rejected"><td colspan="{width}">'
        f"{text(f'ignored {clip(r.key)}: {clip(r.reason)}')}</td></tr>"
        for r in service.rejections
        # The service's own rejection is the frontend's status already.
        if r.key != f"{prefix}/{service.name}"
    )
    if not admin:
        return f'<div class="proxy">{title}{"".join(parts)}</table></div>'
    parts.append(
        f'<tr class="admin"><td colspan="{width}">'
        "Choose the action to perform on the checked servers: "
        f'<select name="action">{_SELECT}</select> <input type="submit" value="Apply" />'
        "</td></tr></table>"
    )
    return (
        f'<form method="post" action="{attr(action)}" class="proxy">'
        f'<input type="hidden" name="b" value="{attr(name)}" />{title}{"".join(parts)}</form>'
    )


def _row(row: Row, admin: bool) -> str:
    svname = clip(row.svname)
    head = f'<tr class="{_CLASSES[row.condition]}" data-server="{attr(svname)}">'
    if admin:
        box = (
            f'<input type="checkbox" name="s" value="{attr(svname)}" />'
            if row.type == SERVER
            else ""
        )
        head += f'<td class="ac">{box}</td>'
    return head + _cells(row, svname) + "</tr>"


def _cells(row: Row, svname: str) -> str:
    """The cells of one row, in the order of ``GROUPS``."""
    server = row.type == SERVER
    title = f' title="{attr(clip(row.addr))}"' if server and row.addr else ""
    name = f'<td class="name"{title}>{text(svname if server else KIND_NAMES[row.type])}</td>'
    if row.cli_abrt is not None:
        tip = attr(
            f"Cum. sessions: {row.stot}\n"
            f"Connection resets during transfers: {row.cli_abrt} client, {row.srv_abrt} server"
        )
        total = f'<td title="{tip}">{_number(row.stot)}</td>'
    else:
        total = f"<td>{_number(row.stot)}</td>"
    last = "" if row.lastsess is None or row.lastsess < 0 else human(row.lastsess)
    ttl = "" if row.ddiscover_ttl_read is None else f"{row.ddiscover_ttl_read}s"
    age = "" if row.ddiscover_read_age is None else human(row.ddiscover_read_age)
    return (
        f"{name}<td>{_number(row.rate)}</td><td>{_number(row.rate_max)}</td><td></td>"
        f"<td>{_number(row.scur)}</td><td>{_number(row.smax)}</td><td>{_number(row.slim)}</td>"
        f"{total}<td>{last}</td><td>{_number(row.bin)}</td><td>{_number(row.bout)}</td>"
        f"<td>{_number(row.econ)}</td><td>{_number(row.eresp)}</td>"
        f"<td>{_number(row.wretr)}</td><td>{_number(row.wredis)}</td>"
        f"{_status(row)}{_last_check(row)}"
        f'<td class="ac">{"Y" if server else _number(row.act)}</td>'
        f"<td>{_number(row.chkfail)}</td><td>{_number(row.chkdown)}</td>"
        f"<td>{'' if row.downtime is None else human(row.downtime)}</td>"
        f'<td class="al">{text(clip(row.addr or ""))}</td>'
        f'<td class="key">{text(clip(row.ddiscover_key or ""))}</td>'
        f"<td>{ttl}</td><td>{age}</td>"
    )


def _status(row: Row) -> str:
    if row.type == FRONTEND and row.ddiscover_reason is not None:
        return f'<td class="stopped">{text(clip(row.ddiscover_reason))}</td>'
    if row.lastchg is None:
        return f'<td class="ac">{text(row.status)}</td>'
    return f'<td class="ac">{human(row.lastchg)} {text(row.status)}</td>'


def _last_check(row: Row) -> str:
    if row.check_status is None:
        return '<td class="check"></td>'
    status = text(row.check_status)
    if row.check_duration is None:
        return f'<td class="check" title="Initializing: not checked yet">{status}</td>'
    detail = row.check_desc or ""
    if row.last_chk:
        detail += f": {clip(row.last_chk)}"
    return f'<td class="check" title="{attr(detail)}">{status} in {row.check_duration}ms</td>'
