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
from collections.abc import Iterable
from typing import Any

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


def _cell(value: int | str | None) -> str:
    """One CSV field: empty for ``None``; quoted (quotes doubled) only when it has to be."""
    if value is None:
        return ""
    text = str(value)
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def to_csv(rows: Iterable[Row]) -> bytes:
    """haproxy's ``show stat`` CSV."""
    lines = ["# " + ",".join(FIELDS) + ","]
    lines.extend(",".join(_cell(row.value(name)) for name in FIELDS) + "," for row in rows)
    return ("\n".join(lines) + "\n").encode()


def to_json(rows: Iterable[Row]) -> bytes:
    """haproxy's ``show stat json``: one list of field objects per row."""
    document: list[list[dict[str, Any]]] = []
    for row in rows:
        fields = []
        for position, name in enumerate(FIELDS):
            value = row.value(name)
            if value is None:
                continue
            origin, nature, kind = _TAGS[name]
            fields.append(
                {
                    "objType": KIND_NAMES[row.type],
                    "proxyId": row.iid,
                    "id": row.sid,
                    "field": {"pos": position, "name": name},
                    "processNum": 1,
                    "tags": {"origin": origin, "nature": nature, "scope": "Process"},
                    "value": {"type": kind, "value": value},
                }
            )
        document.append(fields)
    return json.dumps(document).encode() + b"\n"
