"""Tests for :mod:`ddiscover.stats.formats`: haproxy's CSV and JSON exports."""

from __future__ import annotations

import csv
import io
import json

import attrs
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.stats.formats import FIELDS, to_csv, to_json
from ddiscover.stats.rows import build_rows
from tests.stats import fixed_state

# haproxy 2.6.12's static fields, as listed in doc/management.txt §9.1 (0...102).
REFERENCE_TEXT = """
pxname svname qcur qmax scur smax slim stot bin bout dreq dresp ereq econ eresp wretr
wredis status weight act bck chkfail chkdown lastchg downtime qlimit pid iid sid throttle lbtot
tracked type rate rate_lim rate_max check_status check_code check_duration hrsp_1xx hrsp_2xx
hrsp_3xx hrsp_4xx hrsp_5xx hrsp_other hanafail req_rate req_rate_max req_tot cli_abrt srv_abrt
comp_in comp_out comp_byp comp_rsp lastsess last_chk last_agt qtime ctime rtime ttime
agent_status agent_code agent_duration check_desc agent_desc check_rise check_fall
check_health agent_rise agent_fall agent_health addr cookie mode algo conn_rate conn_rate_max
conn_tot intercepted dcon dses wrew connect reuse cache_lookups cache_hits srv_icur src_ilim
qtime_max ctime_max rtime_max ttime_max eint idle_conn_cur safe_conn_cur used_conn_cur
need_conn_est uweight agg_server_status agg_server_status_check agg_check_status
"""
REFERENCE = REFERENCE_TEXT.split()


def parsed() -> tuple[list[str], list[dict[str, str]]]:
    """The CSV's header names and its rows as dicts, read with the csv module."""
    text = to_csv(build_rows(fixed_state())).decode()
    lines = text.splitlines()
    header = lines[0].removeprefix("# ").split(",")
    rows = list(csv.reader(io.StringIO("\n".join(lines[1:]))))
    return header, [dict(zip(header, row, strict=True)) for row in rows]


class CSVTests(SynchronousTestCase):
    """``/;csv`` is haproxy's ``show stat``, field for field."""

    def test_header(self) -> None:
        """``# `` then haproxy's 103 static fields in order, ``-``, ddiscover's, and a comma."""
        first = to_csv(()).decode().splitlines()[0]
        self.assertEqual(len(REFERENCE), 103)
        self.assertTrue(first.startswith("# pxname,svname,qcur,"))
        self.assertTrue(first.endswith(","))
        names = first.removeprefix("# ").split(",")[:-1]
        self.assertEqual(names[:103], REFERENCE)
        self.assertEqual(names[103], "-")
        self.assertEqual(
            names[104:],
            ["ddiscover_key", "ddiscover_ttl_read", "ddiscover_read_age", "ddiscover_admin",
             "ddiscover_reason"],
        )  # fmt: skip

    def test_every_line_has_every_field_and_a_trailing_comma(self) -> None:
        """Each data line has one value per header field, the last one empty."""
        text = to_csv(build_rows(fixed_state())).decode()
        lines = text.splitlines()
        self.assertEqual(len(lines), 1 + 13)
        for line in lines[1:]:
            row = next(csv.reader([line]))
            self.assertEqual(len(row), len(FIELDS) + 1, line)
            self.assertEqual(row[-1], "")

    def test_server_line(self) -> None:
        """A DOWN server: haproxy's values where they apply, empty where they do not."""
        header, rows = parsed()
        down = next(r for r in rows if r["svname"] == "d-down")
        expected = {
            "pxname": "web",
            "qcur": "",
            "scur": "0",
            "stot": "10",
            "econ": "1",
            "wredis": "2",
            "status": "DOWN",
            "act": "1",
            "bck": "0",
            "chkfail": "4",
            "chkdown": "2",
            "lastchg": "14",
            "downtime": "14",
            "pid": "1",
            "iid": "3",
            "sid": "4",
            "type": "2",
            "check_status": "L4CON",
            "check_duration": "0",
            "hrsp_2xx": "",
            "lastsess": "-1",
            "last_chk": "Connection refused",
            "check_desc": "Layer4 connection problem",
            "check_rise": "2",
            "check_fall": "2",
            "check_health": "0",
            "addr": "10.0.0.1:9004",
            "mode": "tcp",
            "-": "",
            "ddiscover_key": "/backends/web/d-down",
            "ddiscover_ttl_read": "15",
            "ddiscover_admin": "READY",
        }
        self.assertEqual({name: down[name] for name in expected}, expected)
        self.assertEqual(header.index("status"), 17)
        self.assertEqual(header.index("check_status"), 36)

    def test_quoting(self) -> None:
        """A field with a comma, a quote or a newline is quoted, quotes doubled."""
        web = fixed_state().services[2]
        odd = fixed_state(services=(attrs.evolve(web, name='a,"b\nc'),))
        text = to_csv(build_rows(odd)).decode()
        self.assertIn('\n"a,""b\nc",FRONTEND,', text)
        self.assertIn("\nweb,a-up,", to_csv(build_rows(fixed_state())).decode())


class JSONTests(SynchronousTestCase):
    """``/;json`` has haproxy's shape: a list of rows, each a list of field objects."""

    def setUp(self) -> None:
        self.document = json.loads(to_json(build_rows(fixed_state())))

    def test_shape(self) -> None:
        """Every field object has haproxy's keys, and its position is the CSV column."""
        self.assertEqual(len(self.document), 13)
        for row in self.document:
            for field in row:
                self.assertEqual(
                    set(field),
                    {"objType", "proxyId", "id", "field", "processNum", "tags", "value"},
                )
                self.assertEqual(FIELDS[field["field"]["pos"]], field["field"]["name"])
                self.assertEqual(set(field["tags"]), {"origin", "nature", "scope"})
                self.assertEqual(set(field["value"]), {"type", "value"})

    def test_server_field(self) -> None:
        """A server's ``stot`` is exactly haproxy's: a Metric Counter u64 at position 7."""
        row = self.document[5]
        stot = next(f for f in row if f["field"]["name"] == "stot")
        self.assertEqual(
            stot,
            {
                "objType": "Server",
                "proxyId": 3,
                "id": 2,
                "field": {"pos": 7, "name": "stot"},
                "processNum": 1,
                "tags": {"origin": "Metric", "nature": "Counter", "scope": "Process"},
                "value": {"type": "u64", "value": 40},
            },
        )

    def test_empty_fields_left_out(self) -> None:
        """Fields that do not apply are not listed; string fields are typed ``str``."""
        frontend = {f["field"]["name"]: f for f in self.document[3]}
        self.assertEqual(frontend["pxname"]["objType"], "Frontend")
        self.assertNotIn("econ", frontend)
        self.assertNotIn("qcur", frontend)
        self.assertEqual(frontend["status"]["value"], {"type": "str", "value": "OPEN"})
        backend = {f["field"]["name"]: f for f in self.document[-1]}
        self.assertEqual(backend["svname"]["objType"], "Backend")
        self.assertEqual(backend["act"]["value"]["value"], 2)
