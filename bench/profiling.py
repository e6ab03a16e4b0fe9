"""Where ddiscover spends its time under each workload: cProfile or py-spy, summarized."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import time
from pathlib import Path

from bench.harness.backends import Backends
from bench.harness.proxies import DDiscover, stop_instances, wait_ready
from bench.harness.system import Processes
from bench.scenarios import run_workload


def profile_ddiscover(
    args: argparse.Namespace,
    target: DDiscover,
    *,
    backends: Backends,
    procs: Processes,
    outdir: Path,
    stamp: str,
) -> None:
    """Profile a fresh ddiscover process under each workload alone; print where time goes.

    cProfile (twistd's own ``--profile``) by default: exact call counts, per-call overhead
    inflated.  ``--profiler py-spy`` samples instead (see docs/performance.md for its limits
    on this machine).
    """
    for k, workload in enumerate(w for w in args.workloads if w != "slow"):
        tag = f"{stamp}-profile-{target.name.replace(':', '-')}-{workload}"
        out = outdir / f"{tag}.{'pstats' if args.profiler == 'cprofile' else 'txt'}"
        inst = target.start("main", 100 + k, profile=out if args.profiler == "cprofile" else None)
        wait_ready({(target.name, "main"): inst}, backends, procs)
        spy = None
        if args.profiler == "py-spy":
            pyspy = shutil.which("py-spy")
            if pyspy is None:
                raise SystemExit("--profiler py-spy needs py-spy (pip install py-spy)")
            spy = subprocess.Popen(
                [
                    pyspy,
                    "record",
                    "-p",
                    str(inst.pid),
                    "-r",
                    "250",
                    "-d",
                    str(args.duration + 1),
                    "-f",
                    "raw",
                    "-o",
                    str(out),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
        metrics = run_workload(workload, inst, args, backends)
        ops = {"keepalive": "rps", "close": "rps"}.get(workload)
        count = (
            metrics[ops] * args.duration
            if ops
            else args.idle_conns
            if workload == "idle"
            else None
        )
        if spy is not None:
            spy.wait()
        stop_instances(procs, {(target.name, "main"): inst})
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        print(f"\n## {target.name}: {workload} ({shown}) - {out}")
        if args.profiler == "cprofile":
            print(cprofile_report(out, count, "request" if ops else "connection"))
        else:
            print(pyspy_report(out))


def cprofile_report(path: Path, count: float | None, unit: str, top: int = 28) -> str:
    """Top functions by own time; calls per request/connection when ``count`` is known."""
    import pstats  # noqa: PLC0415

    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0
    rows = sorted(entries.items(), key=lambda kv: -kv[1][2])[:top]
    per = f"calls/{unit}" if count else "calls"
    out = [f"own time total {total:.2f}s; {'own %':>6} {'cum %':>6} {per:>16}  function"]
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in rows:
        calls = ncalls / count if count else ncalls
        out.append(
            f"{'':>24}{100 * tottime / total:6.1f} {100 * cumtime / total:6.1f} "
            f"{calls:16.2f}  {func} ({_short_path(filename)}:{line})"
        )
    return "\n".join(out)


def _short_path(path: str) -> str:
    for marker in ("site-packages/", "/ddiscover/", "lib/python3.11/"):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return "ddiscover/" + rest if marker == "/ddiscover/" else rest
    return path


def pyspy_report(raw: Path, top: int = 22) -> str:
    self_time: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not count_s.isdigit():
            continue
        count = int(count_s)
        names = [_short(f) for f in stack.split(";")]
        total += count
        self_time[names[-1]] = self_time.get(names[-1], 0) + count
        for name in set(names):
            incl[name] = incl.get(name, 0) + count
    if not total:
        return "(no samples)"
    out = [f"{total} samples; self %  (inclusive %)  function"]
    for name, n in sorted(self_time.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"  {100 * n / total:5.1f}  ({100 * incl[name] / total:5.1f})  {name}")
    return "\n".join(out)


def _short(frame: str) -> str:
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    return f"{m.group(1)} ({_short_path(m.group(2))})" if m else frame
