"""Tests for :mod:`ddiscover.stats.page`: the HTML built from the fixed state."""

from __future__ import annotations

import attrs
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.catalog import Rejection
from ddiscover.stats.page import CSS, View, human, render_page, uptime
from ddiscover.stats.rows import build_rows
from ddiscover.stats.state import StatsState
from tests.stats import fixed_state

HOSTILE = "<script>alert('x')</script>"


class PageTests(SynchronousTestCase):
    """What an operator reads on the page."""

    def render(self, state: StatsState, view: View | None = None) -> str:
        return render_page(state, build_rows(state), view or View()).decode()

    def test_header(self) -> None:
        """Version, pid, uptime, limits, connections and the registry's state."""
        html = self.render(fixed_state())
        for text in (
            "<title>Statistics Report for ddiscover pid 4242</title>",
            "version 9.9.9",
            "<b>uptime = </b>0d 1h02m03s",
            "<b>system limits: </b>ulimit-n = 65,536; maxconn = 4,096",
            "<b>current conns = </b>3; services = 3 (1 listening)",
            "<b>etcd = </b>http://127.0.0.1:2379",
            "<b>API = </b>v2; prefix = /backends",
            '<b>watch = </b><span class="watch-watching">watching</span> for 10m00s',
            "<b>last index = </b>1234",
            "<b>last event = </b>5s ago (57 events, 1 resync)",
        ):
            self.assertIn(text, html)

    def test_server_cells(self) -> None:
        """Status with time since the change, last check with its duration and reason."""
        html = self.render(fixed_state())
        self.assertIn('<td class="ac">14s UP 1/2</td>', html)
        self.assertIn(
            '<td class="check" title="Layer4 connection problem: Connection refused">'
            "L4CON in 0ms</td>",
            html,
        )
        self.assertIn('<td class="ac">14s DOWN 1/2</td>', html)
        self.assertIn(">INI</td>", html)
        self.assertIn('<tr class="active_draining" data-server="e-drained">', html)
        self.assertIn('<tr class="maintain" data-server="f-maint">', html)
        self.assertIn('<tr class="active_no_check" data-server="h-unknown">', html)

    def test_frontends_not_listening(self) -> None:
        """The reason a port is not served is its frontend's status; keys ignored are listed."""
        html = self.render(fixed_state())
        self.assertIn('<td class="stopped">port 8080 is already used by service web</td>', html)
        self.assertIn(
            '<td class="stopped">cannot listen on 0.0.0.0:80: [Errno 98] Address already in use',
            html,
        )
        self.assertIn("ignored /backends/web/broken: value 'x' is not host:port", html)
        self.assertNotIn("ignored /backends/clash:", html)
        self.assertIn(
            "<td>/backends/stray</td><td>key is not inside a service directory</td>", html
        )

    def test_hostile_names_are_escaped(self) -> None:
        """A service, server, key or reason with markup in it is shown as text."""
        state = fixed_state()
        web = state.services[2]
        hostile = attrs.evolve(
            web,
            name=HOSTILE,
            rejections=(Rejection(f"/backends/{HOSTILE}/x", HOSTILE),),
            servers=(attrs.evolve(web.servers[0], backend=attrs.evolve(
                web.servers[0].backend, id=HOSTILE)),),
        )  # fmt: skip
        html = self.render(attrs.evolve(state, services=(hostile,)))
        self.assertNotIn("<script>", html)
        self.assertIn("&lt;script&gt;alert('x')&lt;/script&gt;", html)
        self.assertIn("data-server=\"&lt;script&gt;alert('x')&lt;/script&gt;\"", html)

    def test_huge_values_are_cut(self) -> None:
        """A 1 MB name, server id, key and reason render as a short page, still escaped."""
        huge = "<" + "x" * 10**6
        state = fixed_state()
        web = state.services[2]
        server = attrs.evolve(
            web.servers[0],
            backend=attrs.evolve(web.servers[0].backend, id=huge),
            key=attrs.evolve(web.servers[0].key, path=huge),
        )
        hostile = attrs.evolve(
            web, name=huge, servers=(server,), rejections=(Rejection(huge, huge),)
        )
        html = self.render(attrs.evolve(state, services=(hostile,)))
        self.assertLess(len(html), 40_000)
        self.assertIn("(1000001 bytes)", html)
        self.assertNotIn("<x", html)

    def test_views(self) -> None:
        """``;up`` hides DOWN servers, and each link keeps the other option."""
        html = self.render(fixed_state(), View(hide_down=True, refresh=False))
        self.assertNotIn('data-server="d-down"', html)
        self.assertNotIn('data-server="c-going-up"', html)
        self.assertIn('data-server="b-going-down"', html)
        self.assertIn('<a href="/;norefresh">Show all servers</a>', html)
        self.assertIn('<a href="/;up">Enable refresh</a>', html)
        self.assertIn('<a href="/;up;norefresh">Refresh now</a>', html)

    def test_admin_form_only_with_auth(self) -> None:
        """The action form is there only when admin actions are on, per service with servers."""
        self.assertNotIn("<form", self.render(fixed_state()))
        process = attrs.evolve(fixed_state().process, admin=True)
        html = self.render(fixed_state(process=process))
        self.assertEqual(html.count("<form"), 1)
        self.assertIn('<input type="hidden" name="b" value="web" />', html)

    def test_no_services(self) -> None:
        """An empty registry says so."""
        html = self.render(fixed_state(services=()))
        self.assertIn("No service is registered under /backends yet.", html)

    def test_css_survives_escaping(self) -> None:
        """The inlined CSS has no character the template would escape."""
        self.assertFalse(set(CSS) & set("<>&"))
        self.assertIn(".active_up { background: #c0ffc0; }", self.render(fixed_state()))


class DurationTests(SynchronousTestCase):
    """Durations as haproxy's page writes them."""

    def test_human(self) -> None:
        """Seconds, then minutes, hours and days with the next unit."""
        self.assertEqual(
            [human(s) for s in (0, 59, 60, 125, 3599, 3600, 11220, 86399, 86400, 363600)],
            [
                "0s",
                "59s",
                "1m00s",
                "2m05s",
                "59m59s",
                "1h00m",
                "3h07m",
                "23h59m",
                "1d00h",
                "4d05h",
            ],
        )

    def test_uptime(self) -> None:
        """Days, then hours, minutes and seconds."""
        self.assertEqual(uptime(0), "0d 0h00m00s")
        self.assertEqual(uptime(2 * 86400 + 3723), "2d 1h02m03s")
