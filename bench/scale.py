"""The scale scenario: ddiscover with 1,000 services x 5 backends, at rest and under churn.

Run it through ``bench/scale`` (``bench/prepare.sh`` installs what it needs); docs/performance.md
("Scale scenario") says how to read it.  All on loopback; the proxy alone on CPU 0, everything
else (etcd, the backend fleet, the loops) on CPU 1:

* a real etcd (v2 keys); a fleet process listening on ``127.0.1.1``-``127.0.1.5`` (5 backends
  per service, one port per service), echoing a request and closing;
* ddiscover with checks every 2 s (rise 3, fall 2), its stats port on;
* a registrar-like writer re-writing the 5,000 backend keys (TTL 30 s) every 10 s: with v2
  ``refresh=true`` (no watch event, as ddiscover's registrar does) at rest, with a plain set
  (one event per key, 500 events/s) during churn;
* a stats scrape (``/metrics`` and ``/;csv``) every second, a lag probe (GET ``/health`` on one
  keep-alive connection every 20 ms) and a request loop (a new connection through the proxy,
  ``PING`` and its echo, every 10 ms, cycling over every service);
* during churn, new services written one by one: time from the etcd write to the listener
  accepting and to the first request forwarded;
* then haproxy with the same 1,000 x 5 in a generated config (no churn, no registry), for the
  same rest-phase figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from bench.harness import system  # noqa: E402
from bench.harness.proxies import HAPROXY_CONF  # noqa: E402
from bench.scenarios.scale_loops import v2_write  # noqa: E402
from bench.scenarios.scale_report import report  # noqa: E402
from tests.integration.etcd import EtcdProcess  # noqa: E402
from tests.integration.procfs import rss_kib  # noqa: E402

LOOPS = BENCH / "scenarios" / "scale_loops.py"
FLEET = BENCH / "harness" / "fleet.py"
PREFIX = "/scale"
BACKEND_ADDRS = [f"127.0.1.{j + 1}" for j in range(5)]


class Loops:
    """The loop processes of one phase; their JSON results once they end."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.running: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, *argv: object) -> None:
        self.running[name] = subprocess.Popen(
            [self.python, str(LOOPS), name, *map(str, argv)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def collect(self, *names: str, stop: bool = False) -> dict[str, Any]:
        results = {}
        for name in names:
            proc = self.running.pop(name)
            if stop:
                proc.send_signal(signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=300)  # a probe may wait STALL s
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                err += f"\n{name}: still waiting for the proxy 300 s after its phase"
            try:
                results[name] = json.loads(out)
            except ValueError:
                results[name] = {"error": (out + err)[-800:]}
                system.log(f"loop {name} failed: {(out + err)[-800:]}")
        return results

    def stop_all(self) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def check_ports(port0: int, count: int, addr: str) -> None:
    for port in range(port0, port0 + count):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, port))
            except OSError as e:
                raise SystemExit(f"{addr}:{port} is taken ({e}); pick --port-base") from None


def servers_up(stats_port: int) -> int:
    """How many servers the stats CSV (haproxy's ``show stat`` format) says are UP."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/;csv", timeout=120) as r:
            text = r.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return 0
    rows = [ln.split(",") for ln in text.splitlines() if ln and not ln.startswith("#")]
    return sum(r[1] not in ("FRONTEND", "BACKEND") and r[17:18] == ["UP"] for r in rows)


def wait_for(what: str, ok: Any, timeout: float, procs: system.Processes, name: str) -> float:
    """Poll ``ok()`` every 0.2 s; the seconds it took.  Fails if ``name`` exits."""
    start = time.monotonic()
    while not ok():
        procs.check(name)
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.2)
    return time.monotonic() - start


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _forwards(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"PING\n")
            return s.recv(16) == b"PING\n"
    except OSError:
        return False


class Scale:
    """One scale run: etcd, the fleet, then ddiscover and haproxy in turn."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.procs = system.Processes(work)
        self.loops = Loops(args.python)
        self.etcd = EtcdProcess()
        n = args.services
        self.service_port0 = args.port_base
        self.backend_port0 = args.port_base + n + args.new_services + 10
        self.keys = [
            [f"{PREFIX}/svc{i}/b{j}", f"{addr}:{self.backend_port0 + i}"]
            for i in range(n)
            for j, addr in enumerate(BACKEND_ADDRS[: args.backends])
        ]
        self.keys_file = work / "keys.json"
        self.result: dict[str, Any] = {
            "meta": system.machine_info(args.python),
            "args": vars(args),
        }

    def close(self) -> None:
        self.loops.stop_all()
        self.procs.stop_all()
        self.etcd.cleanup()

    def setup(self) -> None:
        """etcd, the fleet, and every key written once (with its TTL) before a proxy starts."""
        args = self.args
        check_ports(self.service_port0, args.services + args.new_services, "127.0.0.1")
        self.etcd.start()
        self.procs.start(
            "fleet", [args.python, str(FLEET), str(self.backend_port0), str(args.services),
                      *BACKEND_ADDRS[: args.backends]],
        )  # fmt: skip
        fleet_log = self.work / "fleet.log"
        wait_for("fleet", lambda: "ready" in fleet_log.read_text(), 60, self.procs, "fleet")
        start = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.etcd.client_port, timeout=10)
        for i in range(args.services):
            v2_write(conn, f"{PREFIX}/svc{i}/port", {"value": str(self.service_port0 + i)})
        for key, value in self.keys:
            v2_write(conn, key, {"value": value, "ttl": str(args.ttl)})
        conn.close()
        self.keys_file.write_text(json.dumps(self.keys))
        took = time.monotonic() - start
        system.log(
            f"{args.services} port keys, {len(self.keys)} backend keys written in {took:.1f}s"
        )

    def writer(self, mode: str) -> None:
        self.loops.start(
            "writer", 3600, self.etcd.url, self.keys_file, mode, self.args.period, self.args.ttl
        )

    def probes(self, stats_port: int, seconds: float) -> None:
        """The lag probe, the stats scrape and the request loop, for ``seconds``."""
        args = self.args
        self.loops.start("lag", seconds, "127.0.0.1", stats_port, "/health", args.lag_interval)
        self.loops.start("scrape", seconds, "127.0.0.1", stats_port, 1.0, *self.scrape_paths)
        self.loops.start(
            "request", seconds, "127.0.0.1", self.service_port0, args.services,
            args.request_interval,
        )  # fmt: skip

    scrape_paths: tuple[str, ...] = ("/metrics", "/;csv")

    def at_rest(self, phase: str, pid: int, stats_port: int) -> dict[str, Any]:
        """CPU with nothing but checks (and the refresh writer), then the probes."""
        args = self.args
        cpu0, wall0 = system.cpu_seconds(pid), time.monotonic()
        time.sleep(args.idle)
        idle_cpu = (system.cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
        cpu0, wall0 = system.cpu_seconds(pid), time.monotonic()
        self.probes(stats_port, args.rest)
        out = self.loops.collect("lag", "scrape", "request")
        out["cpu_idle"] = idle_cpu
        out["cpu_probed"] = (system.cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
        out["rss_kib"] = rss_kib(pid)
        system.log(f"{phase}: idle CPU {idle_cpu:.1%}, RSS {out['rss_kib'] / 1024:.0f} MiB, "
            f"lag p99 {out['lag'].get('rtt_ms', {}).get('p99')} ms")  # fmt: skip
        return out

    def churn(self, pid: int, stats_port: int) -> dict[str, Any]:
        """The set-writer on; new services written one by one while the probes run."""
        args = self.args
        self.loops.collect("writer", stop=True)
        self.writer("set")
        cpu0, wall0 = system.cpu_seconds(pid), time.monotonic()
        self.probes(stats_port, args.churn)
        opened = []
        gap = args.churn / (args.new_services + 1)
        conn = http.client.HTTPConnection("127.0.0.1", self.etcd.client_port, timeout=10)
        for k in range(args.new_services):
            time.sleep(gap / 2)
            opened.append(self._new_service(conn, k, limit=max(gap, 5.0)))
            time.sleep(gap / 2)
        conn.close()
        out = self.loops.collect("lag", "scrape", "request")
        out["cpu"] = (system.cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
        out["rss_kib"] = rss_kib(pid)
        out |= self.loops.collect("writer", stop=True)
        out["new_service"] = opened
        p99 = out["lag"].get("rtt_ms", {}).get("p99")
        rate = out["writer"].get("rate_per_s", 0)
        system.log(
            f"churn: CPU {out['cpu']:.1%}, lag p99 {p99} ms, writer {rate:.0f}/s, new {opened}"
        )
        return out

    def _new_service(
        self, conn: http.client.HTTPConnection, k: int, limit: float
    ) -> dict[str, Any]:
        """Backends first, then the port key; seconds until it accepts and forwards (None if
        not within ``limit`` s)."""
        name, port = f"{PREFIX}/new{k}", self.service_port0 + self.args.services + k
        for j, addr in enumerate(BACKEND_ADDRS[: self.args.backends]):
            v2_write(conn, f"{name}/b{j}", {"value": f"{addr}:{self.backend_port0 + k}"})
        written = time.monotonic()
        v2_write(conn, f"{name}/port", {"value": str(port)})
        accept = forward = None
        while time.monotonic() - written < limit and forward is None:
            if accept is None and _accepts(port):
                accept = time.monotonic() - written
            if accept is not None and _forwards(port):
                forward = time.monotonic() - written
            time.sleep(0.005)
        return {"accept_s": accept, "forward_s": forward}

    def ddiscover(self) -> dict[str, Any]:
        args = self.args
        stats_port = system.free_port()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        argv = [
            args.python, "-c",
            "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
            "-n", "--pidfile=", "ddiscover",
            "--etcd", f"127.0.0.1:{self.etcd.client_port}", "--prefix", PREFIX,
            "--interface", "127.0.0.1", "--stats-port", str(stats_port),
            "--check-interval", "2", "--rise", "3", "--fall", "2",
            "--drain-timeout", "1", "--log-level", "info",
        ]  # fmt: skip
        self.writer("refresh")  # keeps the TTLs alive from here on, without events
        proc = self.procs.start("ddiscover", argv, cpu=system.PROXY_CPU, env=env, cwd=REPO)
        out = self.wait_up("ddiscover", stats_port)
        out["rest"] = self.at_rest("ddiscover at rest", proc.pid, stats_port)
        out["churn"] = self.churn(proc.pid, stats_port)
        self.procs.stop("ddiscover")
        return out

    def wait_up(self, name: str, stats_port: int) -> dict[str, Any]:
        """Wait until every backend is UP (the stats CSV says so), or give up after
        ``--ready-timeout`` and measure anyway: how many were UP, and when."""
        want, start, up = len(self.keys), time.monotonic(), 0
        deadline = start + self.args.ready_timeout
        while time.monotonic() < deadline:
            self.procs.check(name)
            up = servers_up(stats_port)
            if up >= want:
                break
            time.sleep(2.0)  # one CSV at a time, rarely: on a stalled proxy each costs a lot
        took = time.monotonic() - start
        ready = took if up >= want else None
        system.log(f"{name}: {up} of {want} backends UP {took:.1f}s after start")
        return {"ready_s": ready, "up_at_start": up, "waited_s": took}

    def haproxy(self) -> dict[str, Any]:
        args = self.args
        stats_port, sock = system.free_port(), self.work / "haproxy.sock"
        head = HAPROXY_CONF.format(
            # 2 fds a connection, plus 1,000 listeners and 5,000 checks, within 20,000 fds.
            maxconn=4000,
            sock=sock,
            stats=stats_port,
            session_logging="option dontlog-normal",
        )
        lines = [head + HAPROXY_STATS]
        for i in range(args.services):
            lines.append(f"listen svc{i}\n    bind 127.0.0.1:{self.service_port0 + i}")
            for j, addr in enumerate(BACKEND_ADDRS[: args.backends]):
                lines.append(f"    server b{j} {addr}:{self.backend_port0 + i}")
        conf = self.work / "haproxy.cfg"
        conf.write_text("\n".join(lines) + "\n")
        proc = self.procs.start(
            "haproxy", ["haproxy", "-db", "-f", str(conf)], cpu=system.PROXY_CPU
        )
        out = self.wait_up("haproxy", stats_port)
        out["rest"] = self.at_rest("haproxy at rest", proc.pid, stats_port)
        self.procs.stop("haproxy")
        return out


HAPROXY_STATS = """\
    monitor-uri /health
    http-request use-service prometheus-exporter if { path /metrics }
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short phases (under 3 minutes)")
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--backends", type=int, default=5, choices=range(1, 6))
    p.add_argument("--idle", type=float, help="seconds of CPU at rest, no probes (20; quick 5)")
    p.add_argument("--rest", type=float, help="seconds of probes at rest (60; quick 20)")
    p.add_argument("--churn", type=float, help="seconds of churn (120; quick 30)")
    p.add_argument("--new-services", type=int, help="services added during churn (6; quick 3)")
    p.add_argument("--period", type=float, default=10.0, help="writer: seconds per pass")
    p.add_argument("--ttl", type=int, default=30)
    p.add_argument("--lag-interval", type=float, default=0.02)
    p.add_argument("--request-interval", type=float, default=0.01)
    p.add_argument(
        "--ready-timeout", type=float, help="seconds to wait for all UP (180; quick 60)"
    )
    p.add_argument("--port-base", type=int, default=20000)
    p.add_argument("--no-haproxy", action="store_true")
    p.add_argument("--no-ddiscover", action="store_true", help="haproxy's figures only")
    p.add_argument("--python", default=sys.executable, help="python that runs ddiscover")
    args = p.parse_args(argv)
    quick = args.quick
    args.ready_timeout = args.ready_timeout or (60.0 if quick else 180.0)
    args.idle = args.idle or (5.0 if quick else 20.0)
    args.rest = args.rest or (20.0 if quick else 60.0)
    args.churn = args.churn or (30.0 if quick else 120.0)
    args.new_services = args.new_services if args.new_services is not None else 3 if quick else 6
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    system.prepare_process()
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    out_path = results / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    with system.scratch_dir("ddscale-") as work:
        system.log(f"logs in {work}; results in {out_path}")
        run = Scale(args, work)
        try:
            run.setup()
            if not args.no_ddiscover:
                run.result["ddiscover"] = run.ddiscover()
                out_path.write_text(json.dumps(run.result, indent=1))  # kept if haproxy fails
            if not args.no_haproxy:
                run.result["haproxy"] = run.haproxy()
        finally:
            run.close()
    out_path.write_text(json.dumps(run.result, indent=1))
    print(report(run.result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
