"""Tests for :mod:`ddiscover.stats.web`: the stats port's resources through a real ``Site``.

Each test runs a :class:`tests.stats.Running` ddiscover on fakes and drives its stats
resource with ``StubTreq``.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.proxy.balancer import Admin
from tests.stats import AUTH, STATS, Running


class PageTests(SynchronousTestCase):
    """The page, its refresh, CSV and JSON, without auth."""

    def setUp(self) -> None:
        self.harness = Running(self)

    def test_page(self) -> None:
        """HTML with haproxy's refresh header, the service table and the row colours."""
        code, headers, body = self.harness.get("/")
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-type"], ["text/html; charset=utf-8"])
        self.assertEqual(headers["refresh"], ["5"])
        self.assertEqual(headers["cache-control"], ["no-cache"])
        self.assertTrue(body.startswith("<!DOCTYPE html>"))
        self.assertIn('<table class="tbl" id="px-web">', body)
        self.assertIn('<tr class="active_up" data-server="a1">', body)
        self.assertIn('<tr class="active_down" data-server="a2">', body)
        self.assertIn("admin actions: </b>off (no --stats-auth)", body)
        self.assertNotIn("<form", body)

    def test_norefresh_and_hide_down(self) -> None:
        """``;norefresh`` drops the header; ``;up`` hides DOWN servers; they combine."""
        code, headers, body = self.harness.get("/;up;norefresh")
        self.assertEqual(code, 200)
        self.assertNotIn("refresh", headers)
        self.assertIn('data-server="a1"', body)
        self.assertNotIn('data-server="a2"', body)
        self.assertIn('href="/;norefresh">Show all servers', body)

    def test_csv(self) -> None:
        """``;csv`` is text/plain with haproxy's header and one line per row."""
        code, headers, body = self.harness.get("/;csv;norefresh")
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-type"], ["text/plain; charset=utf-8"])
        lines = body.splitlines()
        self.assertTrue(lines[0].startswith("# pxname,svname,"))
        self.assertEqual(
            [line.split(",")[1] for line in lines[1:]], ["FRONTEND", "a1", "a2", "BACKEND"]
        )
        # Set with a 30 s TTL 10.2 s ago, read then: the TTL as read, not a countdown.
        self.assertIn(",/backends/web/a1,30,10,READY,,", lines[2])

    def test_json(self) -> None:
        """``;json`` is application/json in haproxy's shape."""
        code, headers, body = self.harness.get("/;json")
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-type"], ["application/json"])
        self.assertNotIn("refresh", headers)
        rows = json.loads(body)
        self.assertEqual(
            [row[1]["value"]["value"] for row in rows], ["FRONTEND", "a1", "a2", "BACKEND"]
        )

    def test_metrics_and_health(self) -> None:
        """``/metrics`` and ``/health`` hang off the same root."""
        code, _, body = self.harness.get("/metrics")
        self.assertEqual(code, 200)
        self.assertIn('ddiscover_server_status{proxy="web",server="a2",state="DOWN"} 1.0', body)
        code, _, body = self.harness.get("/health")
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body)["registry"]["state"], "watching")

    def test_unknown_paths(self) -> None:
        """Unknown options and paths are 404."""
        for path in ("/;bogus", "/;csv/extra", "/nothing", "/;csv;yaml"):
            self.assertEqual(self.harness.get(path)[0], 404, path)

    def test_admin_refused_without_auth(self) -> None:
        """Without --stats-auth, a POST changes nothing."""
        code, _, body = self.harness.request(
            "POST", "/", data={"b": "web", "s": "a1", "action": "disable"}
        )
        self.assertEqual((code, body), (403, "admin actions need --stats-auth\n"))
        self.assertIs(self.harness.admin("a1"), Admin.READY)


class AuthTests(SynchronousTestCase):
    """With --stats-auth: basic auth on everything but /health, and admin actions."""

    def setUp(self) -> None:
        self.harness = Running(self, stats_auth=AUTH)

    def test_every_path_but_health_needs_auth(self) -> None:
        """No or wrong credentials get 401 and a Basic challenge; /health stays open."""
        for path in ("/", "/;csv", "/;json", "/metrics", "/;norefresh"):
            for auth in (None, ("admin", "wrong"), ("root", "s3cret")):
                code, headers, _ = self.harness.get(path, auth=auth)
                self.assertEqual(code, 401, (path, auth))
                self.assertEqual(
                    headers["www-authenticate"], ['Basic realm="ddiscover stats", charset="UTF-8"']
                )
            self.assertEqual(self.harness.get(path, auth=AUTH)[0], 200, path)
        self.assertEqual(self.harness.get("/health")[0], 200)

    def test_admin_needs_auth(self) -> None:
        """A POST without credentials is refused before it can act."""
        code, _, _ = self.harness.request(
            "POST", "/", data={"b": "web", "s": "a1", "action": "drain"}
        )
        self.assertEqual(code, 401)
        self.assertIs(self.harness.admin("a1"), Admin.READY)

    def test_page_has_the_admin_form(self) -> None:
        """With auth, each server row has a checkbox and the table an action form."""
        _, _, body = self.harness.get("/", auth=AUTH)
        self.assertIn('<form method="post" action="/" class="proxy">', body)
        self.assertIn('<input type="checkbox" name="s" value="a1" />', body)
        self.assertIn('<option value="drain">Set state to DRAIN</option>', body)

    def test_drain_disable_enable(self) -> None:
        """Each action changes the state, shows on the page and in CSV, and redirects back."""
        for action, state, status in (
            ("drain", Admin.DRAIN, "DRAIN"),
            ("disable", Admin.MAINT, "MAINT"),
            ("enable", Admin.READY, "UP"),
        ):
            code, headers, _ = self.harness.request(
                "POST", "/;norefresh", data={"b": "web", "s": "a1", "action": action}, auth=AUTH
            )
            self.assertEqual((code, headers["location"]), (303, ["/;norefresh"]))
            self.assertIs(self.harness.admin("a1"), state)
            csv = self.harness.get("/;csv", auth=AUTH)[2].splitlines()
            self.assertEqual(csv[2].split(",")[17], status)

    def test_several_servers_at_once(self) -> None:
        """Every checked server gets the action."""
        code, _, _ = self.harness.request(
            "POST",
            "/",
            data=[("b", "web"), ("s", "a1"), ("s", "a2"), ("action", "disable")],
            auth=AUTH,
        )
        self.assertEqual(code, 303)
        self.assertEqual([self.harness.admin(s) for s in ("a1", "a2")], [Admin.MAINT] * 2)

    def test_bad_requests(self) -> None:
        """Unknown action, service or server: 400 with the reason, nothing changed."""
        cases = {
            (("b", "web"), ("s", "a1"), ("action", "reboot")): (
                "unknown action 'reboot': use one of drain, disable, enable"
            ),
            (("b", "api"), ("s", "a1"), ("action", "drain")): "no service 'api'",
            (("b", "web"), ("s", "a1"), ("s", "zz"), ("action", "drain")): (
                "service 'web' has no server 'zz'"
            ),
        }
        for form, reason in cases.items():
            code, _, body = self.harness.request("POST", "/", data=list(form), auth=AUTH)
            self.assertEqual((code, body), (400, reason + "\n"))
        self.assertIs(self.harness.admin("a1"), Admin.READY)

    def test_cross_site_post_refused(self) -> None:
        """A form posted from another site's page (its Origin) is refused."""
        form = {"b": "web", "s": "a1", "action": "disable"}
        code, _, _ = self.harness.request(
            "POST", "/", data=form, auth=AUTH, headers={"Origin": "http://evil.example"}
        )
        self.assertEqual(code, 403)
        self.assertIs(self.harness.admin("a1"), Admin.READY)
        code, _, _ = self.harness.request(
            "POST", "/", data=form, auth=AUTH, headers={"Origin": STATS}
        )
        self.assertEqual(code, 303)
        code, _, _ = self.harness.request(
            "POST",
            "/",
            data=form,
            auth=AUTH,
            headers={"Origin": "http://[::1]:1936", "Host": "[::1]:1936"},
        )
        self.assertEqual(code, 303)
