"""A real etcd (3.4, v2 API enabled) as a child process on free loopback ports, for tests.

Typical use from a trial ``TestCase`` (or any test: nothing here needs the reactor)::

    etcd = EtcdProcess.started(self)        # started, and killed in the test's cleanup
    etcd.put("/backends/web/port", "80")
    client = EtcdV2Client(http, reactor, [URL.from_text(etcd.url)], "/backends", 2.0, 30.0)
    etcd.freeze(); etcd.thaw()              # SIGSTOP / SIGCONT: a hung etcd
    etcd.kill(); etcd.restart()             # a crash, then the same data dir on the same ports

The process runs with fast election timings (it is ready in about 0.1 s), a private temporary
data dir, and none of the caller's ``ETCD*`` environment variables.  Readiness is polled on
``/health`` every 10 ms, for at most :data:`START_TIMEOUT` seconds.  Signals go to the child's
PID only, and :meth:`EtcdProcess.cleanup` always kills it and removes the data dir.  If a test
run ends without its cleanups (a trial timeout, a killed runner), etcd still goes: it is killed
at interpreter exit, and (through ``setpriv --pdeathsig``) gets SIGKILL as soon as the process
that started it dies.

``put`` and ``delete`` are small blocking helpers over urllib, for arranging data; they only
talk to the loopback URL and never use a proxy.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request
from typing import Any

ETCD = "/usr/bin/etcd"
# util-linux's setpriv sets the parent-death signal and then execs etcd, so etcd is still the
# child whose PID we hold; without it, etcd relies on cleanup() and the atexit hook alone.
SETPRIV = shutil.which("setpriv")
START_TIMEOUT = 10.0
_POLL = 0.01
_BIND_RETRIES = 5

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_live: set[EtcdProcess] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Kill every etcd whose test did not clean up (a timeout skips trial's cleanups)."""
    for etcd in list(_live):
        etcd.cleanup()


class EtcdStartError(Exception):
    """etcd did not become healthy; the message ends with the tail of its log."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EtcdProcess:
    """One single-member etcd cluster, its data dir, and signals to simulate failures.

    :ivar url: the client URL, ``http://127.0.0.1:PORT``.
    :ivar data_dir: kept across :meth:`restart`, removed by :meth:`cleanup`.
    """

    def __init__(self) -> None:
        self._root = tempfile.mkdtemp(prefix="ddiscover-etcd-")
        self.data_dir = os.path.join(self._root, "data")
        self.log_path = os.path.join(self._root, "etcd.log")
        self.client_port = 0
        self.peer_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_start = 0
        _live.add(self)

    @classmethod
    def started(cls, test: unittest.TestCase) -> EtcdProcess:
        """Start an etcd whose process and files ``test``'s cleanup removes."""
        etcd = cls()
        test.addCleanup(etcd.cleanup)
        etcd.start()
        return etcd

    @property
    def url(self) -> str:
        """The client URL, on loopback."""
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int:
        """The PID of the running etcd."""
        if self._process is None:
            raise RuntimeError("etcd is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the child process is alive (frozen counts as alive)."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start etcd on two new free ports and wait until it is healthy."""
        for _ in range(_BIND_RETRIES):
            self.client_port = _free_port()
            self.peer_port = self.client_port
            while self.peer_port == self.client_port:
                self.peer_port = _free_port()
            if self._launch():
                return
        raise EtcdStartError(f"no free ports after {_BIND_RETRIES} tries: {self._log_tail()}")

    def restart(self) -> None:
        """Stop etcd if it runs, then start it again on the same ports and data dir."""
        if self.running:
            self.terminate()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._launch():
            if time.monotonic() > deadline:
                raise EtcdStartError(f"ports stayed busy: {self._log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL etcd (a crash) and reap it."""
        self._signal_and_reap(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM etcd (a clean shutdown) and reap it; a frozen etcd is thawed first."""
        if self.running:
            self.thaw()
        self._signal_and_reap(signal.SIGTERM)

    def freeze(self) -> None:
        """SIGSTOP etcd: connections are still accepted but nothing is answered."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen etcd."""
        os.kill(self.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        """Kill etcd if it is still running and remove its files."""
        self.kill()
        shutil.rmtree(self._root, ignore_errors=True)
        _live.discard(self)

    def put(self, key: str, value: str, ttl: int | None = None) -> dict[str, Any]:
        """Set a v2 key (like ``curl -XPUT .../v2/keys/KEY -d value=...``); etcd's reply."""
        form = {"value": value} | ({"ttl": str(ttl)} if ttl is not None else {})
        return self._request("PUT", key, data=urllib.parse.urlencode(form).encode())

    def delete(self, key: str, recursive: bool = False) -> dict[str, Any]:
        """Delete a v2 key, or a directory tree with ``recursive``; etcd's reply."""
        return self._request("DELETE", key, query="recursive=true" if recursive else "")

    def _request(
        self, method: str, key: str, data: bytes | None = None, query: str = ""
    ) -> dict[str, Any]:
        url = f"{self.url}/v2/keys/{urllib.parse.quote(key.lstrip('/'))}"
        request = urllib.request.Request(
            url + (f"?{query}" if query else ""), data=data, method=method
        )
        if data is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        with _opener.open(request, timeout=5) as response:
            reply: dict[str, Any] = json.load(response)
            return reply

    def _launch(self) -> bool:
        """Start the process; True once healthy, False if a port was taken."""
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            *([SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []),
            ETCD,
            "--name=test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}",
            "--enable-v2",
            "--heartbeat-interval=10",
            "--election-timeout=100",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                if "address already in use" in self._log_tail():
                    return False
                raise EtcdStartError(f"etcd exited: {self._log_tail()}")
            if self._healthy():
                return True
            time.sleep(_POLL)
        self.kill()
        raise EtcdStartError(f"not healthy within {START_TIMEOUT}s: {self._log_tail()}")

    def _healthy(self) -> bool:
        try:
            with _opener.open(f"{self.url}/health", timeout=1) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _signal_and_reap(self, signum: int) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signum)
            process.wait(timeout=START_TIMEOUT)

    def _log_tail(self, lines: int = 5) -> str:
        """The last lines etcd logged since it was last launched, on one line."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                text = log.read().decode("utf-8", "replace")
                return " | ".join(line.strip() for line in text.splitlines()[-lines:])
        except OSError:
            return "(no log)"
