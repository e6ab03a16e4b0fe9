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
import contextlib
import ctypes
import datetime
import errno
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from tests.integration.etcd import EtcdProcess  # noqa: E402
from tests.integration.procfs import rss_kib, status_kib  # noqa: E402

PROXY_CPU = 0
LOAD_CPU = 1
BACKENDS = {"http": ("a", "b"), "bulk": ("iperf",), "slow": ("sink",), "idle": ("hold",)}
# Which services each proxy instance serves: memory workloads get a fresh process each.
PURPOSES = {"main": ("http", "bulk", "idle"), "slowdown": ("slow",), "slowup": ("slow",)}
THROUGHPUT = ("bulk1", "bulk4", "keepalive", "close")
ALL_WORKLOADS = (*THROUGHPUT, "slow", "idle")
MAXCONN = 9000  # haproxy needs 2 fds per connection within the 20000-fd hard limit
MiB = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the driver dies, whatever kills it."""
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_next_port = 0


def free_port() -> int:
    """A loopback port nobody listens on, below the ephemeral range.

    Ports the kernel hands out (bind to 0) come from the ephemeral range, which the tens of
    thousands of client connections of a run also draw from: a port found free there can be
    some connection's local port a moment later, and the listener then fails to bind.
    """
    global _next_port  # noqa: PLW0603
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    first = max(1024, low - 12000)
    if not _next_port:
        _next_port = first + os.getpid() % 1000
    for _ in range(low - first):
        port = _next_port
        _next_port = port + 1 if port + 1 < low else first
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- processes


class Processes:
    """Every child process by name; each is stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        name: str,
        argv: list[str],
        cpu: int | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]  # taskset execs: the PID is the program's
        with open(self.logdir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (single-threaded driver)
            )
        self.procs[name] = proc
        return proc

    def check(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            tail = (self.logdir / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self, name: str, timeout: float = 10.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)


# ---------------------------------------------------------------------------- /proc readings


def hwm_kib(pid: int) -> int:
    return status_kib(pid, "VmHWM")


def reset_hwm(pid: int) -> None:
    """Reset the peak RSS (VmHWM) of ``pid`` to its current RSS (Linux >= 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpus_busy(interval: float = 0.3) -> float:
    """How many CPUs were busy (0 to the CPU count) over ``interval``, from /proc/stat."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values[:8]) - idle, sum(values[:8])

    busy0, total0 = sample()
    time.sleep(interval)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


class Quiet:
    """Waits, before each measurement, until the machine is quiet (others run tests here too).

    Between measurements nothing of ours is busy, so CPU use above ``threshold`` CPUs is
    someone else's.  Each wait is bounded, and so is the total over a run.
    """

    def __init__(self, budget: float, threshold: float = 0.3, longest: float = 30.0) -> None:
        self.budget, self.threshold, self.longest = budget, threshold, longest

    def wait(self) -> float:
        """Return the background load (CPUs) when the measurement starts."""
        start = time.monotonic()
        busy = cpus_busy()
        while (
            busy > self.threshold and self.budget > 0 and time.monotonic() - start < self.longest
        ):
            time.sleep(1.0)
            self.budget -= 1.3
            busy = cpus_busy()
        if time.monotonic() - start > 1:
            waited = time.monotonic() - start
            log(f"  waited {waited:.0f}s for a quiet machine (now {busy:.2f} CPUs busy)")
        return busy


def listen_drops() -> int:
    """TcpExt ListenDrops of this network namespace: SYNs dropped at a full accept queue."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            fields = dict(zip(head.split()[1:], values.split()[1:], strict=True))
            return int(fields.get("ListenDrops", 0))
    return 0


# ---------------------------------------------------------------------------- backends


@dataclass
class Backends:
    """The backend processes (CPU 1) and their ports, shared by every target."""

    dir: Path
    ports: dict[str, dict[str, int]] = field(default_factory=dict)  # service -> id -> port
    idle_listener: socket.socket | None = None

    def start(self, procs: Processes, python: str) -> None:
        a, b, iperf, sink = free_port(), free_port(), free_port(), free_port()
        self.idle_listener = socket.socket()
        self.idle_listener.bind(("127.0.0.1", 0))
        self.idle_listener.listen(65535)  # capped by net.core.somaxconn
        self.idle_listener.setblocking(False)
        hold = self.idle_listener.getsockname()[1]
        self.ports = {
            "http": {"a": a, "b": b},
            "bulk": {"iperf": iperf},
            "slow": {"sink": sink},
            "idle": {"hold": hold},
        }
        www, tmp = self.dir / "www", self.dir / "nginx-tmp"
        www.mkdir()
        tmp.mkdir()
        (www / "128.bin").write_bytes(b"d" * 128)
        conf = self.dir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(dir=self.dir, www=www, tmp=tmp, a=a, b=b),
        )
        procs.start(
            "nginx",
            [
                "nginx",
                "-e",
                str(self.dir / "nginx-error.log"),
                "-p",
                str(self.dir),
                "-c",
                str(conf),
            ],
        )
        procs.start("iperf3-server", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(iperf)])
        procs.start("slow-backend", [python, str(BENCH / "backend.py"), str(sink)])
        for name, port in (
            ("nginx", a),
            ("nginx", b),
            ("iperf3-server", iperf),
            ("slow-backend", sink),
        ):
            wait_port(port, procs, name)


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
worker_rlimit_nofile 40000;
events {{ worker_connections 20000; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{a} backlog=4096;
        listen 127.0.0.1:{b} backlog=4096;
        root {www};
    }}
}}
"""


def wait_port(
    port: int, procs: Processes | None = None, name: str = "", timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if procs is not None and name:
            procs.check(name)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port} after {timeout}s") from None
            time.sleep(0.05)


# ---------------------------------------------------------------------------- proxies


HAPROXY_CONF = """\
global
    nbthread 1
    maxconn {maxconn}
    log stdout format raw local0 info
    stats socket {sock} mode 600 level admin

defaults
    mode tcp
    balance roundrobin
    log global
    {session_logging}
    option redispatch
    retries 2
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    default-server check inter 2s rise 3 fall 2

listen stats
    mode http
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /
"""


@dataclass
class Instance:
    """One proxy process (or none) serving some services for one target."""

    target: str
    purpose: str
    ports: dict[str, int]  # service -> port clients use
    pid: int | None = None
    proc_name: str | None = None
    ready: Callable[[], bool] | None = None


class Target:
    name: str

    def start(self, purpose: str, round_no: int) -> Instance:
        raise NotImplementedError


class NoProxy(Target):
    def __init__(self, backends: Backends) -> None:
        self.name = "none"
        self.backends = backends

    def start(self, purpose: str, round_no: int) -> Instance:
        ports = {svc: next(iter(self.backends.ports[svc].values())) for svc in PURPOSES[purpose]}
        return Instance(self.name, purpose, ports)


class HAProxy(Target):
    def __init__(
        self, procs: Processes, backends: Backends, workdir: Path, access_log: bool
    ) -> None:
        self.name = "haproxy"
        self.procs, self.backends, self.workdir = procs, backends, workdir
        self.access_log = access_log

    def start(self, purpose: str, round_no: int) -> Instance:
        tag = f"haproxy-{purpose}-r{round_no}"
        sock = self.workdir / f"{tag}.sock"
        logging = (
            "option tcplog  # one line per connection, like ddiscover --access-log"
            if self.access_log
            else "# Events and failed sessions only, not every successful one: like ddiscover at "
            "info.\n    option dontlog-normal"
        )
        conf = HAPROXY_CONF.format(
            maxconn=MAXCONN, sock=sock, stats=free_port(), session_logging=logging
        )
        ports = {}
        for svc in PURPOSES[purpose]:
            ports[svc] = free_port()
            conf += f"\nlisten {svc}\n    bind 127.0.0.1:{ports[svc]}\n"
            for ident, port in self.backends.ports[svc].items():
                conf += f"    server {ident} 127.0.0.1:{port}\n"
        path = self.workdir / f"{tag}.cfg"
        path.write_text(conf)
        proc = self.procs.start(tag, ["haproxy", "-db", "-f", str(path)], cpu=PROXY_CPU)
        n_servers = sum(len(self.backends.ports[s]) for s in PURPOSES[purpose])

        def ready() -> bool:
            self.procs.check(tag)
            try:
                stat = haproxy_command(sock, "show stat")
            except OSError:
                return False
            up = [
                ln
                for ln in stat.splitlines()
                if ln.split(",")[17:18] == ["UP"]
                and ln.split(",")[1] not in ("FRONTEND", "BACKEND")
            ]
            return len(up) >= n_servers

        return Instance(self.name, purpose, ports, proc.pid, tag, ready)


def haproxy_command(sock: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks).decode()


class DDiscover(Target):
    def __init__(
        self,
        name: str,
        src: Path,
        *,
        python: str,
        procs: Processes,
        backends: Backends,
        etcd: EtcdProcess,
        index: int,
        extra: list[str],
    ) -> None:
        self.name, self.src, self.python, self.extra = name, src, python, extra
        self.procs, self.backends, self.etcd, self.index = procs, backends, etcd, index

    def start(self, purpose: str, round_no: int, profile: Path | None = None) -> Instance:
        tag = f"{self.name.replace(':', '-')}-{purpose}-r{round_no}"
        prefix = f"/bench{self.index}-{purpose}-r{round_no}"
        ports = {}
        n_backends = 0
        for svc in PURPOSES[purpose]:
            ports[svc] = free_port()
            self.etcd.put(f"{prefix}/{svc}/port", str(ports[svc]))
            for ident, port in self.backends.ports[svc].items():
                self.etcd.put(f"{prefix}/{svc}/{ident}", f"127.0.0.1:{port}")
                n_backends += 1
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.src), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        argv = [
            self.python, "-c",
            "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
            "-n", "--pidfile=",
            *([f"--profile={profile}", "--profiler=cprofile", "--savestats"] if profile else []),
            "ddiscover",
            "--etcd", f"127.0.0.1:{self.etcd.client_port}",
            "--prefix", prefix,
            "--interface", "127.0.0.1",
            "--stats-port", str(free_port()),
            "--check-interval", "2", "--rise", "3", "--fall", "2",
            "--maxconn", str(MAXCONN),
            "--drain-timeout", "1",
            "--log-level", "info",
            *self.extra,
        ]  # fmt: skip
        # cwd: ``python -c`` puts the working directory first on sys.path.
        proc = self.procs.start(tag, argv, cpu=PROXY_CPU, env=env, cwd=self.src)
        logfile = self.procs.logdir / f"{tag}.log"

        def ready() -> bool:
            self.procs.check(tag)
            return logfile.read_text(errors="replace").count(" is UP") >= n_backends

        return Instance(self.name, purpose, ports, proc.pid, tag, ready)


def probe(instance: Instance, backends: Backends) -> bool:
    """One request through every service of ``instance``; True if each reached a backend."""
    try:
        for svc, port in instance.ports.items():
            if svc == "http":
                for _ in range(2):  # both backends, round-robin
                    if not http_ok(port):
                        return False
            elif svc == "slow":
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.sendall(b"PING\n")
                    if s.recv(16) != b"PONG\n":
                        return False
            elif svc == "idle" and not idle_probe(port, backends):
                return False
    except OSError:
        return False
    return True


def http_ok(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"GET /128.bin HTTP/1.0\r\nHost: bench\r\n\r\n")
        data = b""
        while more := s.recv(4096):
            data += more
    return data.startswith(b"HTTP/1.1 200") and data.endswith(b"d" * 128)


def drain_listener(listener: socket.socket) -> int:
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


def idle_probe(port: int, backends: Backends) -> bool:
    listener = backends.idle_listener
    assert listener is not None
    drain_listener(listener)
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if drain_listener(listener):
                return True
            time.sleep(0.01)
    return False


def start_round(
    targets: list[Target], purposes: list[str], round_no: int, backends: Backends, procs: Processes
) -> dict[tuple[str, str], Instance]:
    """Fresh proxy processes for every target and purpose, started together; wait for ready."""
    instances = {(t.name, p): t.start(p, round_no) for t in targets for p in purposes}
    wait_ready(instances, backends, procs)
    return instances


def wait_ready(
    instances: dict[tuple[str, str], Instance], backends: Backends, procs: Processes
) -> None:
    """Wait until every proxy sees its backends UP, then until a request through each works."""
    deadline = time.monotonic() + 30
    pending = [i for i in instances.values() if i.ready is not None]
    while pending:
        pending = [i for i in pending if not i.ready()]  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise RuntimeError(f"proxies not ready in 30s: {[i.proc_name for i in pending]}")
        time.sleep(0.1)
    for inst in instances.values():
        deadline = time.monotonic() + 10
        while not probe(inst, backends):
            if inst.proc_name:
                procs.check(inst.proc_name)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{inst.target}/{inst.purpose} does not forward")
            time.sleep(0.1)


def stop_instances(
    procs: Processes, instances: dict[tuple[str, str], Instance], purpose: str | None = None
) -> None:
    for (_, p), inst in instances.items():
        if inst.proc_name and (purpose is None or p == purpose):
            procs.stop(inst.proc_name)


# ---------------------------------------------------------------------------- workloads


def run_wrk(port: int, duration: int, close: bool) -> dict[str, Any]:
    argv = ["wrk", "-t1", "-c64", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://127.0.0.1:{port}/128.bin")
    out = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=duration + 30
    ).stdout
    return parse_wrk(out)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    result: dict[str, Any] = {"rps": float(rps.group(1))}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        result[f"p{pct}_ms"] = float(value) * _UNITS[unit]
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    result["errors"] = sum(map(int, errors.groups())) if errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    return result


def run_iperf(port: int, duration: int, streams: int, omit: int) -> dict[str, Any]:
    argv = [
        "iperf3",
        "-c",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        str(duration),
        "-P",
        str(streams),
        "-J",
    ]
    if omit:
        argv += ["-O", str(omit)]
    last = ""
    for _attempt in range(4):  # a health check landing in iperf3's setup can fail a test
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + omit + 30, check=False
        )
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            data = {"error": proc.stdout[-500:] + proc.stderr[-500:]}
        if "error" not in data:
            end = data["end"]
            return {
                "gbps": end["sum_received"]["bits_per_second"] / 1e9,
                "retransmits": end.get("sum_sent", {}).get("retransmits", 0),
            }
        last = str(data["error"])
        time.sleep(1.0)
    raise RuntimeError(f"iperf3 failed 4 times: {last}")


def slow_consumer(
    inst: Instance, direction: str, size: int, window: float, rate: float
) -> dict[str, Any]:
    """Push ``size`` bytes through the proxy to a reader pacing itself at ``rate`` B/s for
    ``window`` seconds (then draining the rest at full speed); peak RSS growth of the proxy.

    ``direction`` "down": the backend pushes and this client is the slow reader; "up": this
    client pushes and the backend reads slowly.  The peak is VmHWM, reset just before.
    """
    pid = inst.pid
    assert pid is not None
    reset_hwm(pid)
    base = rss_kib(pid)
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", inst.ports["slow"]), timeout=60) as s:
        if direction == "down":
            s.sendall(f"PUSH {size}\n".encode())
            got, slow_bytes = _read_slowly(s, size, window, rate)
            ok = got == size
        else:
            s.sendall(f"SINK {size} {window} {rate}\n".encode())
            reply = _push(s, size)
            ok = reply.startswith(b"OK ")
            slow_bytes = int(reply.split()[1]) if ok else 0
    return {
        "peak_growth_kib": hwm_kib(pid) - base,
        "rss_base_kib": base,
        "complete": ok,
        "slow_bytes": slow_bytes,
        "seconds": time.monotonic() - start,
    }


def _read_slowly(s: socket.socket, size: int, window: float, rate: float) -> tuple[int, int]:
    """Read ``size`` bytes: at ``rate`` B/s for ``window`` s, then at once; (total, slowly)."""
    start = time.monotonic()
    got = slow_bytes = 0
    while got < size:
        elapsed = time.monotonic() - start
        if elapsed < window:
            allowed = int(rate * elapsed) - got
            if allowed < 16384:
                time.sleep((16384 - allowed) / rate)
                continue
            data = s.recv(min(allowed, 65536))
            slow_bytes += len(data)
        else:
            data = s.recv(MiB)
        if not data:
            break
        got += len(data)
    return got, slow_bytes


def _push(s: socket.socket, size: int) -> bytes:
    """Send ``size`` bytes as fast as the connection takes them, FIN, then read the reply."""
    blob = memoryview(b"u" * MiB)
    left = size
    while left:
        n = min(left, MiB)
        s.sendall(blob[:n])
        left -= n
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while more := s.recv(256):
        reply += more
    return reply


def idle_burst(inst: Instance, backends: Backends, count: int, settle: float) -> dict[str, Any]:
    """Open ``count`` connections through the proxy at once and leave them idle: the time
    until the backend has accepted every one, and the proxy's RSS per connection."""
    listener = backends.idle_listener
    assert listener is not None
    drain_listener(listener)  # the proxies' health checks, queued since the last burst
    pid = inst.pid
    base = rss_kib(pid) if pid else 0
    cpu0 = cpu_seconds(pid)
    drops0 = listen_drops()
    start = time.monotonic()
    clients, accepted, failed = _burst(inst.ports["idle"], listener, count, deadline=start + 30)
    absorbed = time.monotonic() - start
    drops = listen_drops() - drops0
    time.sleep(settle)
    after = rss_kib(pid) if pid else 0
    result = {
        "absorb_s": absorbed,
        "accepted": len(accepted),
        "failed": failed,
        "listen_drops": drops,
        # Per connection that got through (all of them, unless the burst timed out).
        "kib_per_conn": (after - base) / max(1, len(accepted)) if pid else None,
        "rss_base_kib": base,
        "rss_kib": after,
        "proxy_cpu_s": cpu_seconds(pid) - cpu0,
    }
    for s in clients + accepted:
        s.close()
    time.sleep(settle)
    return result


def _burst(
    port: int, listener: socket.socket, count: int, deadline: float
) -> tuple[list[socket.socket], list[socket.socket], int]:
    """Start ``count`` non-blocking connects to ``port`` back to back (accepting on the backend
    ``listener`` every 100, so its own queue never overflows); run until every connect has
    completed and the backend has accepted ``count``.  (clients, accepted, failed connects)."""
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    clients: list[socket.socket] = []
    accepted: list[socket.socket] = []
    failed = 0

    def accept_all() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return
            accepted.append(conn)

    for i in range(count):
        s = socket.socket()
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        clients.append(s)
        sel.register(s, selectors.EVENT_WRITE, s)
        if i % 100 == 99:
            accept_all()
    connecting = count
    while (len(accepted) < count or connecting) and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            if key.data is None:
                accept_all()
                continue
            sock: socket.socket = key.data
            sel.unregister(sock)
            connecting -= 1
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                failed += 1
    sel.close()
    return clients, accepted, failed


# ---------------------------------------------------------------------------- metrics/report


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


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def _output(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


def machine_info(python: str) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    debian = "?"
    with contextlib.suppress(OSError):
        debian = Path("/etc/debian_version").read_text().strip()
    twisted = _output([python, "-c", "import twisted; print(twisted.__version__)"])
    pyver = _output([python, "-c", "import sys; print(sys.version.split()[0])"])
    commit = _output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(REPO), "status", "--porcelain", "--", "ddiscover"])
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "debian": debian,
        "mem_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "python": pyver,
        "twisted": twisted,
        "ddiscover_commit": commit + ("+dirty" if dirty else ""),
        "haproxy": _version(["haproxy", "-v"]),
        "nginx": _version(["nginx", "-v"]),
        "wrk": _version(["wrk", "-v"]),
        "iperf3": _version(["iperf3", "--version"]),
        "etcd": _version(["etcd", "--version"]),
    }


# ---------------------------------------------------------------------------- profiling


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


# ---------------------------------------------------------------------------- main


def run_workload(
    workload: str, inst: Instance, args: argparse.Namespace, backends: Backends
) -> dict[str, Any]:
    if workload == "bulk1":
        return run_iperf(inst.ports["bulk"], args.duration, 1, args.omit)
    if workload == "bulk4":
        return run_iperf(inst.ports["bulk"], args.duration, 4, args.omit)
    if workload == "keepalive":
        return run_wrk(inst.ports["http"], args.duration, close=False)
    if workload == "close":
        return run_wrk(inst.ports["http"], args.duration, close=True)
    if workload == "idle":
        return idle_burst(inst, backends, args.idle_conns, args.settle)
    raise ValueError(workload)


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


def _prepare_process() -> None:
    """Pin this driver (and so every child but the proxies) to the load CPU; raise fd limits."""
    if not {PROXY_CPU, LOAD_CPU} <= os.sched_getaffinity(0):
        raise SystemExit("the benchmark needs CPUs 0 and 1: the proxy on 0, the load on 1")
    os.sched_setaffinity(0, {LOAD_CPU})  # every child inherits CPU 1; proxies use taskset -c 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(limit, soft), max(limit, hard)))
            break
        except (ValueError, OSError):
            continue
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


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
    _prepare_process()
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
