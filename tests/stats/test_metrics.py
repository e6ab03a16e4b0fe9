"""Tests for :mod:`ddiscover.stats.metrics`: the exposition, parsed back with prometheus_client."""

from __future__ import annotations

import math
from typing import Any

import attrs
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.loop_lag import LoopLagProbe
from ddiscover.stats.metrics import MetricsResource, metrics_registry
from ddiscover.stats.state import StatsState
from tests.stats import Running, fixed_state


def scrape(state: StatsState) -> dict[str, list[Sample]]:
    """The samples of every ``ddiscover_*`` family, by family name, as a scraper reads them."""
    text = generate_latest(metrics_registry(lambda: state)).decode()
    return {
        family.name: family.samples
        for family in text_string_to_metric_families(text)
        if family.name.startswith("ddiscover_")
    }


def value(samples: list[Sample], **labels: str) -> float:
    """The one sample whose labels include ``labels``."""
    (match,) = [s.value for s in samples if labels.items() <= s.labels.items()]
    return match


class MetricsTests(SynchronousTestCase):
    """Families named like haproxy's exporter, built from the state at each scrape."""

    def setUp(self) -> None:
        self.families = scrape(fixed_state())

    def test_server_families(self) -> None:
        """Per server: labels ``proxy`` and ``server``, counters end in ``_total``."""
        sessions = self.families["ddiscover_server_current_sessions"]
        self.assertEqual(value(sessions, proxy="web", server="a-up"), 2)
        self.assertEqual(len(sessions), 8)
        total = self.families["ddiscover_server_sessions"]
        self.assertEqual({s.name for s in total}, {"ddiscover_server_sessions_total"})
        self.assertEqual(value(total, proxy="web", server="a-up"), 70)
        self.assertEqual(
            value(self.families["ddiscover_server_bytes_out"], server="a-up"), 150_000
        )
        self.assertEqual(
            value(self.families["ddiscover_server_check_failures"], server="d-down"), 4
        )
        self.assertEqual(
            value(self.families["ddiscover_server_check_duration_seconds"], server="a-up"),
            0.001,
        )
        self.assertEqual(
            value(self.families["ddiscover_server_registry_ttl_read_seconds"], server="a-up"), 15
        )

    def test_server_status_is_a_state_set(self) -> None:
        """One series per state; exactly the server's state is 1 (``UP 1/2`` is UP)."""
        status = self.families["ddiscover_server_status"]
        expected = {
            "a-up": "UP",
            "b-going-down": "UP",
            "c-going-up": "DOWN",
            "d-down": "DOWN",
            "e-drained": "DRAIN",
            "f-maint": "MAINT",
            "g-new": "DOWN",
            "h-unknown": "DOWN",
        }
        for server, state in expected.items():
            ones = [s.labels["state"] for s in status if s.labels["server"] == server and s.value]
            self.assertEqual(ones, [state], server)
            states = {s.labels["state"] for s in status if s.labels["server"] == server}
            self.assertEqual(states, {"UP", "DOWN", "MAINT", "DRAIN", "NOLB"})

    def test_check_status(self) -> None:
        """The last check's status is a state set too; unknown servers have none."""
        check = self.families["ddiscover_server_check_status"]
        self.assertEqual(value(check, server="d-down", state="L4CON"), 1)
        self.assertEqual(value(check, server="d-down", state="L4OK"), 0)
        self.assertEqual(value(check, server="g-new", state="INI"), 1)
        self.assertFalse([s for s in check if s.labels["server"] == "h-unknown"])

    def test_frontend_and_backend(self) -> None:
        """Frontends have the limit and listener state; backends the active servers."""
        self.assertEqual(
            value(self.families["ddiscover_frontend_limit_sessions"], proxy="web"), 4096
        )
        status = self.families["ddiscover_frontend_status"]
        self.assertEqual(value(status, proxy="busy", state="STOP"), 1)
        self.assertEqual(value(status, proxy="web", state="OPEN"), 1)
        self.assertEqual(value(self.families["ddiscover_backend_active_servers"], proxy="web"), 2)
        self.assertEqual(
            value(self.families["ddiscover_backend_redispatch_warnings"], proxy="web"), 2
        )
        self.assertEqual(
            value(self.families["ddiscover_backend_status"], proxy="web", state="UP"), 1
        )

    def test_registry_and_process(self) -> None:
        """The etcd watch and the process, as of the state's ``now``."""
        families = self.families
        self.assertEqual(value(families["ddiscover_registry_watch_state"], state="watching"), 1)
        self.assertEqual(value(families["ddiscover_registry_watch_state"], state="unreachable"), 0)
        self.assertEqual(families["ddiscover_registry_events"][0].value, 57)
        self.assertEqual(families["ddiscover_registry_resyncs"][0].value, 1)
        self.assertEqual(families["ddiscover_registry_last_event_age_seconds"][0].value, 5)
        self.assertEqual(families["ddiscover_registry_last_index"][0].value, 1234)
        self.assertEqual(families["ddiscover_registry_rejected_keys"][0].value, 3)
        self.assertEqual(
            families["ddiscover_registry_info"][0].labels,
            {"api": "v2", "endpoint": "http://127.0.0.1:2379", "prefix": "/backends"},
        )
        self.assertEqual(families["ddiscover_process_uptime_seconds"][0].value, 3723)
        self.assertEqual(families["ddiscover_process_max_fds"][0].value, 65536)
        self.assertEqual(families["ddiscover_process_build_info"][0].labels, {"version": "9.9.9"})

    def test_removed_backend_has_no_series_on_the_next_scrape(self) -> None:
        """The collector reads live state: a server gone from the state is gone from /metrics."""
        state = fixed_state()
        current = [state]
        registry = metrics_registry(lambda: current[0])
        before = generate_latest(registry).decode()
        self.assertIn('server="d-down"', before)
        web = state.services[2]
        current[0] = attrs.evolve(
            state,
            services=(attrs.evolve(web, servers=tuple(
                s for s in web.servers if s.backend.id != "d-down")),),
        )  # fmt: skip
        self.assertNotIn('server="d-down"', generate_latest(registry).decode())

    def test_never_an_event(self) -> None:
        """Before any event, the age is NaN, not a made-up number."""
        registry = attrs.evolve(fixed_state().registry, last_event_at=None, last_index=None)
        families = scrape(fixed_state(registry=registry))
        age = families["ddiscover_registry_last_event_age_seconds"][0].value
        self.assertTrue(math.isnan(age), age)


class MetricsResourceTests(SynchronousTestCase):
    """``GET /metrics`` through a real ``Site``."""

    def setUp(self) -> None:
        self.stub: Any = StubTreq(MetricsResource(metrics_registry(fixed_state)))

    def test_text_format(self) -> None:
        """Plain Prometheus text by default, uncached."""
        response = self.successResultOf(self.stub.get("http://stats.test/metrics"))
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"),
            ["text/plain; version=0.0.4; charset=utf-8"],
        )
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-cache"])
        body = self.successResultOf(response.text())
        self.assertIn('ddiscover_server_current_sessions{proxy="web",server="a-up"} 2.0', body)
        self.assertIn("process_", body)

    def test_openmetrics(self) -> None:
        """A scraper asking for OpenMetrics gets it."""
        response = self.successResultOf(
            self.stub.get(
                "http://stats.test/metrics",
                headers={"Accept": "application/openmetrics-text; version=1.0.0"},
            )
        )
        [content_type] = response.headers.getRawHeaders("content-type")
        self.assertTrue(content_type.startswith("application/openmetrics-text"))
        self.assertTrue(self.successResultOf(response.text()).endswith("# EOF\n"))


class LoopLagTests(SynchronousTestCase):
    """The event-loop lag probe's histogram and maximum."""

    def test_histogram_and_max(self) -> None:
        """``ddiscover_process_loop_lag_seconds`` has Prometheus buckets, sum and count."""
        probe = LoopLagProbe(Clock())
        for lag in (0.0005, 0.003, 0.2):
            probe.histogram.observe(lag)
        process = attrs.evolve(fixed_state().process, loop_lag=probe.reading())
        families = scrape(fixed_state(process=process))
        samples = families["ddiscover_process_loop_lag_seconds"]
        self.assertEqual(value(samples, le="0.001"), 1)
        self.assertEqual(value(samples, le="0.005"), 2)
        self.assertEqual(value(samples, le="+Inf"), 3)
        (count,) = [s.value for s in samples if s.name.endswith("_count")]
        (total,) = [s.value for s in samples if s.name.endswith("_sum")]
        self.assertEqual(count, 3)
        self.assertAlmostEqual(total, 0.2035)
        (peak,) = families["ddiscover_process_loop_lag_max_seconds"]
        self.assertEqual(peak.value, 0.2)

    def test_served_by_a_running_ddiscover(self) -> None:
        """ddiscover runs the probe with its stats port; a stall shows on the page and metrics."""
        running = Running(self)  # Its setup advances the clock 10 s at once: one 9.9 s lag.
        running.reactor.advance(0.1)
        running.reactor.advance(0.5)
        text = running.get("/metrics")[2]
        self.assertIn('ddiscover_process_loop_lag_seconds_bucket{le="0.5"} 3.0', text)
        self.assertIn("ddiscover_process_loop_lag_max_seconds 9.89", text)
        self.assertIn("event-loop lag = </b>400.0 ms now; max 9900.0 ms", running.get("/")[2])
