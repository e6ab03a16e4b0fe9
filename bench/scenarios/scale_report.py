"""The table of a scale run: ddiscover at rest, under churn, and haproxy at rest, with ratios."""

from __future__ import annotations

import statistics
from typing import Any

LAG_P99_MS, LAG_MAX_MS = 10.0, 50.0  # the targets


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _fmt(v: Any, scale: float = 1.0, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v * scale:,.{digits}f}"


def _spread(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    missing = len(values) - len(known)
    text = f"{statistics.median(known):.2f} (max {max(known):.2f})"
    return text + (f", {missing} never" if missing else "")


def _ready(target: dict[str, Any]) -> str:
    if target.get("ready_s") is not None or "up_at_start" not in target:
        return _fmt(target.get("ready_s"))
    return f"never: {target['up_at_start']} UP after {target.get('waited_s', 0):.0f}"


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(figure, ddiscover at rest, ddiscover churn, haproxy at rest, ratio rest/haproxy)."""
    dd, ha = result.get("ddiscover", {}), result.get("haproxy", {})
    rest, churn, ha_rest = dd.get("rest", {}), dd.get("churn", {}), ha.get("rest", {})
    out = []

    def add(label: str, path: tuple[str, ...], scale: float = 1.0, digits: int = 1) -> None:
        a, b, c = _get(rest, *path), _get(churn, *path), _get(ha_rest, *path)
        ratio = f"{a / c:.2f}x" if a is not None and c else "-"
        out.append(
            (label, _fmt(a, scale, digits), _fmt(b, scale, digits), _fmt(c, scale, digits), ratio)
        )

    out.append(("all backends UP after start, s", _ready(dd), "", _ready(ha), "-"))
    add("CPU, checks only, % of a core", ("cpu_idle",), 100)
    add("CPU, with probes, % of a core", ("cpu_probed",), 100)
    out[-1] = (out[-1][0], out[-1][1], _fmt(churn.get("cpu"), 100), *out[-1][3:])
    add("RSS, MiB", ("rss_kib",), 1 / 1024)
    for q in ("p50", "p99", "max"):
        add(f"lag probe (GET /health) {q}, ms", ("lag", "rtt_ms", q), 1, 2)
    for q in ("p50_le_s", "p99_le_s", "max_gt_s"):
        add(f"loop_lag_seconds {q}, ms", ("scrape", "loop_lag_metric", q), 1000, 1)
    for q in ("p50", "p99", "max"):
        add(f"request through proxy {q}, ms", ("request", "latency_ms", q), 1, 2)
    add("requests failed", ("request", "failures"), 1, 0)
    for path in ("/metrics", "/;csv"):
        add(f"scrape {path} p50, ms", ("scrape", "duration_ms", path, "p50"))
        add(f"scrape {path} max, ms", ("scrape", "duration_ms", path, "max"))
        add(f"scrape {path} size, KB", ("scrape", "bytes", path), 1 / 1000, 0)
    writer = churn.get("writer", {})
    out.append(("writer (plain set) writes/s", "", _fmt(writer.get("rate_per_s"), 1, 0),
                "", f"wanted {_fmt(writer.get('wanted_per_s'), 1, 0)}"))  # fmt: skip
    new = churn.get("new_service", [])
    out.append(("etcd write -> listener accepts, s", "",
                _spread([n.get("accept_s") for n in new]), "", ""))  # fmt: skip
    out.append(("etcd write -> first request forwarded, s", "",
                _spread([n.get("forward_s") for n in new]), "", ""))  # fmt: skip
    return out


def targets(result: dict[str, Any]) -> list[str]:
    """One line per phase: the lag targets (p99 < 10 ms, max < 50 ms), met or not."""
    lines = []
    for phase in ("rest", "churn"):
        lag = _get(result, "ddiscover", phase, "lag", "rtt_ms") or {}
        p99, mx = lag.get("p99"), lag.get("max")
        met = p99 is not None and mx is not None and p99 < LAG_P99_MS and mx < LAG_MAX_MS
        lines.append(
            f"ddiscover {phase}: lag p99 {_fmt(p99, 1, 2)} ms (< {LAG_P99_MS:g}), "
            f"max {_fmt(mx, 1, 2)} ms (< {LAG_MAX_MS:g}): {'met' if met else 'NOT met'}"
        )
    return lines


def report(result: dict[str, Any]) -> str:
    head = ("figure", "ddiscover rest", "ddiscover churn", "haproxy rest", "dd/haproxy")
    body = rows(result)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    meta = result.get("meta", {})
    args = result.get("args", {})
    lines.insert(
        0,
        f"scale: {args.get('services')} services x {args.get('backends')} backends; "
        f"{meta.get('cpu')}, {meta.get('haproxy')}, ddiscover {meta.get('ddiscover_commit')}\n",
    )
    return "\n".join([*lines, "", *targets(result)])
