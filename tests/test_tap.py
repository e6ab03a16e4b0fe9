"""Tests for :mod:`ddiscover.tap`: option parsing, validation and the ETCD_HOST fallback."""

from typing import Any, ClassVar

from hyperlink import URL
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from ddiscover.config import Config
from ddiscover.registry.options import parse_etcd
from ddiscover.tap import Options, fit_to_fd_limit


def parse(args: list[str], environ: dict[str, str] | None = None) -> Config:
    options = Options({} if environ is None else environ)
    options.parseOptions(args)
    config: Config = options.config
    return config


class EtcdOptionTests(SynchronousTestCase):
    """``--etcd`` and ``ETCD_HOST``."""

    def test_host_port(self) -> None:
        """A bare host:port means plain HTTP to that address."""
        self.assertEqual(
            parse(["--etcd", "10.0.0.5:2379"]).etcd, (URL.from_text("http://10.0.0.5:2379"),)
        )

    def test_list_keeps_order(self) -> None:
        """A comma-separated list keeps its order, for failover; schemes and IPv6 work."""
        self.assertEqual(
            parse_etcd("a.example:1, https://b.example:2379,[::1]:4001"),
            (
                URL(scheme="http", host="a.example", port=1),
                URL(scheme="https", host="b.example", port=2379),
                URL(scheme="http", host="::1", port=4001),
            ),
        )

    def test_environment_fallback(self) -> None:
        """Without --etcd, ETCD_HOST is used."""
        config = parse([], {"ETCD_HOST": "127.0.0.1:2379"})
        self.assertEqual(config.etcd, (URL.from_text("http://127.0.0.1:2379"),))

    def test_command_line_wins(self) -> None:
        """--etcd wins over ETCD_HOST."""
        config = parse(["--etcd", "h:1"], {"ETCD_HOST": "127.0.0.1:2379"})
        self.assertEqual(config.etcd, (URL.from_text("http://h:1"),))

    def test_missing(self) -> None:
        """With neither, the error says what to do."""
        e = self.assertRaises(usage.UsageError, parse, [])
        self.assertEqual(str(e), "--etcd is required (or set ETCD_HOST), e.g. 10.0.0.5:2379")

    def test_bad_values(self) -> None:
        """Each malformed endpoint is named in a one-line error."""
        cases = {
            "10.0.0.5": "--etcd '10.0.0.5' is not host:port or http://host:port",
            "h:70000": "--etcd 'h:70000' has port 70000, outside 1-65535",
            "ftp://h:1": "--etcd 'ftp://h:1' is not host:port or http://host:port",
            "http://h:1/v2": "--etcd 'http://h:1/v2' is not host:port or http://host:port",
            "h:1,": "--etcd '' is not host:port or http://host:port",
        }
        for raw, message in cases.items():
            e = self.assertRaises(usage.UsageError, parse, ["--etcd", raw])
            self.assertEqual(str(e), message)


class NumericOptionTests(SynchronousTestCase):
    """Numbers are converted once and checked against their range."""

    def test_defaults(self) -> None:
        """Defaults match the documented contract and are already in their final types."""
        config = parse(["--etcd", "h:1"])
        self.assertEqual(
            (config.prefix, config.interface, config.stats_port, config.stats_interface),
            ("/backends", "0.0.0.0", 1936, "127.0.0.1"),
        )
        self.assertEqual(
            (config.check_interval, config.rise, config.fall, config.connect_timeout),
            (2.0, 3, 2, 5.0),
        )
        self.assertEqual(
            (config.idle_timeout, config.retries, config.maxconn, config.log_level),
            (60.0, 3, 0, "info"),
        )

    def test_given_values(self) -> None:
        """Given values are converted to numbers."""
        config = parse(
            ["--etcd", "h:1", "--check-interval", "0.5", "--rise", "1", "--stats-port", "0"]
        )
        self.assertEqual((config.check_interval, config.rise, config.stats_port), (0.5, 1, 0))

    def test_bad_values(self) -> None:
        """A bad number is rejected with the option, the rule and the value."""
        cases = [
            (["--rise", "0"], "--rise must be a whole number from 1 to 1000, got '0'"),
            (["--fall", "two"], "--fall must be a whole number from 1 to 1000, got 'two'"),
            (
                ["--stats-port", "70000"],
                "--stats-port must be a whole number from 0 to 65535, got '70000'",
            ),
            (
                ["--check-interval", "-1"],
                "--check-interval must be a number >= 0.01, got '-1'",
            ),
            (["--retries", "0"], "--retries must be a whole number from 1 to 100, got '0'"),
            (["--maxconn", "1.5"], "--maxconn must be a whole number >= 0, got '1.5'"),
        ]
        for args, message in cases:
            e = self.assertRaises(usage.UsageError, parse, ["--etcd", "h:1", *args])
            self.assertEqual(str(e), message)


class OtherOptionTests(SynchronousTestCase):
    """Addresses, the prefix and the log level."""

    def test_prefix_normalised(self) -> None:
        """A trailing slash on the prefix is dropped."""
        self.assertEqual(parse(["--etcd", "h:1", "--prefix", "/svc/"]).prefix, "/svc")

    def test_bad_prefix(self) -> None:
        """A relative or empty prefix is rejected."""
        for raw in ("backends", "/", "/a//b"):
            e = self.assertRaises(usage.UsageError, parse, ["--etcd", "h:1", "--prefix", raw])
            self.assertIn("--prefix must be an absolute etcd path", str(e))

    def test_interfaces(self) -> None:
        """Interfaces must be IP addresses; IPv6 is accepted with or without brackets."""
        config = parse(["--etcd", "h:1", "--interface", "[::1]", "--stats-interface", "::"])
        self.assertEqual((config.interface, config.stats_interface), ("::1", "::"))
        e = self.assertRaises(usage.UsageError, parse, ["--etcd", "h:1", "--interface", "eth0"])
        self.assertEqual(str(e), "--interface 'eth0' is not an IP address")

    def test_log_level(self) -> None:
        """Only txaio's level names are accepted."""
        self.assertEqual(parse(["--etcd", "h:1", "--log-level", "debug"]).log_level, "debug")
        e = self.assertRaises(usage.UsageError, parse, ["--etcd", "h:1", "--log-level", "loud"])
        self.assertEqual(
            str(e),
            "--log-level must be one of critical, error, warn, info, debug, trace, got 'loud'",
        )

    def test_help_documents_every_option(self) -> None:
        """--help names every option of the contract."""
        text = str(Options({}))
        for name in (
            "--etcd", "--prefix", "--interface", "--stats-port", "--stats-interface",
            "--check-interval", "--rise", "--fall", "--connect-timeout", "--idle-timeout",
            "--retries", "--maxconn", "--log-level", "--drain-timeout", "--stats-auth",
            "--access-log",
        ):  # fmt: skip
            self.assertIn(name, text)

    def test_stats_auth(self) -> None:
        """``user:password``, split at the first colon; off by default."""
        self.assertIsNone(parse(["--etcd", "h:1"]).stats_auth)
        config = parse(["--etcd", "h:1", "--stats-auth", "ops:pa:ss"])
        self.assertEqual(config.stats_auth, ("ops", "pa:ss"))
        self.assertNotIn("pa:ss", repr(config))

    def test_bad_stats_auth(self) -> None:
        """A one-line error says what is wrong, never echoing the password."""
        cases = {
            "secret": "--stats-auth must be user:password, got no ':'",
            ":secret": "--stats-auth must be user:password, got an empty user",
            "ops:": "--stats-auth must be user:password, got an empty password",
        }
        for raw, message in cases.items():
            e = self.assertRaises(usage.UsageError, parse, ["--etcd", "h:1", "--stats-auth", raw])
            self.assertEqual(str(e), message)

    def test_access_log(self) -> None:
        """``--access-log`` is a flag, off by default."""
        self.assertFalse(parse(["--etcd", "h:1"]).access_log)
        self.assertTrue(parse(["--etcd", "h:1", "--access-log"]).access_log)


class _Twistd(usage.Options):
    """A parent command that runs ``ddiscover`` as twistd does: as a usage subcommand."""

    subCommands: ClassVar[list[list[Any]]] = [  # noqa: N815 (Twisted's name)
        ["ddiscover", None, lambda: Options({}), "proxy"]
    ]


class OneLineErrorTests(SynchronousTestCase):
    """Under twistd a bad option ends the process with one line, not the usage text."""

    def test_bad_value(self) -> None:
        """The line names the command, the option and the value, and points at --help."""
        e = self.assertRaises(
            SystemExit,
            _Twistd().parseOptions,
            ["ddiscover", "--etcd", "h:1", "--check-interval", "x"],
        )
        self.assertEqual(
            e.code,
            "twistd ddiscover: --check-interval must be a number >= 0.01, got 'x' "
            "(see twistd ddiscover --help)",
        )

    def test_unknown_and_missing(self) -> None:
        """Twisted's own parsing errors get the same one line."""
        for args, error in (
            (["--bogus"], "option --bogus not recognized"),
            (["--rise"], "option --rise requires argument"),
            ([], "--etcd is required (or set ETCD_HOST), e.g. 10.0.0.5:2379"),
        ):
            e = self.assertRaises(SystemExit, _Twistd().parseOptions, ["ddiscover", *args])
            self.assertEqual(e.code, f"twistd ddiscover: {error} (see twistd ddiscover --help)")

    def test_long_value_clipped(self) -> None:
        """A huge value is cut in the line, which gives its size."""
        e = self.assertRaises(
            SystemExit,
            _Twistd().parseOptions,
            ["ddiscover", "--etcd", "h:1", "--rise", "9" * 10**5],
        )
        line = str(e.code)
        self.assertLess(len(line), 400)
        self.assertIn("bytes)", line)
        self.assertTrue(line.endswith("(see twistd ddiscover --help)"), line)

    def test_outside_twistd(self) -> None:
        """Parsed on their own, the options raise UsageError as usual."""
        self.assertRaises(usage.UsageError, Options({}).parseOptions, ["--bogus"])


class FitToFdLimitTests(SynchronousTestCase):
    """makeService's maxconn: derived from the open-files limit, or checked against it."""

    def test_derived_from_limit(self) -> None:
        """--maxconn 0 becomes about (limit - reserve) / 2, logged once at info."""
        with capturedLogs() as events:
            config = fit_to_fd_limit(parse(["--etcd", "h:1"]), 1024)
        self.assertEqual((config.maxconn, config.fd_limit), (366, 1024))
        self.assertEqual([e["log_level"].name for e in events], ["info"])

    def test_too_big_warned_and_kept(self) -> None:
        """A --maxconn that cannot fit is kept, with one warning naming it and the limit."""
        with capturedLogs() as events:
            config = fit_to_fd_limit(parse(["--etcd", "h:1", "--maxconn", "4096"]), 1024)
        self.assertEqual(config.maxconn, 4096)
        [event] = events
        self.assertEqual(event["log_level"].name, "warn")
        self.assertIn("--maxconn 4096 needs about", event["problem"])
        self.assertIn("open-files limit is 1024", event["problem"])

    def test_fitting_value_silent(self) -> None:
        """A --maxconn that fits is used as given, without a line."""
        with capturedLogs() as events:
            config = fit_to_fd_limit(parse(["--etcd", "h:1", "--maxconn", "100"]), 1024)
        self.assertEqual((config.maxconn, events), (100, []))
