"""The parsers of policy values: what each accepts, what it refuses, and how it says so."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.policy.values import (
    Balance,
    StatusSet,
    choice,
    duration,
    flag,
    format_duration,
    http_host,
    http_method,
    http_path,
    status_set,
    whole,
)


class DurationTests(SynchronousTestCase):
    """Seconds as numbers, or as text with haproxy's units."""

    def test_accepted(self) -> None:
        """Numbers are seconds; text may carry one or several units."""
        parse = duration(0)
        cases = {
            2: 2.0,
            0.5: 0.5,
            "2": 2.0,
            "1.5": 1.5,
            "30s": 30.0,
            "500ms": 0.5,
            "2m": 120.0,
            "1h": 3600.0,
            "1d": 86400.0,
            "250us": 0.00025,
            "1m30s": 90.0,
            " 10 s ": 10.0,
        }
        for raw, seconds in cases.items():
            self.assertAlmostEqual(parse(raw), seconds, msg=repr(raw))

    def test_refused(self) -> None:
        """Booleans, unknown units, signs, infinities and values under the minimum are refused."""
        parse = duration(0.01)
        refused: list[object] = [True, "30x", "-1s", "s", "", float("inf"), float("nan"), "1e3"]
        for raw in [*refused, 0, "5ms", []]:
            with self.assertRaises(ValueError, msg=repr(raw)) as caught:
                parse(raw)
            self.assertEqual(
                str(caught.exception),
                "must be a duration of at least 10ms such as 30s, 500ms or 2m",
            )

    def test_format(self) -> None:
        """A duration is shown in the largest unit that says it exactly."""
        cases = {
            0: "0s",
            0.5: "500ms",
            2: "2s",
            90: "90s",
            120: "2m",
            7200: "2h",
            0.0005: "0.0005s",
        }
        for seconds, text in cases.items():
            self.assertEqual(format_duration(seconds), text)


class WholeTests(SynchronousTestCase):
    """Whole numbers within bounds, never booleans or floats."""

    def test_bounds(self) -> None:
        """The bounds are inclusive; anything else is refused with the range in the message."""
        parse = whole(1, 1000)
        self.assertEqual((parse(1), parse(1000)), (1, 1000))
        for raw in (0, 1001, True, 2.0, "3", None):
            with self.assertRaises(ValueError, msg=repr(raw)) as caught:
                parse(raw)
            self.assertEqual(str(caught.exception), "must be a whole number from 1 to 1000")


class ChoiceTests(SynchronousTestCase):
    """Enumerations are written in lower case, exactly."""

    def test_choice(self) -> None:
        """A known value maps to its member; anything else lists the choices."""
        parse = choice(Balance)
        self.assertIs(parse("leastconn"), Balance.LEASTCONN)
        with self.assertRaises(ValueError) as caught:
            parse("LeastConn")
        self.assertEqual(
            str(caught.exception), "must be one of roundrobin, leastconn, random, source"
        )

    def test_flag(self) -> None:
        """Only true and false are flags, not 1 or "yes"."""
        self.assertIs(flag(True), True)
        for raw in (1, "true", "yes", None):
            with self.assertRaises(ValueError, msg=repr(raw)):
                flag(raw)


class HttpValueTests(SynchronousTestCase):
    """The HTTP check's method, path and Host header are checked before they reach a request."""

    def test_method(self) -> None:
        """A token is a method; spaces, CRLF and empty strings are not."""
        self.assertEqual(http_method("OPTIONS"), "OPTIONS")
        for raw in ("GET /", "GET\r\n", "", 5, "X" * 33):
            with self.assertRaises(ValueError, msg=repr(raw)):
                http_method(raw)

    def test_path(self) -> None:
        """A path starts with / and holds only visible ASCII."""
        self.assertEqual(http_path("/healthz?full=1"), "/healthz?full=1")
        for raw in ("healthz", "/a b", "/a\r\nX: y", "/é", "/" + "a" * 1024, None):
            with self.assertRaises(ValueError, msg=repr(raw)):
                http_path(raw)

    def test_host(self) -> None:
        """A Host value has no spaces or control characters."""
        self.assertEqual(http_host("db.internal:8008"), "db.internal:8008")
        for raw in ("", "a b", "a\nb", "h" * 256, 1):
            with self.assertRaises(ValueError, msg=repr(raw)):
                http_host(raw)


class StatusSetTests(SynchronousTestCase):
    """Status code lists and ranges, written as strings, numbers or lists of both."""

    def test_forms(self) -> None:
        """Every accepted form gives the same ranges, and str() writes them back."""
        cases = {
            "200-399": ((200, 399),),
            "200, 204 ,300-399": ((200, 200), (204, 204), (300, 399)),
            200: ((200, 200),),
            (200, "300-302"): ((200, 200), (300, 302)),
        }
        for raw, ranges in cases.items():
            parsed = status_set(list(raw) if isinstance(raw, tuple) else raw)
            self.assertEqual(parsed, StatusSet(ranges))
        self.assertEqual(str(status_set("200, 204,300-399")), "200,204,300-399")

    def test_membership(self) -> None:
        """A code is in the set when one range holds it; non-integers never are."""
        statuses = status_set("200-299,404")
        self.assertEqual(
            [code in statuses for code in (199, 200, 299, 300, 404, "200")],
            [False, True, True, False, True, False],
        )

    def test_refused(self) -> None:
        """Codes outside 100-599, reversed ranges, booleans and empty lists are refused."""
        for raw in ("600", "99", "399-200", "2xx", "", [], True, [True], "200-", 1.5):
            with self.assertRaises(ValueError, msg=repr(raw)):
                status_set(raw)
