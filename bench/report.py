"""The summary of a run: metrics, their targets, medians and ratios to haproxy, the table."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Check = Callable[[float | None, float | None, float | None], bool]
"""(median, ratio to haproxy, worst round) -> target met."""


@dataclass(frozen=True)
class Metric:
    workload: str
    key: str
    label: str
    unit: str
    better: str  # "higher" or "lower"
    goal: str | None = None  # human-readable target
    check: Check | None = None


def _ratio_at_least(limit: float) -> Check:
    return lambda med, ratio, worst: ratio is not None and ratio >= limit


def _ratio_at_most(limit: float) -> Check:
    return lambda med, ratio, worst: ratio is not None and ratio <= limit


METRICS = [
    Metric(
        "bulk1", "gbps", "bulk, 1 stream", "Gbit/s", "higher", ">= 0.95x", _ratio_at_least(0.95)
    ),
    Metric(
        "bulk4", "gbps", "bulk, 4 streams", "Gbit/s", "higher", ">= 0.95x", _ratio_at_least(0.95)
    ),
    Metric("keepalive", "rps", "keep-alive", "req/s", "higher", ">= 0.85x", _ratio_at_least(0.85)),
    Metric("keepalive", "p50_ms", "keep-alive p50", "ms", "lower"),
    Metric("keepalive", "p99_ms", "keep-alive p99", "ms", "lower", "<= 1.3x", _ratio_at_most(1.3)),
    Metric(
        "close", "rps", "new connections", "conn/s", "higher", ">= 0.40x", _ratio_at_least(0.40)
    ),
    Metric("close", "p50_ms", "new conn. p50", "ms", "lower"),
    Metric("close", "p99_ms", "new conn. p99", "ms", "lower"),
    Metric(
        "slowdown",
        "peak_growth_kib",
        "slow reader: client",
        "KiB peak RSS+",
        "lower",
        "< 1024 KiB (worst)",
        lambda med, ratio, worst: worst is not None and worst < 1024,
    ),
    Metric(
        "slowup",
        "peak_growth_kib",
        "slow reader: backend",
        "KiB peak RSS+",
        "lower",
        "< 1024 KiB (worst)",
        lambda med, ratio, worst: worst is not None and worst < 1024,
    ),
    Metric(
        "idle",
        "kib_per_conn",
        "idle: memory",
        "KiB/conn",
        "lower",
        "<= 3.5 KB",
        lambda med, ratio, worst: med is not None and med * 1.024 <= 3.5,
    ),
    Metric(
        "idle",
        "absorb_s",
        "idle: 5k burst",
        "s",
        "lower",
        "<= 0.5 s",
        lambda med, ratio, worst: med is not None and med <= 0.5,
    ),
]
# Secondary columns kept in the JSON lines: proxy CPU use per throughput workload.


def summarize(samples: list[dict[str, Any]], targets: list[str]) -> list[dict[str, Any]]:
    rows = []
    for m in METRICS:
        base = None
        per_target = {}
        for t in targets:
            values = [
                s["metrics"][m.key]
                for s in samples
                if s["workload"] == m.workload
                and s["target"] == t
                and s["metrics"].get(m.key) is not None
            ]
            if values:
                worst = max(values) if m.better == "lower" else min(values)
                per_target[t] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "n": len(values),
                    "worst": worst,
                }
        if "haproxy" in per_target:
            base = per_target["haproxy"]["median"]
        for t, st in per_target.items():
            ratio = st["median"] / base if base else None
            row = {
                "type": "summary",
                "workload": m.workload,
                "metric": m.key,
                "label": m.label,
                "unit": m.unit,
                "target": t,
                **st,
                "ratio_to_haproxy": ratio,
            }
            if m.check is not None and t.startswith("ddiscover"):
                row["goal"] = m.goal
                row["met"] = bool(m.check(st["median"], ratio, st["worst"]))
            rows.append(row)
    return rows


def _fmt(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(rows: list[dict[str, Any]], targets: list[str], markdown: bool) -> str:
    ddiscovers = [t for t in targets if t.startswith("ddiscover")]
    head = ["workload", "unit", *targets, *[f"{d} / haproxy" for d in ddiscovers]]
    if len(ddiscovers) == 1:
        head += ["target", "met"]
    lines = []
    by = {(r["label"], r["target"]): r for r in rows}
    labels = list(dict.fromkeys(r["label"] for r in rows))
    body = []
    for label in labels:
        some = next(r for r in rows if r["label"] == label)
        cells = [label, some["unit"]]
        for t in targets:
            r = by.get((label, t))
            cells.append(f"{_fmt(r['median'])} ({_fmt(r['min'])}-{_fmt(r['max'])})" if r else "-")
        for d in ddiscovers:
            r = by.get((label, d))
            cells.append(f"{r['ratio_to_haproxy']:.2f}x" if r and r["ratio_to_haproxy"] else "-")
        if len(ddiscovers) == 1:
            r = by.get((label, ddiscovers[0]))
            cells += [
                r.get("goal", "") if r else "",
                ("yes" if r["met"] else "NO") if r and "met" in r else "",
            ]
        body.append(cells)
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        lines += ["| " + " | ".join(c) + " |" for c in body]
    else:
        widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
        for row in [head, *body]:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)
