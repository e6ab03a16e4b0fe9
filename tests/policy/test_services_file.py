"""The services file: read whole or rejected whole, with glob names ranked by specificity."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.policy.merge import merge
from ddiscover.policy.model import Source
from ddiscover.policy.services_file import (
    MAX_BYTES,
    ServicesFile,
    ServicesFileError,
    read_services_file,
    reread,
    specificity,
)
from ddiscover.policy.values import Balance, CheckKind

EXAMPLE = """\
[defaults]
balance = "roundrobin"
check_interval = 2

[services."web"]            # exact name
port = 8080
balance = "leastconn"
check = "http"
check_path = "/healthz"
check_expect = "200-399"
check_port = 8008
send_proxy = "v2"

[services."jwilder/*"]
check = "none"
"""


def _temporary_file(case: SynchronousTestCase) -> Path:
    """A path in a fresh directory that is removed after the test."""
    directory = tempfile.mkdtemp(prefix="ddiscover-services-")
    case.addCleanup(shutil.rmtree, directory)
    return Path(directory) / "services.toml"


class ServicesFileTests(SynchronousTestCase):
    """Reading the file, and the one line that rejects it."""

    def write(self, text: str | bytes) -> str:
        path = _temporary_file(self)
        if isinstance(text, str):
            path.write_text(text, encoding="utf-8")
        else:
            path.write_bytes(text)
        return str(path)

    def rejection(self, text: str | bytes) -> str:
        path = self.write(text)
        result = reread(path)
        assert isinstance(result, ServicesFileError), result
        return str(result).replace(path, "FILE")

    def test_example(self) -> None:
        """The issue's example reads, and each value knows its file, line and table."""
        path = self.write(EXAMPLE)
        services = read_services_file(path)
        self.assertEqual(services.defaults.settings["check_interval"].value, 2.0)
        web = merge([services.defaults, *services.layers_for("web")])
        self.assertEqual(
            (web.policy.port, web.policy.balance, web.policy.check, web.policy.check_port),
            (8080, Balance.LEASTCONN, CheckKind.HTTP, 8008),
        )
        origin = web.origins["check_port"]
        self.assertEqual(origin.source, Source.FILE_SERVICE)
        self.assertEqual(str(origin), f'{path}:11 [services."web"]')
        self.assertEqual(str(web.origins["check_interval"]), f"{path}:3 [defaults]")
        self.assertEqual(services.layers_for("db"), ())

    def test_empty_file(self) -> None:
        """An empty file is valid and says nothing."""
        services = read_services_file(self.write(""))
        self.assertEqual((dict(services.defaults.settings), services.tables), ({}, ()))

    def test_bad_values_name_file_line_and_key(self) -> None:
        """A bad value is reported at its own line, in a table or in an inline table."""
        cases = {
            '[services."web"]\nport = 0\n': 'FILE:2: [services."web"] port must be a whole '
            "number from 1 to 65535, got 0",
            '\n\nservices = { web = { rise = 2, fall = "x" } }\n': 'FILE:3: [services."web"] '
            'fall must be a whole number from 1 to 1000, got "x"',
            '[defaults]\nrise = 2\n\n[services]\n"a/*" = { check = "tcp" }\nb = { chek = 1 }\n': (
                'FILE:6: [services."b"] unknown key "chek"; did you mean check?'
            ),
            "[defaults]\nslowstart = true\n": "FILE:2: [defaults] slowstart must be a duration "
            "of at least 0s such as 30s, 500ms or 2m, got true",
        }
        for text, line in cases.items():
            self.assertEqual(self.rejection(text), line)

    def test_structure_errors(self) -> None:
        """Tables that are not tables, unknown tables, a default port and an empty name."""
        cases = {
            "[other]\nx = 1\n": 'FILE:1: unknown table "other": a services file has [defaults] '
            'and [services."<name>"] tables',
            "defaults = 3\n": "FILE:1: [defaults] must be a table of keys",
            "services = [1]\n": 'FILE:1: services must be [services."<name>"] tables',
            '[services]\nweb = "x"\n': 'FILE:2: [services."web"] must be a table of keys',
            "[defaults]\nport = 80\n": "FILE:2: [defaults] port cannot be a default: every "
            "service needs its own port",
            '[services.""]\nrise = 1\n': "FILE:1: a service name cannot be empty",
            '[services."web-*"]\nrise = 1\nport = 80\n': (
                'FILE:3: [services."web-*"] port needs an exact service name: '
                "the services a glob matches cannot share one port"
            ),
        }
        for text, line in cases.items():
            self.assertEqual(self.rejection(text), line)

    def test_syntax_errors(self) -> None:
        """tomllib's position becomes file:line:column; an error at the end gets the last line."""
        self.assertEqual(
            self.rejection('[services."web"]\nport = \nrise = 2\n'),
            "FILE:2:8: is not valid TOML: Invalid value",
        )
        self.assertEqual(
            self.rejection('[services."web"]\nport ='),
            "FILE:2: is not valid TOML: Invalid value",
        )

    def test_unreadable(self) -> None:
        """A missing file, a huge file and a file that is not UTF-8 each have their line."""
        missing = str(_temporary_file(self))
        self.assertEqual(
            str(reread(missing)), f"{missing}: cannot be read: No such file or directory"
        )
        self.assertEqual(
            self.rejection("#" * (MAX_BYTES + 1)), f"FILE: is larger than {MAX_BYTES} bytes"
        )
        self.assertEqual(self.rejection(b"[defaults]\nx = '\xff'\n"), "FILE:2: is not UTF-8 text")

    def test_reread_returns_new_or_error(self) -> None:
        """Rereading gives the new file when it is good and only the error when it is not."""
        path = self.write('[services."web"]\nrise = 2\n')
        first = reread(path)
        assert isinstance(first, ServicesFile)
        Path(path).write_text('[services."web"]\nrise = 0\n', encoding="utf-8")
        self.assertIsInstance(reread(path), ServicesFileError)
        Path(path).write_text('[services."web"]\nrise = 4\n', encoding="utf-8")
        second = reread(path)
        assert isinstance(second, ServicesFile)
        self.assertEqual(second.layers_for("web")[0].settings["rise"].value, 4)


class SpecificityTests(SynchronousTestCase):
    """Which table wins when several match a service."""

    def test_ranking(self) -> None:
        """Exact beats glob, then literal characters, then single wildcards, then fewer stars."""
        ordered = ["**", "*", "j*", "jw*", "jw?*", "jw[a-z]*", "jw??", "jwil*der", "jw"]
        ranks = [specificity(p) for p in ordered]
        self.assertEqual(ranks, sorted(ranks))
        self.assertEqual(len(set(ranks)), len(ranks) - 1)  # jw?* and jw[a-z]* tie
        self.assertEqual(specificity("a[b"), (True, 3, 0, 0))  # an unclosed [ is literal

    def test_each_key_from_the_most_specific_table(self) -> None:
        """Every matching table applies; each key comes from the most specific that sets it."""
        text = (
            '[services."*"]\nrise = 1\nfall = 1\nretries = 1\nweight = 1\n'
            '[services."jwilder/*"]\nfall = 2\nretries = 2\nweight = 2\n'
            '[services."jwilder/web"]\nretries = 3\n'
            '[services."jwilder/w*"]\nweight = 4\n'
            '[services."jw*/web"]\nweight = 5\n'
        )
        path = _temporary_file(self)
        path.write_text(text, encoding="utf-8")
        policy = merge(read_services_file(str(path)).layers_for("jwilder/web")).policy
        self.assertEqual((policy.rise, policy.fall, policy.retries, policy.weight), (1, 2, 3, 4))

    def test_file_order_breaks_ties(self) -> None:
        """Between equally specific globs the one written first wins."""
        path = _temporary_file(self)
        path.write_text('[services."a?"]\nrise = 1\n[services."?b"]\nrise = 2\n', encoding="utf-8")
        policy = merge(read_services_file(str(path)).layers_for("ab")).policy
        self.assertEqual(policy.rise, 1)

    def test_case_sensitive(self) -> None:
        """Names match case-sensitively, as registry service names are."""
        path = _temporary_file(self)
        path.write_text('[services."Web*"]\nrise = 1\n', encoding="utf-8")
        self.assertEqual(read_services_file(str(path)).layers_for("web"), ())
