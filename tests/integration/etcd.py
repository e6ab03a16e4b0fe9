"""A real etcd (3.4, v2 API enabled) as a child process on free loopback ports, for tests.

Typical use from a trial ``TestCase`` (or any test: nothing here needs the reactor)::

    etcd = EtcdProcess.started(self)        # started, and killed in the test's cleanup
    etcd.put("/backends/web/port", "80")
    http = EtcdHTTP(treq_client, reactor, [URL.from_text(etcd.url)], request_timeout=2.0)
    client = EtcdV2Client(http, "/backends", watch_timeout=30.0)
    etcd.freeze(); etcd.thaw()              # SIGSTOP / SIGCONT: a hung etcd
    etcd.kill(); etcd.restart()             # a crash, then the same data dir on the same ports

With ``tls=True`` it serves ``https://`` only and asks every client for a certificate
(``--client-cert-auth``): :class:`ThrowawayPKI` makes a throwaway CA, a server certificate for
``IP:127.0.0.1`` and a client certificate with openssl, in the process's temporary directory,
and the readiness check and the helpers below present that client certificate.

The process runs with fast election timings (it is ready in about 0.1 s), a private temporary
data dir, and none of the caller's ``ETCD*`` environment variables.  Readiness is polled on
``/health`` every 10 ms, for at most :data:`START_TIMEOUT` seconds.  Signals go to the child's
PID only, and :meth:`EtcdProcess.cleanup` always kills it and removes the data dir.  If a test
run ends without its cleanups (a trial timeout, a killed runner), etcd still goes: it is killed
at interpreter exit, and (through ``setpriv --pdeathsig``) gets SIGKILL as soon as the process
that started it dies.

``put`` and ``delete`` are small blocking helpers over urllib, for arranging data; they only
talk to the loopback URL and never use a proxy.  After :meth:`EtcdProcess.enable_v2_auth` they
send the root user's basic auth.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import signal
import socket
import ssl
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

OPENSSL = "openssl"
_live: set[EtcdProcess] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Kill every etcd whose test did not clean up (a timeout skips trial's cleanups)."""
    for etcd in list(_live):
        etcd.cleanup()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdStartError(Exception):
    """etcd did not become healthy; the message ends with the tail of its log."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ThrowawayPKI:
    """PEM files made with openssl in ``directory``: CAs, and certificates they sign.

    Keys are EC P-256, so making one takes milliseconds.  Each certificate lives one day.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _openssl(self, *args: str) -> None:
        subprocess.run([OPENSSL, *args], check=True, capture_output=True, stdin=subprocess.DEVNULL)

    def ca(self, name: str) -> str:
        """A new self-signed CA; the path of its certificate (its key is ``<name>.key``)."""
        self._openssl(
            "req", "-x509", "-new", "-nodes", "-days", "1",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-keyout", self._path(f"{name}.key"), "-out", self._path(f"{name}.crt"),
            "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        return self._path(f"{name}.crt")

    def issue(self, name: str, ca: str, extensions: str) -> tuple[str, str]:
        """A certificate signed by the CA ``ca``, with these v3 extensions; (cert, key) paths."""
        key, csr, cert = (self._path(f"{name}.{ext}") for ext in ("key", "csr", "crt"))
        with open(self._path(f"{name}.ext"), "w") as f:
            f.write(extensions + "\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
        self._openssl(
            "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
        )  # fmt: skip
        self._openssl(
            "x509", "-req", "-in", csr, "-days", "1", "-out", cert,
            "-CA", self._path(f"{ca}.crt"), "-CAkey", self._path(f"{ca}.key"),
            "-CAcreateserial", "-extfile", self._path(f"{name}.ext"),
        )  # fmt: skip
        return cert, key


class EtcdProcess:
    """One single-member etcd cluster, its data dir, and signals to simulate failures.

    :ivar url: the client URL, ``http://127.0.0.1:PORT`` (``https://`` with ``tls``).
    :ivar data_dir: kept across :meth:`restart`, removed by :meth:`cleanup`.
    :ivar cafile: with ``tls``, the CA that signed the server and client certificates.
    :ivar certfile: with ``tls``, a client certificate etcd accepts (``keyfile`` is its key).
    """

    def __init__(self, *extra_args: str, tls: bool = False) -> None:
        self.extra_args = extra_args
        self._root = tempfile.mkdtemp(prefix="ddiscover-etcd-")
        self.data_dir = os.path.join(self._root, "data")
        self.log_path = os.path.join(self._root, "etcd.log")
        self.client_port = 0
        self.peer_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_start = 0
        self._auth: str | None = None
        self._tls_args: tuple[str, ...] = ()
        self.pki = ThrowawayPKI(self._root)
        context: ssl.SSLContext | None = None
        if tls:
            self.cafile = self.pki.ca("ca")
            server, server_key = self.pki.issue(
                "server",
                "ca",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth",
            )
            self.certfile, self.keyfile = self.pki.issue(
                "client", "ca", "extendedKeyUsage=clientAuth"
            )
            self._tls_args = (
                f"--cert-file={server}",
                f"--key-file={server_key}",
                f"--trusted-ca-file={self.cafile}",
                "--client-cert-auth",
            )
            context = ssl.create_default_context(cafile=self.cafile)
            context.load_cert_chain(self.certfile, self.keyfile)
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        _live.add(self)

    @classmethod
    def started(cls, test: unittest.TestCase, *extra_args: str, tls: bool = False) -> EtcdProcess:
        """Start an etcd (with ``extra_args`` on its command line) that ``test`` cleans up."""
        etcd = cls(*extra_args, tls=tls)
        test.addCleanup(etcd.cleanup)
        etcd.start()
        return etcd

    @property
    def url(self) -> str:
        """The client URL, on loopback."""
        scheme = "https" if self._tls_args else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

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

    def v3(self, path: str, body: dict[str, Any], token: str = "") -> dict[str, Any]:
        """POST one v3 gateway call (``path`` like ``kv/put``); the decoded reply."""
        headers = {"Content-Type": "application/json"} | (
            {"Authorization": token} if token else {}
        )
        request = urllib.request.Request(
            f"{self.url}/v3/{path}", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        with self._opener.open(request, timeout=5) as response:
            reply: dict[str, Any] = json.load(response)
            return reply

    def enable_v2_auth(self, password: str) -> None:
        """Turn v2 auth on with user ``root``, and take the guest role's rights away.

        From then on only ``root:password`` can read or write, and :meth:`put` and
        :meth:`delete` send it.
        """
        user = json.dumps({"user": "root", "password": password}).encode()
        self._v2_auth("users/root", user)
        self._v2_auth("enable", None)
        self._auth = "Basic " + _b64(f"root:{password}")
        revoke = {"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}}
        self._v2_auth("roles/guest", json.dumps(revoke).encode())

    def _v2_auth(self, path: str, body: bytes | None) -> None:
        request = urllib.request.Request(f"{self.url}/v2/auth/{path}", data=body, method="PUT")
        request.add_header("Content-Type", "application/json")
        if self._auth:
            request.add_header("Authorization", self._auth)
        self._opener.open(request, timeout=5).close()

    def put3(self, key: str, value: str, lease: int = 0) -> int:
        """Put a v3 key (attached to ``lease`` unless 0); the revision of the write."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = lease
        return int(self.v3("kv/put", body)["header"]["revision"])

    def delete3(self, key: str, prefix: bool = False) -> int:
        """Delete a v3 key, or every key starting with ``key`` with ``prefix``; the revision."""
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(key[:-1] + chr(ord(key[-1]) + 1))
        return int(self.v3("kv/deleterange", body)["header"]["revision"])

    def grant(self, ttl: int) -> int:
        """A new v3 lease of ``ttl`` seconds; its ID."""
        return int(self.v3("lease/grant", {"TTL": ttl})["ID"])

    def compact(self, revision: int) -> None:
        """Compact the v3 history up to ``revision``."""
        self.v3("kv/compaction", {"revision": revision, "physical": True})

    def _request(
        self, method: str, key: str, data: bytes | None = None, query: str = ""
    ) -> dict[str, Any]:
        url = f"{self.url}/v2/keys/{urllib.parse.quote(key.lstrip('/'))}"
        request = urllib.request.Request(
            url + (f"?{query}" if query else ""), data=data, method=method
        )
        if data is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        if self._auth:
            request.add_header("Authorization", self._auth)
        with self._opener.open(request, timeout=5) as response:
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
            *self._tls_args,
            *self.extra_args,
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
            with self._opener.open(f"{self.url}/health", timeout=1) as response:
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
