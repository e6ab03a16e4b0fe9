"""The backends every target shares: nginx, iperf3, the slow-consumer backend, an idle listener."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.system import BENCH, Processes, free_port, wait_port


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
