"""The targets: no proxy, haproxy and ddiscover processes, and waiting until they forward."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.harness.backends import Backends
from bench.harness.system import PROXY_CPU, Processes, free_port
from tests.integration.etcd import EtcdProcess

# Which services each proxy instance serves: memory workloads get a fresh process each.
PURPOSES = {"main": ("http", "bulk", "idle"), "slowdown": ("slow",), "slowup": ("slow",)}
MAXCONN = 9000  # haproxy needs 2 fds per connection within the 20000-fd hard limit


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
