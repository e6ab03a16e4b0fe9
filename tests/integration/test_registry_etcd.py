"""The etcd v2 client contract, which the fake etcd is checked against, run on a real etcd.

The watcher's behaviour against a real etcd (v2 and v3 alike) is in ``test_registry_behaviour.py``.
"""

from __future__ import annotations

from hyperlink import URL
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from ddiscover.registry.client import EtcdHTTP
from ddiscover.registry.etcd2 import EtcdV2Client
from tests.integration.etcd import EtcdProcess
from tests.registry.test_etcd2 import EtcdV2ContractMixin


class RealEtcdV2ContractTests(EtcdV2ContractMixin, TestCase):
    """The client contract the fake etcd is checked against, run against the real etcd."""

    timeout = 30

    def setUp(self) -> None:
        self.etcd = EtcdProcess.started(self)
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        etcd = EtcdHTTP(
            HTTPClient(Agent(reactor, pool=pool, connectTimeout=1)),
            reactor,
            [URL.from_text(self.etcd.url)],
            request_timeout=2.0,
        )
        self.client = EtcdV2Client(etcd, "/backends", watch_timeout=10.0)

    def put(self, key: str, value: str, ttl: int | None = None) -> int:
        """Set a key in etcd; its modifiedIndex."""
        index: int = self.etcd.put(key, value, ttl=ttl)["node"]["modifiedIndex"]
        return index

    def remove(self, key: str, recursive: bool = False) -> int:
        """Delete a key or directory tree in etcd; the event's index."""
        index: int = self.etcd.delete(key, recursive=recursive)["node"]["modifiedIndex"]
        return index

    def deliver(self) -> None:
        """Nothing to do: the reactor delivers what etcd sends."""
