"""ddiscover's benchmark: ddiscover side by side with haproxy and with no proxy, in one run.

Run it through ``bench/run`` (which installs the Debian packages it needs); see
docs/performance.md for what it measures and how to read the results.

Layout of one run, all on loopback:

* CPU 1 (this driver and every process it starts, except the proxies): a real etcd, nginx
  (a 128-byte file on two ports = two backends), an iperf3 server, ``bench/backend.py`` (the
  slow-consumer backend), the idle-burst backend (a listening socket of this process), and the
  load generators (wrk, iperf3 -c, this process).
* CPU 0: the proxy under test, alone: ``haproxy`` (nbthread 1, mode tcp, balance roundrobin,
  ``check inter 2s rise 3 fall 2``) and ``twistd -n ddiscover`` (backends from etcd, stats
  port on, health checks, log level info).

Every round starts fresh proxy processes (one instance per memory workload, so a peak-RSS
measurement never reuses memory an earlier workload left in the allocator), then runs every
workload once per target, the targets in an order rotated each round.  Results: a table on
stdout and JSON lines in ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from bench.harness.backends import Backends  # noqa: E402
from bench.harness.proxies import (  # noqa: E402
    DDiscover,
    HAProxy,
    NoProxy,
    Target,
    start_round,
    stop_instances,
)
from bench.harness.system import (  # noqa: E402
    Processes,
    Quiet,
    cpu_seconds,
    log,
    machine_info,
    prepare_process,
)
from bench.profiling import profile_ddiscover  # noqa: E402
from bench.report import summarize, table  # noqa: E402
from bench.scenarios import ALL_WORKLOADS, THROUGHPUT, run_workload  # noqa: E402
from bench.scenarios.memory import slow_consumer  # noqa: E402
from tests.integration.etcd import EtcdProcess  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 s measurements, 1.5 s slow window (about 2 minutes)",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, help="seconds per wrk/iperf3 measurement (5; quick 1)")
    p.add_argument(
        "--workloads",
        default=",".join(ALL_WORKLOADS),
        help=f"comma-separated subset of {','.join(ALL_WORKLOADS)}",
    )
    p.add_argument(
        "--ddiscover",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="benchmark the ddiscover package in DIR (a copy of the project) as "
        "target ddiscover:NAME; repeatable. Default: this checkout as 'ddiscover'",
    )
    p.add_argument(
        "--with-checkout",
        action="store_true",
        help="with --ddiscover, also run this checkout as 'ddiscover'",
    )
    p.add_argument("--no-none", action="store_true", help="skip the no-proxy baseline")
    p.add_argument("--slow-size", type=int, default=200_000_000, help="bytes (200 MB)")
    p.add_argument("--slow-rate", type=float, default=1_000_000, help="reader pace, bytes/s")
    p.add_argument("--slow-window", type=float, help="seconds at the slow pace (5; quick 1.5)")
    p.add_argument("--idle-conns", type=int, default=5000)
    p.add_argument(
        "--access-log",
        action="store_true",
        help="log every connection: ddiscover --access-log, haproxy option tcplog "
        "(default: events only, as both do out of the box)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=180.0,
        help="seconds a run may spend in total waiting for other load on the "
        "machine to stop before a measurement (0: never wait)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of measuring: profile each ddiscover target under each workload",
    )
    p.add_argument("--profiler", choices=("cprofile", "py-spy"), default="cprofile")
    p.add_argument("--python", default=sys.executable, help="python that runs ddiscover")
    args = p.parse_args(argv)
    args.duration = args.duration or (1 if args.quick else 5)
    args.omit = 0 if args.quick else 1
    args.slow_window = args.slow_window or (1.5 if args.quick else 5.0)
    args.settle = 0.5 if args.quick else 1.0
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(args.workloads) - set(ALL_WORKLOADS)
    if unknown:
        p.error(f"unknown workloads {sorted(unknown)}")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    return args


class Run:
    """One benchmark run: its processes, its targets, its samples and its JSON lines."""

    def __init__(self, args: argparse.Namespace, work: Path, out_path: Path) -> None:
        self.args = args
        self.work = work
        self.out_path = out_path
        self.out = open(out_path, "w")  # noqa: SIM115 (closed in close())
        self.procs = Processes(work)
        self.etcd = EtcdProcess()
        self.backends = Backends(work)
        self.samples: list[dict[str, Any]] = []
        self.quiet = Quiet(args.quiet_wait)
        self.targets: list[Target] = []
        self.meta: dict[str, Any] = {}

    def emit(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def close(self) -> None:
        self.out.close()
        self.procs.stop_all()
        self.etcd.cleanup()
        if self.backends.idle_listener is not None:
            self.backends.idle_listener.close()

    def setup(self) -> None:
        """Start etcd and the backends; make the targets."""
        args = self.args
        self.meta = {
            "type": "meta",
            **machine_info(args.python),
            "args": {k: v for k, v in vars(args).items() if k != "python"},
        }
        self.emit(self.meta)
        log(f"logs and configs in {self.work}; results in {self.out_path}")
        self.etcd.start()
        self.backends.start(self.procs, args.python)
        variants = [tuple(v.split("=", 1)) for v in args.ddiscover]
        sources = [("ddiscover", str(REPO))] if not variants or args.with_checkout else []
        sources += [(n if n.startswith("ddiscover") else f"ddiscover:{n}", d) for n, d in variants]
        if not args.no_none and not args.profile:
            self.targets.append(NoProxy(self.backends))
        if not args.profile:
            self.targets.append(HAProxy(self.procs, self.backends, self.work, args.access_log))
        extra = ["--access-log"] if args.access_log else []
        for i, (name, src) in enumerate(sources):
            self.targets.append(
                DDiscover(
                    name, Path(src).resolve(), python=args.python, procs=self.procs,
                    backends=self.backends, etcd=self.etcd, index=i, extra=extra,
                )
            )  # fmt: skip
        self.emit({"type": "targets", "names": self.names, "ddiscover_sources": self.sources})
        for name, src in self.sources.items():
            log(f"{name}: ddiscover from {src}")

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    @property
    def sources(self) -> dict[str, str]:
        return {t.name: str(t.src) for t in self.targets if isinstance(t, DDiscover)}

    def record(self, round_no: int, workload: str, target: str, metrics: dict[str, Any]) -> None:
        sample = {
            "type": "sample",
            "round": round_no + 1,
            "workload": workload,
            "target": target,
            "metrics": metrics,
            "time": time.time(),
        }
        self.samples.append(sample)
        self.emit(sample)
        shown = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
        )
        log(f"  {workload:<9} {target:<18} {shown}")

    def round(self, r: int) -> None:
        """Fresh proxies; every workload once per target, targets in an order rotated by r."""
        args = self.args
        want_slow = "slow" in args.workloads
        purposes = ["main"] + (["slowdown", "slowup"] if want_slow else [])
        log(f"round {r + 1}/{args.rounds}: starting fresh proxies")
        instances = start_round(self.targets, purposes, r, self.backends, self.procs)
        names = self.names
        order = names[r % len(names) :] + names[: r % len(names)]
        if want_slow:
            directions = ["slowdown", "slowup"] if r % 2 == 0 else ["slowup", "slowdown"]
            for purpose in directions:
                for t in order:
                    inst = instances[(t, purpose)]
                    if inst.pid is None:
                        continue  # no proxy, no proxy memory
                    bg = self.quiet.wait()
                    direction = purpose.removeprefix("slow")
                    metrics = slow_consumer(
                        inst, direction, args.slow_size, args.slow_window, args.slow_rate
                    )
                    self.record(r, purpose, t, {"bg_cpus": bg} | metrics)
                stop_instances(self.procs, instances, purpose)
        for workload in [w for w in ("idle", *THROUGHPUT) if w in args.workloads]:
            for t in order:
                inst = instances[(t, "main")]
                bg = self.quiet.wait()
                cpu0, wall0 = cpu_seconds(inst.pid), time.monotonic()
                metrics = {"bg_cpus": bg} | run_workload(workload, inst, args, self.backends)
                if workload != "idle" and inst.pid:
                    elapsed = time.monotonic() - wall0
                    metrics["proxy_cpu"] = (cpu_seconds(inst.pid) - cpu0) / elapsed
                self.record(r, workload, t, metrics)
                time.sleep(0.3)
        stop_instances(self.procs, instances)

    def report(self) -> None:
        rows = summarize(self.samples, self.names)
        for row in rows:
            self.emit(row)
        meta = self.meta
        print()
        print(
            f"ddiscover benchmark, {self.args.rounds} rounds, medians (min-max); "
            f"{meta['cpu']}, {meta['haproxy']}, Python {meta['python']}, "
            f"Twisted {meta['twisted']}"
        )
        for name, src in self.sources.items():
            print(f"  {name}: {src}")
        print(table(rows, self.names, markdown=False))
        print()
        print(table(rows, self.names, markdown=True))
        print()
        print(f"JSON lines: {self.out_path}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    prepare_process()
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_path = results / f"{stamp}{'-profile' if args.profile else ''}.jsonl"
    work = Path(tempfile.mkdtemp(prefix="ddbench-"))
    run = Run(args, work, out_path)
    try:
        run.setup()
        if args.profile:
            for t in run.targets:
                assert isinstance(t, DDiscover)
                profile_ddiscover(
                    args, t, backends=run.backends, procs=run.procs, outdir=results, stamp=stamp
                )
            return 0
        for r in range(args.rounds):
            run.round(r)
        run.report()
        return 0
    finally:
        run.close()
        if not os.environ.get("DDBENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
