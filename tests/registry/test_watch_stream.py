"""Tests for :mod:`ddiscover.registry.watch_stream`: linear splitting, the cap, the quiet timer."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone

from ddiscover.registry.errors import BodyTooLargeError, MalformedError
from ddiscover.registry.watch_stream import MAX_WATCH_MESSAGE, StreamEndedError, WatchStream


def message(n: int, size: int = 0) -> bytes:
    """One watch line carrying ``n``, padded to about ``size`` bytes."""
    return json.dumps({"result": {"n": n, "pad": "x" * size}}).encode() + b"\n"


class StreamTestCase(SynchronousTestCase):
    """A :class:`WatchStream` on a fake clock and a string transport."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.seen: list[dict[str, Any]] = []
        self.transport = StringTransport()
        self.stream = self.make_stream()

    def make_stream(self, limit: int = MAX_WATCH_MESSAGE) -> WatchStream:
        """A connected stream with ``limit``, quiet after 60 s."""
        stream = WatchStream(self.clock, 60.0, limit, self.seen.append)
        stream.makeConnection(self.transport)
        return stream

    def feed(self, data: bytes, chunk: int) -> None:
        """Deliver ``data`` in pieces of ``chunk`` bytes."""
        for start in range(0, len(data), chunk):
            self.stream.dataReceived(data[start : start + chunk])


class SplitTests(StreamTestCase):
    """Messages are split on newlines wherever the chunks are cut, each byte looked at once."""

    def test_every_cut(self) -> None:
        """Two messages cut at any two points give the same two messages."""
        data = message(1) + message(2)
        for first in range(len(data)):
            for second in range(first, len(data), 7):
                with self.subTest(first=first, second=second):
                    self.seen.clear()
                    stream = self.make_stream()
                    for piece in (data[:first], data[first:second], data[second:]):
                        stream.dataReceived(piece)
                    self.assertEqual([m["result"]["n"] for m in self.seen], [1, 2])

    def test_linear(self) -> None:
        """A 4 MiB message in 16 KiB chunks is scanned once: work equals its size."""
        data = message(1, MAX_WATCH_MESSAGE - 100)
        self.feed(data, 16 * 1024)
        self.assertEqual(len(self.seen), 1)
        self.assertEqual(self.stream.scanned, len(data))
        self.assertNoResult(self.stream.done)

    def test_linear_many_messages(self) -> None:
        """Many small messages, in chunks of any size, are scanned once too."""
        data = b"".join(message(n) for n in range(2000))
        self.feed(data, 1000)
        self.assertEqual([m["result"]["n"] for m in self.seen], list(range(2000)))
        self.assertEqual(self.stream.scanned, len(data))

    def test_last_message_without_newline(self) -> None:
        """etcd 3.4's final object, unterminated, is delivered when the stream ends."""
        self.stream.dataReceived(message(1) + b'{"error":{"message":"bye"}}')
        self.stream.connectionLost(Failure(ResponseDone()))
        self.assertEqual(self.seen[-1], {"error": {"message": "bye"}})
        self.failureResultOf(self.stream.done, StreamEndedError)

    def test_malformed(self) -> None:
        """A line that is not a JSON object ends the stream with MalformedError."""
        self.stream.dataReceived(b"[" * 5000 + b"\n")
        self.failureResultOf(self.stream.done, MalformedError)
        self.assertTrue(self.transport.producerState == "stopped")


class CapTests(StreamTestCase):
    """One message is capped; the cap is on a message, not on the stream."""

    def test_cap(self) -> None:
        """A message over the limit ends the stream, though it came in small pieces."""
        timers = len(self.clock.getDelayedCalls())
        stream = self.make_stream(limit=1000)
        stream.dataReceived(b"x" * 600)
        self.assertNoResult(stream.done)
        stream.dataReceived(b"x" * 401)
        self.failureResultOf(stream.done, BodyTooLargeError)
        self.assertEqual(len(self.clock.getDelayedCalls()), timers)

    def test_at_cap(self) -> None:
        """A message of exactly the limit is read, and many of them make no trouble."""
        line = message(1, 900)
        stream = self.make_stream(limit=len(line) - 1)
        for _ in range(50):
            stream.dataReceived(line)
        self.assertEqual(len(self.seen), 50)
        self.assertNoResult(stream.done)

    def test_default_cap(self) -> None:
        """The cap etcd's clients get is 4 MiB."""
        self.assertEqual(MAX_WATCH_MESSAGE, 4 * 1024 * 1024)


class QuietTests(StreamTestCase):
    """Only a complete message proves the stream alive."""

    def test_trickle(self) -> None:
        """A byte every 30 s never completes a message, so the stream is quiet after 60 s."""
        self.clock.advance(30)
        self.stream.dataReceived(b"{")
        self.clock.advance(29)
        self.stream.dataReceived(b'"')
        self.assertNoResult(self.stream.done)
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(self.stream.done))
        self.assertEqual(self.transport.producerState, "stopped")

    def test_newlines_are_not_messages(self) -> None:
        """Blank lines do not keep a stream alive either."""
        for _ in range(6):
            self.clock.advance(10)
            self.stream.dataReceived(b"\n")
        self.assertIsNone(self.successResultOf(self.stream.done))

    def test_message_rearms(self) -> None:
        """A complete message starts the 60 s over."""
        self.clock.advance(59)
        self.stream.dataReceived(message(1))
        self.clock.advance(59)
        self.assertNoResult(self.stream.done)
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(self.stream.done))
