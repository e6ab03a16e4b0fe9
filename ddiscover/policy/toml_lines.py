"""Where each key of a TOML document is written: its line, for error messages.

``tomllib`` gives a line and column for syntax errors but nothing for a value that parses and
is then found wrong (``port = 0``), so this module scans the document once more and maps every
key path (``("services", "web", "port")``) to the line it is written on, whichever way TOML
allows writing it: under a ``[services."web"]`` header, as a dotted key
(``services.web.port = 0``), or inside inline tables (``web = { port = 0 }``).

It only ever reads documents ``tomllib`` has already accepted, so it follows the grammar
without checking it: it skips strings (all four kinds), comments, arrays and scalars, and
decodes quoted keys with ``tomllib`` itself, so escapes mean exactly what they mean to the
parser.  If it ever meets something it does not follow, it returns what it has found so far;
:func:`line_of` then falls back to the line of the closest enclosing table.
"""

from __future__ import annotations

import bisect
import contextlib
import tomllib
from collections.abc import Callable, Mapping

Path = tuple[str, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_BLANK = " \t\r"


class _Scanner:
    """One pass over a document, recording the first line of every key path."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[Path, int] = {}
        self._newlines = [i for i, char in enumerate(text) if char == "\n"]

    def line(self, pos: int) -> int:
        return bisect.bisect_left(self._newlines, pos) + 1

    def record(self, path: Path, pos: int) -> None:
        line = self.line(pos)
        for size in range(1, len(path) + 1):
            self.lines.setdefault(path[:size], line)

    def peek(self, ahead: int = 0) -> str:
        at = self.pos + ahead
        return self.text[at] if at < len(self.text) else ""

    def skip_blank(self, newlines: bool) -> None:
        """Skip spaces, comments and (if ``newlines``) line ends."""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in _BLANK or (newlines and char == "\n"):
                self.pos += 1
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def document(self) -> None:
        table: Path = ()
        while True:
            self.skip_blank(newlines=True)
            if self.pos >= len(self.text):
                return
            if self.peek() == "[":
                start = self.pos
                double = self.peek(1) == "["
                self.pos += 2 if double else 1
                table = self.key()
                self.skip_blank(newlines=False)
                self.pos += 2 if double else 1
                self.record(table, start)
            else:
                self.pair(table)

    def key(self) -> Path:
        """A dotted key, each part bare or quoted; leaves the position after it."""
        parts: list[str] = []
        while True:
            self.skip_blank(newlines=False)
            char = self.peek()
            if char in "\"'":
                start = self.pos
                self.string()
                parts.append(tomllib.loads("k = " + self.text[start : self.pos])["k"])
            else:
                start = self.pos
                while self.peek() in _BARE:
                    self.pos += 1
                if self.pos == start:
                    raise ValueError("no key here")
                parts.append(self.text[start : self.pos])
            self.skip_blank(newlines=False)
            if self.peek() != ".":
                return tuple(parts)
            self.pos += 1

    def string(self) -> None:
        """Skip one string of any of TOML's four kinds."""
        quote = self.peek()
        if self.text.startswith(quote * 3, self.pos):
            end = self.text.find(quote * 3, self.pos + 3)
            while quote == '"' and end >= 0 and self._escaped(end):
                end = self.text.find(quote * 3, end + 1)
            if end < 0:
                raise ValueError("unterminated string")
            self.pos = end + 3
            while self.peek() == quote:  # up to two quotes may end the content
                self.pos += 1
            return
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and quote == '"':
                self.pos += 2
                continue
            self.pos += 1
            if char == quote:
                return
        raise ValueError("unterminated string")

    def _escaped(self, at: int) -> bool:
        """Whether the character at ``at`` follows an odd number of backslashes."""
        count = 0
        while at - count - 1 >= 0 and self.text[at - count - 1] == "\\":
            count += 1
        return count % 2 == 1

    def items(self, closer: str, newlines: bool, item: Callable[[], None]) -> None:
        """Skip an array or inline table: ``item`` reads each element up to the ``closer``."""
        self.pos += 1
        while True:
            self.skip_blank(newlines)
            if self.peek() in (closer, ""):
                self.pos += 1
                return
            item()
            self.skip_blank(newlines)
            if self.peek() == ",":
                self.pos += 1

    def pair(self, path: Path) -> None:
        """One ``key = value`` of an inline table, recorded under ``path``."""
        start = self.pos
        inner = path + self.key()
        self.record(inner, start)
        self.skip_blank(newlines=False)
        self.pos += 1  # "="
        self.value(inner)

    def value(self, path: Path) -> None:
        """Skip one value; keys inside inline tables are recorded under ``path``."""
        self.skip_blank(newlines=False)
        char = self.peek()
        if char in "\"'":
            self.string()
        elif char == "[":
            self.items("]", True, lambda: self.value(path))
        elif char == "{":
            self.items("}", False, lambda: self.pair(path))
        else:
            while self.peek() and self.peek() not in ",]}#\n":
                self.pos += 1


def key_lines(text: str) -> Mapping[Path, int]:
    """The first line (from 1) each key path and table is written on in ``text``."""
    scanner = _Scanner(text)
    # On anything it does not follow, keep what was found: line_of falls back to a table.
    with contextlib.suppress(ValueError, IndexError, tomllib.TOMLDecodeError):
        scanner.document()
    return scanner.lines


def line_of(lines: Mapping[Path, int], path: Path) -> int | None:
    """The line of ``path``, else of the closest enclosing table that has one, else ``None``."""
    for size in range(len(path), 0, -1):
        line = lines.get(path[:size])
        if line is not None:
            return line
    return None
