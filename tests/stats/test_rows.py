"""Tests for :mod:`ddiscover.stats.rows`: the one row builder behind every stats format."""

from __future__ import annotations

import attrs
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.proxy.counters import SessionRate
from ddiscover.stats.formats import FIELDS
from ddiscover.stats.rows import BACKEND, FRONTEND, SERVER, Row, build_rows
from tests.stats import NOW, fixed_state


def by_name(rows: tuple[Row, ...], proxy: str) -> dict[str, Row]:
    return {row.svname: row for row in rows if row.pxname == proxy}


class BuildRowsTests(SynchronousTestCase):
    """``build_rows`` from the fixed state of ``tests.stats``."""

    def setUp(self) -> None:
        self.rows = build_rows(fixed_state())
        self.web = by_name(self.rows, "web")

    def test_order(self) -> None:
        """Services by name; per service FRONTEND, its servers in order, then BACKEND."""
        self.assertEqual(
            [(row.pxname, row.svname) for row in self.rows],
            [
                ("busy", "FRONTEND"),
                ("busy", "BACKEND"),
                ("clash", "FRONTEND"),
                ("web", "FRONTEND"),
                *[
                    ("web", name)
                    for name in (
                        "a-up",
                        "b-going-down",
                        "c-going-up",
                        "d-down",
                        "e-drained",
                        "f-maint",
                        "g-new",
                        "h-unknown",
                    )
                ],
                ("web", "BACKEND"),
            ],
        )
        self.assertEqual([row.iid for row in self.rows if row.svname == "FRONTEND"], [1, 2, 3])
        self.assertEqual([self.web[n].sid for n in ("a-up", "h-unknown")], [1, 8])

    def test_server_status_and_colour(self) -> None:
        """Status text and row colour follow haproxy, admin states winning over health."""
        self.assertEqual(
            {name: (row.status, row.condition) for name, row in self.web.items()},
            {
                "FRONTEND": ("OPEN", "frontend"),
                "a-up": ("UP", "up"),
                "b-going-down": ("UP 1/2", "going_down"),
                "c-going-up": ("DOWN 1/2", "going_up"),
                "d-down": ("DOWN", "down"),
                "e-drained": ("DRAIN", "draining"),
                "f-maint": ("MAINT", "maint"),
                "g-new": ("DOWN 1/2", "going_up"),
                "h-unknown": ("no check", "no_check"),
                "BACKEND": ("UP", "backend"),
            },
        )

    def test_server_check_fields(self) -> None:
        """Last check, its duration in ms, failures, transitions, last change and downtime."""
        down, going_up = self.web["d-down"], self.web["c-going-up"]
        self.assertEqual(
            (down.check_status, down.check_duration, down.last_chk, down.check_desc),
            ("L4CON", 0, "Connection refused", "Layer4 connection problem"),
        )
        self.assertEqual((down.chkfail, down.chkdown, down.lastchg, down.downtime), (4, 2, 14, 14))
        self.assertEqual(going_up.downtime, 30 + 14)
        self.assertEqual(
            (going_up.check_rise, going_up.check_fall, going_up.check_health), (2, 2, 1)
        )
        up = self.web["a-up"]
        self.assertEqual((up.check_status, up.check_duration, up.last_chk), ("L4OK", 1, None))
        new = self.web["g-new"]
        self.assertEqual((new.check_status, new.check_duration), ("INI", None))
        unknown = self.web["h-unknown"]
        self.assertEqual((unknown.check_status, unknown.chkfail, unknown.lastchg), (None,) * 3)

    def test_server_counters_and_registry(self) -> None:
        """Sessions, bytes and errors from the counters; key, TTL left and age from etcd."""
        up, down = self.web["a-up"], self.web["d-down"]
        self.assertEqual(
            (up.scur, up.smax, up.stot, up.bin, up.bout, up.lbtot), (2, 5, 70, 2500, 150_000, 70)
        )
        self.assertEqual((down.econ, down.wredis, down.lastsess), (1, 2, -1))
        self.assertEqual(
            (up.ddiscover_key, up.ddiscover_ttl_read, up.ddiscover_read_age, up.ddiscover_admin),
            ("/backends/web/a-up", 15, 3, "READY"),
        )
        self.assertEqual(up.addr, "10.0.0.1:9001")
        self.assertEqual(self.web["e-drained"].weight, 0)
        self.assertEqual(up.weight, 1)

    def test_frontend_and_backend(self) -> None:
        """The frontend carries the listener and the limit; the backend the totals."""
        frontend, backend = self.web["FRONTEND"], self.web["BACKEND"]
        self.assertEqual(frontend.type, FRONTEND)
        self.assertEqual(
            (frontend.scur, frontend.smax, frontend.slim, frontend.stot, frontend.conn_tot),
            (3, 9, 4096, 120, 120),
        )
        self.assertEqual((frontend.rate, frontend.rate_max, frontend.conn_rate), (4, 7, 4))
        self.assertEqual(frontend.addr, "0.0.0.0:8080")
        self.assertEqual(frontend.ddiscover_key, "/backends/web/port")
        self.assertIsNone(frontend.econ)
        self.assertEqual(backend.type, BACKEND)
        self.assertEqual(
            (backend.econ, backend.eresp, backend.wredis, backend.cli_abrt, backend.lastsess),
            (1, 2, 2, 1, 1),
        )
        # Only a-up and b-going-down are both UP and READY.
        self.assertEqual((backend.act, backend.weight, backend.uweight), (2, 2, 8))
        self.assertEqual(backend.algo, "roundrobin")

    def test_backend_down_without_a_routable_server(self) -> None:
        """A backend whose servers are all DOWN, drained or in maintenance is DOWN."""
        busy = by_name(self.rows, "busy")["BACKEND"]
        self.assertEqual((busy.status, busy.act), ("DOWN", 0))

    def test_frontends_not_listening(self) -> None:
        """A port that cannot be bound and a rejected service are STOP, with the reason."""
        busy = by_name(self.rows, "busy")["FRONTEND"]
        self.assertEqual((busy.status, busy.condition), ("STOP", "frontend_stopped"))
        self.assertEqual(
            busy.ddiscover_reason, "cannot listen on 0.0.0.0:80: [Errno 98] Address already in use"
        )
        clash = by_name(self.rows, "clash")
        self.assertEqual(list(clash), ["FRONTEND"])
        self.assertEqual(clash["FRONTEND"].status, "STOP")
        self.assertEqual(
            clash["FRONTEND"].ddiscover_reason, "port 8080 is already used by service web"
        )
        self.assertIsNone(clash["FRONTEND"].addr)

    def test_rate_decays_over_the_next_second(self) -> None:
        """The session rate counts this second plus the share of the last still in window."""
        web = fixed_state().services[2]
        assert web.counters is not None
        web.counters.rate = SessionRate(second=int(NOW) - 1, current=10, previous=0, max=10)
        later = build_rows(fixed_state(services=(web,), now=NOW + 0.25))
        self.assertEqual(later[0].rate, 7)
        gone = build_rows(fixed_state(services=(web,), now=NOW + 1))
        self.assertEqual((gone[0].rate, gone[0].rate_max), (0, 10))

    def test_every_row_field_is_a_column(self) -> None:
        """Every Row attribute but the colour is a CSV column, so no format loses a field."""
        names = {field.name for field in attrs.fields(Row)} - {"condition"}
        self.assertLessEqual(names, set(FIELDS))

    def test_kinds(self) -> None:
        """Server rows are type 2, as in haproxy's ``type`` field."""
        self.assertEqual({row.type for name, row in self.web.items() if "-" in name}, {SERVER})
