"""Clustered and secured etcd: failover between endpoints, v3 token auth with expiry, v2 basic
auth, and TLS with client certificates.

Failover uses two independent single-member etcds as the two endpoints (a cluster of two
members would give the same client-side behaviour: the watcher lists again after any gap).
The TLS etcd serves https only, with ``--client-cert-auth``; its CA and certificates are made
with openssl for each test (:class:`~tests.integration.etcd.ThrowawayPKI`), and ddiscover
reaches it through the production HTTP client
(:func:`~ddiscover.registry.client.build_http_client`).
"""

from __future__ import annotations

from typing import Any, cast

from hyperlink import URL
from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from ddiscover.registry.api import registry_client
from ddiscover.registry.client import Credentials, TLSFiles, build_http_client
from ddiscover.registry.watcher import RegistryWatcher, WatchState
from tests.integration.etcd import EtcdProcess
from tests.integration.registry_support import Published, backends_of
from tests.integration.support import entrypoint, environment, eventually
from tests.integration.test_registry_behaviour import UNREACHABLE, _http


class _Logged:
    """Every log event of a test, for asserting on what the watcher said and how."""

    def __init__(self, test: TestCase) -> None:
        self.events: list[LogEvent] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        test.addCleanup(globalLogPublisher.removeObserver, observer)

    def lines(self, format: str) -> list[str]:
        """The text of every event logged with ``format``."""
        return [formatEvent(e) for e in self.events if e.get("log_format") == format]

    def failures(self) -> list[LogEvent]:
        """Events logged as bugs (``log.failure``) or at critical level."""
        return [
            e for e in self.events if "log_failure" in e or e.get("log_level") is LogLevel.critical
        ]


class SecureEtcdTests(TestCase):
    """The registry against etcds that fail or ask for credentials."""

    timeout = 30

    def watcher(
        self,
        api: str,
        urls: list[str],
        http: Any = None,
        retries: list[int] | None = None,
        **kwargs: object,
    ) -> tuple[RegistryWatcher, Published]:
        """A started watcher of ``/backends`` that retries every 50 ms, noting each retry."""
        published = Published()
        noted = [] if retries is None else retries

        def backoff(attempt: int) -> float:
            noted.append(attempt)
            return 0.05

        client = registry_client(
            api,
            _http(self) if http is None else http,
            reactor,
            [URL.from_text(u) for u in urls],
            "/backends",
            request_timeout=1.0,
            watch_timeout=30.0,
            **kwargs,  # type: ignore[arg-type]
        )
        watcher = RegistryWatcher(client, reactor, "/backends", published, backoff=backoff)
        watcher.startService()
        self.addCleanup(watcher.stopService)
        return watcher, published

    async def test_failover_v3(self) -> None:
        """With the first endpoint killed, the watcher moves to the second and stays there."""
        first, second = EtcdProcess.started(self), EtcdProcess.started(self)
        for etcd in (first, second):
            etcd.put3("/backends/web/port", "80")
            etcd.put3("/backends/web/a", "10.0.0.1:80")
        watcher, published = self.watcher("v3", [first.url, second.url])
        await published.until(lambda c: backends_of(c, "web") == {"a"})
        self.assertEqual(str(watcher.endpoint), first.url)
        first.kill()
        second.put3("/backends/web/b", "10.0.0.2:80")
        await published.until(lambda c: backends_of(c, "web") == {"a", "b"})
        self.assertEqual(str(watcher.endpoint), second.url)
        self.assertIs(watcher.state, WatchState.WATCHING)

    async def test_failover_v2(self) -> None:
        """The same with the v2 API."""
        first, second = EtcdProcess.started(self), EtcdProcess.started(self)
        for etcd in (first, second):
            etcd.put("/backends/web/port", "80")
        watcher, published = self.watcher("v2", [first.url, second.url])
        await published.until(lambda c: "web" in c.services)
        first.kill()
        second.put("/backends/web/b", "10.0.0.2:80")
        await published.until(lambda c: backends_of(c, "web") == {"b"})
        self.assertEqual(str(watcher.endpoint), second.url)

    async def test_v3_token_auth_refresh(self) -> None:
        """With auth on, the watcher authenticates, and again once its token is invalid."""
        etcd = EtcdProcess.started(self, "--auth-token-ttl=1")
        etcd.v3("auth/user/add", {"name": "root", "password": "s3cret"})
        etcd.v3("auth/user/grant", {"user": "root", "role": "root"})
        etcd.v3("auth/enable", {})
        token = etcd.v3("auth/authenticate", {"name": "root", "password": "s3cret"})["token"]
        etcd.v3("kv/put", {"key": "L2JhY2tlbmRzL3dlYi9wb3J0", "value": "ODA="}, token=token)
        watcher, published = self.watcher(
            "v3", [etcd.url], credentials=Credentials("root", "s3cret")
        )
        await published.until(lambda c: "web" in c.services)
        # A restart invalidates every simple token: the next write arrives only if the watcher
        # gets code 16, authenticates again and watches with the new token.
        etcd.restart()
        token = etcd.v3("auth/authenticate", {"name": "root", "password": "s3cret"})["token"]
        etcd.v3(
            "kv/put",
            {"key": "L2JhY2tlbmRzL3dlYi9h", "value": "MTAuMC4wLjE6ODA="},
            token=token,
        )
        await published.until(lambda c: backends_of(c, "web") == {"a"})
        self.assertIs(watcher.state, WatchState.WATCHING)

    async def test_v3_wrong_password(self) -> None:
        """A wrong password keeps the watcher unreachable with a one-line error."""
        etcd = EtcdProcess.started(self)
        etcd.v3("auth/user/add", {"name": "root", "password": "s3cret"})
        etcd.v3("auth/user/grant", {"user": "root", "role": "root"})
        etcd.v3("auth/enable", {})
        watcher, published = self.watcher("v3", [etcd.url], credentials=Credentials("root", "no"))
        await eventually(lambda: watcher.state is WatchState.UNREACHABLE)
        self.assertEqual(published.catalogs, [])

    def tls_http(self, files: TLSFiles) -> Any:
        """The production HTTP client for ``files``; its cached connections closed on cleanup."""
        http, pool = build_http_client(cast(IReactorTCP, reactor), files, 1.0)
        self.addCleanup(pool.closeCachedConnections)
        return http

    async def test_tls_client_certificate(self) -> None:
        """With the CA and a client certificate, v2 and v3 both list and watch over https."""
        etcd = EtcdProcess.started(self, tls=True)
        files = TLSFiles(etcd.cafile, etcd.certfile, etcd.keyfile)
        etcd.put("/backends/web/port", "80")
        etcd.put3("/backends/api/port", "81")
        v2, published2 = self.watcher("v2", [etcd.url], self.tls_http(files))
        v3, published3 = self.watcher("v3", [etcd.url], self.tls_http(files))
        await published2.until(lambda c: "web" in c.services)
        await published3.until(lambda c: "api" in c.services)
        etcd.put("/backends/web/a", "10.0.0.1:80")
        etcd.put3("/backends/api/b", "10.0.0.2:81")
        await published2.until(lambda c: backends_of(c, "web") == {"a"})
        await published3.until(lambda c: backends_of(c, "api") == {"b"})
        self.assertEqual((v2.api, v3.api), ("v2", "v3"))
        self.assertEqual(str(v3.endpoint), etcd.url)

    async def refused(self, api: str, etcd: EtcdProcess, files: TLSFiles) -> None:
        """A watcher through ``api`` with ``files`` stays unreachable and retries; then stop it."""
        retries: list[int] = []
        watcher, published = self.watcher(api, [etcd.url], self.tls_http(files), retries)
        await eventually(lambda: len(retries) >= 3)
        self.assertIs(watcher.state, WatchState.UNREACHABLE)
        self.assertEqual(published.catalogs, [])
        await watcher.stopService()

    async def assert_refused(self, etcd: EtcdProcess, files: TLSFiles, reason: str) -> None:
        """v2 and v3 watchers with ``files`` are refused, each logging one line, no failure."""
        logged = _Logged(self)
        for api in ("v2", "v3"):
            await self.refused(api, etcd, files)
        expected = (
            f"etcd {etcd.url} unreachable: TLS handshake failed: {reason}; "
            "keeping the last known 0 services"
        )
        self.assertEqual(logged.lines(UNREACHABLE), [expected, expected])
        self.assertEqual(logged.failures(), [])

    async def test_tls_without_client_certificate(self) -> None:
        """Without a client certificate, etcd ends the handshake; one line, retries, no crash."""
        etcd = EtcdProcess.started(self, tls=True)
        await self.assert_refused(etcd, TLSFiles(etcd.cafile), "tls alert bad certificate")

    async def test_tls_wrong_ca(self) -> None:
        """A CA that did not sign etcd's certificate: one line, retries, no crash."""
        etcd = EtcdProcess.started(self, tls=True)
        files = TLSFiles(etcd.pki.ca("other"), etcd.certfile, etcd.keyfile)
        await self.assert_refused(etcd, files, "certificate verify failed")

    async def test_twistd_names_a_bad_tls_file(self) -> None:
        """``twistd ddiscover`` stops with one line naming the TLS option and its path."""
        etcd = EtcdProcess(tls=True)
        self.addCleanup(etcd.cleanup)
        missing = etcd.cafile + ".missing"
        out, err, code = await getProcessOutputAndValue(
            entrypoint()[0],
            [*entrypoint()[1:], "--etcd", "https://127.0.0.1:2379", "--etcd-cafile", missing],
            env=environment(),
        )
        last = (out + err).decode().strip().splitlines()[-1]
        self.assertEqual(code, 1)
        self.assertTrue(
            last.endswith(
                f": --etcd-cafile {missing!r} cannot be read: No such file or directory"
                " (see twistd ddiscover --help)"
            ),
            last,
        )

    async def test_v2_basic_auth(self) -> None:
        """With v2 auth on and the guest role revoked, the right user lists and watches."""
        etcd = EtcdProcess.started(self)
        etcd.enable_v2_auth("s3cret")
        etcd.put("/backends/web/port", "80")
        watcher, published = self.watcher(
            "v2", [etcd.url], credentials=Credentials("root", "s3cret")
        )
        await published.until(lambda c: "web" in c.services)
        etcd.put("/backends/web/a", "10.0.0.1:80")
        await published.until(lambda c: backends_of(c, "web") == {"a"})
        self.assertIs(watcher.state, WatchState.WATCHING)

    async def test_v2_wrong_password(self) -> None:
        """A wrong v2 password is one line with errorCode 110; the watcher retries, no crash."""
        etcd = EtcdProcess.started(self)
        etcd.enable_v2_auth("s3cret")
        logged = _Logged(self)
        retries: list[int] = []
        watcher, published = self.watcher(
            "v2", [etcd.url], retries=retries, credentials=Credentials("root", "wrong")
        )
        await eventually(lambda: len(retries) >= 3)
        self.assertIs(watcher.state, WatchState.UNREACHABLE)
        self.assertEqual(published.catalogs, [])
        self.assertEqual(
            logged.lines(UNREACHABLE),
            [
                f"etcd {etcd.url} unreachable: HTTP 401 errorCode 110: The request requires "
                "user authentication (Insufficient credentials); "
                "keeping the last known 0 services"
            ],
        )
        self.assertEqual(logged.failures(), [])
