"""The line of every key of a TOML document, however the document writes it."""

from __future__ import annotations

import tomllib

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.policy.toml_lines import key_lines, line_of

PORT = ("services", "web", "port")


class KeyLinesTests(SynchronousTestCase):
    """Each way TOML allows writing ``services.web.port`` gives that key's own line."""

    def assert_port_line(self, text: str, line: int) -> None:
        tomllib.loads(text)  # only valid TOML is ever scanned
        self.assertEqual(line_of(key_lines(text), PORT), line, text)

    def test_forms(self) -> None:
        """Headers, dotted keys, inline tables, quoted and spaced keys, CRLF line ends."""
        cases = [
            ('[services."web"]\nport = 0\n', 2),
            ('[services."web"]\nrise = 2\n\nport = 0\n', 4),
            ("[services.web]\nport = 0\n", 2),
            ("[ services . 'web' ]\n  port=0\n", 2),
            ("services = { web = { port = 0 } }\n", 1),
            ("\n[services]\nweb = { rise = 2, port = 0 }\n", 3),
            ('services."web".port = 0\n', 1),
            ("[services]\nweb.port = 0\n", 2),
            ('[services."web"]\r\nrise = 2\r\nport = 0\r\n', 3),
            ('[services."w\\u0065b"]\nport = 0\n', 2),
        ]
        for text, line in cases:
            self.assert_port_line(text, line)

    def test_lookalikes_are_skipped(self) -> None:
        """Text that looks like the key inside comments, strings and arrays is not the key."""
        text = (
            "# [services.web]\n# port = 0\n"
            '[defaults]\nnote = """\n[services.web]\nport = 0\n"""\n'
            "other = '''\nport = 0 '''\n"
            'quoted = "port = 0 \\" still string"\n'
            'list = [\n  "port = 0",\n  { port = 0 },\n]\n'
            '[services."web"]\n'
            "port = 0 # the real one\n"
        )
        self.assert_port_line(text, 16)

    def test_tables_and_values(self) -> None:
        """Tables get the line of their header, and values of every kind are skipped."""
        text = (
            "[defaults]\n"
            "when = 1979-05-27 07:32:00Z\n"
            "n = -1_000\n"
            "f = 6.5e-3\n"
            "b = true\n"
            'nested = [[1, 2], ["a", "b"]]\n'
            '[services."jwilder/*"]\n'
            'check_expect = [200, "300-399"]\n'
        )
        tomllib.loads(text)
        lines = key_lines(text)
        self.assertEqual(lines[("defaults",)], 1)
        self.assertEqual(lines[("defaults", "nested")], 6)
        self.assertEqual(lines[("services", "jwilder/*")], 7)
        self.assertEqual(lines[("services", "jwilder/*", "check_expect")], 8)

    def test_every_key_found(self) -> None:
        """Every key path tomllib reads from a document mixing all forms has a line."""
        text = (
            "top = 1\n"
            "[defaults]\n"
            'a = "x" # c\n'
            'b = { c = 1, "d.e" = { f = [1, {g = 2}] } }\n'
            "[services]\n"
            '"x/*".rise = 2\n'
            "'lit'.fall = 3\n"
            '[services."web"]\n'
            'check_expect = [\n  200, # ok\n  "300-399",\n]\n'
            '[services."web".deeper]\n'
            "k = '''a\nb'''\n"
        )

        def paths(table: dict[str, object], prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
            found = set()
            for key, value in table.items():
                found.add((*prefix, key))
                if isinstance(value, dict):
                    found |= paths(value, (*prefix, key))
            return found

        lines = key_lines(text)
        self.assertEqual(paths(tomllib.loads(text), ()) - set(lines), set())
        self.assertEqual(lines[("services", "web", "deeper", "k")], 14)
        self.assertEqual(lines[("defaults", "b", "d.e", "f")], 4)

    def test_fallback_to_table(self) -> None:
        """A key that was not found takes the line of the closest table that was."""
        lines = key_lines('[services."web"]\nrise = 2\n')
        self.assertEqual(line_of(lines, PORT), 1)
        self.assertIsNone(line_of(lines, ("defaults", "rise")))

    def test_unfollowed_text_keeps_what_was_found(self) -> None:
        """Text the scanner cannot follow (never valid TOML) ends the scan, not the caller."""
        lines = key_lines('[services."web"]\nport = 0\n = broken "\n')
        self.assertEqual(line_of(lines, PORT), 2)
