"""haproxy's machine-readable stats formats, from :func:`~ddiscover.stats.rows.build_rows`.

* :func:`to_csv` is ``show stat``: a ``# ``-prefixed header naming every field, haproxy 2.6's
  static fields in their exact order, the ``-`` column that ends them, then ddiscover's own;
  fields that do not apply are empty and every line ends with a comma, so scripts written
  for haproxy read it unchanged.
* :func:`to_json` is ``show stat json``: a list of rows, each a list of field objects with
  haproxy's tags, leaving out the empty fields.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Iterator, Sequence

import attrs

from ddiscover.stats.rows import EXTRA_FIELDS, HAPROXY_FIELDS, KIND_NAMES, Row

#: Every CSV column, in order.
FIELDS = (*HAPROXY_FIELDS, "-", *EXTRA_FIELDS)

# Per field that ddiscover fills: haproxy's (origin, nature, value type) tags.
_METRIC_COUNTER = ("Metric", "Counter", "u64")
_METRIC_GAUGE = ("Metric", "Gauge", "u32")
_METRIC_MAX = ("Metric", "Max", "u32")
_METRIC_RATE = ("Metric", "Rate", "u32")
_KEY = ("Key", "Name", "str")
_OUTPUT = ("Status", "Output", "str")
_CONFIG = ("Config", "Output", "str")
_TAGS: dict[str, tuple[str, str, str]] = {
    "pxname": _KEY,
    "svname": _KEY,
    "scur": _METRIC_GAUGE,
    "smax": _METRIC_MAX,
    "slim": ("Config", "Limit", "u32"),
    "stot": _METRIC_COUNTER,
    "bin": _METRIC_COUNTER,
    "bout": _METRIC_COUNTER,
    "econ": _METRIC_COUNTER,
    "eresp": _METRIC_COUNTER,
    "wretr": _METRIC_COUNTER,
    "wredis": _METRIC_COUNTER,
    "status": _OUTPUT,
    "weight": ("Metric", "Avg", "u32"),
    "act": _METRIC_GAUGE,
    "bck": _METRIC_GAUGE,
    "chkfail": _METRIC_COUNTER,
    "chkdown": _METRIC_COUNTER,
    "lastchg": ("Metric", "Age", "u32"),
    "downtime": ("Metric", "Duration", "u32"),
    "pid": ("Key", "Output", "u32"),
    "iid": ("Key", "Output", "u32"),
    "sid": ("Key", "Output", "u32"),
    "lbtot": _METRIC_COUNTER,
    "type": ("Config", "Output", "u32"),
    "rate": _METRIC_RATE,
    "rate_max": _METRIC_MAX,
    "check_status": _OUTPUT,
    "check_duration": ("Metric", "Duration", "u64"),
    "cli_abrt": _METRIC_COUNTER,
    "srv_abrt": _METRIC_COUNTER,
    "lastsess": ("Metric", "Age", "s32"),
    "last_chk": _OUTPUT,
    "check_desc": _OUTPUT,
    "check_rise": ("Config", "Limit", "u32"),
    "check_fall": ("Config", "Limit", "u32"),
    "check_health": ("Status", "Output", "u32"),
    "addr": _CONFIG,
    "mode": _CONFIG,
    "algo": _CONFIG,
    "conn_rate": _METRIC_RATE,
    "conn_rate_max": _METRIC_MAX,
    "conn_tot": _METRIC_COUNTER,
    "uweight": ("Config", "Avg", "u32"),
    "ddiscover_key": _CONFIG,
    "ddiscover_ttl_read": ("Metric", "Duration", "u32"),
    "ddiscover_read_age": ("Metric", "Age", "u32"),
    "ddiscover_admin": _OUTPUT,
    "ddiscover_reason": _OUTPUT,
}


# The fields a Row has, by position: every other field is empty on every row.
_ROW_FIELDS = frozenset(field.name for field in attrs.fields(Row))
_PRESENT = tuple((pos, name) for pos, name in enumerate(FIELDS) if name in _ROW_FIELDS)
_values = operator.attrgetter(*(name for _, name in _PRESENT))
_EMPTY = [""] * len(FIELDS)

# Per present field, what follows the row's ids in its JSON object, up to its value.
_JSON_TAILS = tuple(
    ", "
    + json.dumps({"pos": pos, "name": name}).join(('"field": ', ', "processNum": 1, '))
    + '"tags": '
    + json.dumps({"origin": _TAGS[name][0], "nature": _TAGS[name][1], "scope": "Process"})
    + f', "value": {{"type": "{_TAGS[name][2]}", "value": '
    for pos, name in _PRESENT
)
_JSON_HEADS = {kind: f'{{"objType": "{name}", "proxyId": ' for kind, name in KIND_NAMES.items()}

#: Rows rendered per slice of a body (see :func:`csv_slices`).
SLICE = 200


def _cell(value: int | str | None) -> str:
    """One CSV field: empty for ``None``; quoted (quotes doubled) only when it has to be."""
    if value is None:
        return ""
    if type(value) is int:
        return str(value)
    text = str(value)
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _csv_line(row: Row) -> str:
    cells = _EMPTY.copy()
    for (pos, _), value in zip(_PRESENT, _values(row), strict=True):
        if value is not None:
            cells[pos] = _cell(value)
    return ",".join(cells) + ",\n"


def csv_slices(rows: Sequence[Row]) -> Iterator[bytes]:
    """haproxy's ``show stat`` CSV, in pieces of :data:`SLICE` rows after the header."""
    yield ("# " + ",".join(FIELDS) + ",\n").encode()
    for start in range(0, len(rows), SLICE):
        yield "".join(_csv_line(row) for row in rows[start : start + SLICE]).encode()


def to_csv(rows: Iterable[Row]) -> bytes:
    """haproxy's ``show stat`` CSV."""
    return b"".join(csv_slices(tuple(rows)))


def _json_row(row: Row) -> str:
    """One row of ``show stat json``, as ``json.dumps`` writes it, built from fixed pieces."""
    ids = f'{_JSON_HEADS[row.type]}{row.iid}, "id": {row.sid}'
    return (
        "["
        + ", ".join(
            f"{ids}{tail}{value if type(value) is int else json.dumps(value)}}}}}"
            for tail, value in zip(_JSON_TAILS, _values(row), strict=True)
            if value is not None
        )
        + "]"
    )


def json_slices(rows: Sequence[Row]) -> Iterator[bytes]:
    """haproxy's ``show stat json``, in pieces of :data:`SLICE` rows."""
    yield b"["
    for start in range(0, len(rows), SLICE):
        piece = ", ".join(_json_row(row) for row in rows[start : start + SLICE])
        yield (piece if start == 0 else ", " + piece).encode()
    yield b"]\n"


def to_json(rows: Iterable[Row]) -> bytes:
    """haproxy's ``show stat json``: one list of field objects per row."""
    return b"".join(json_slices(tuple(rows)))
