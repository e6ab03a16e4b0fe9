"""``/metrics`` scraped over HTTP from a running ddiscover while clients go through it.

ddiscover runs in this process on the real reactor, against a real etcd and two in-process
backends; clients connect from threads while the test scrapes, so the scrapes interleave with
live traffic the way Prometheus's would.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, ClassVar, cast

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IReactorTime

from ddiscover.stats.snapshot import MAX_AGE
from tests.integration.backends import InProcessBackend
from tests.integration.harness import InProcessTestCase
from tests.integration.support import eventually, free_port, greeting

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class MetricsScrapeTests(InProcessTestCase):
    """What a Prometheus server scraping ddiscover sees."""

    settings: ClassVar[dict[str, Any]] = {
        "check_interval": 0.2,
        "rise": 1,
        "fall": 2,
        "connect_timeout": 1.0,
        "drain_timeout": 1.0,
    }

    def setUp(self) -> None:
        super().setUp()
        self.stats_port = free_port()
        self.start(stats_port=self.stats_port)

    async def scrape(self) -> Series:
        """Every ``ddiscover_*`` sample of one scrape, by name and labels."""
        response = await treq.get(
            f"http://127.0.0.1:{self.stats_port}/metrics", persistent=False, timeout=5
        )
        self.assertEqual(response.code, 200)
        text = await response.text()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("ddiscover_")
        }

    async def next_snapshot(self) -> None:
        """Wait out the stats snapshot's lifetime, so the next scrape reads the live parts."""
        await task.deferLater(cast(IReactorTime, reactor), MAX_AGE + 0.1, lambda: None)

    async def test_counters_rise_during_traffic_and_removed_backends_vanish(self) -> None:
        """Every counter only goes up across scrapes under load; a deregistered backend's
        series are gone from the first scrape of a snapshot taken after the catalog drops it
        (scrapes within a second share one snapshot)."""
        one, two = InProcessBackend.started(self, "one"), InProcessBackend.started(self, "two")
        self.register("web", self.port, b1=one.address, b2=two.address)
        await self.all_up(one.address, two.address)

        async def clients(count: int) -> None:
            for _ in range(count):
                await greeting(self.port)

        traffic = defer.gatherResults(
            [defer.Deferred.fromCoroutine(clients(25)) for _ in range(4)]
        )
        scrapes = [await self.scrape()]
        while not traffic.called:
            scrapes.append(await self.scrape())
        await traffic
        await self.next_snapshot()
        scrapes.append(await self.scrape())
        counters = [key for key in scrapes[-1] if key[0].endswith("_total")]
        self.assertIn(
            ("ddiscover_server_sessions_total", (("proxy", "web"), ("server", "b1"))), counters
        )
        for earlier, later in pairwise(scrapes):
            for key in counters:
                self.assertLessEqual(earlier.get(key, 0), later[key], key)
        total = scrapes[-1][("ddiscover_frontend_sessions_total", (("proxy", "web"),))]
        self.assertEqual(total, 100)
        print(f"\n    {len(scrapes)} scrapes during 100 proxied connections")

        self.etcd.delete("/backends/web/b2")
        await eventually(lambda: len(self.watcher.catalog.services["web"].backends) == 1)
        await self.next_snapshot()
        series = await self.scrape()
        self.assertFalse([key for key in series if ("server", "b2") in key[1]])
        self.assertTrue([key for key in series if ("server", "b1") in key[1]])
