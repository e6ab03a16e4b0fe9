"""Clipping outside text for logs and the stats page."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.text import CLIP, clip


class ClipTests(SynchronousTestCase):
    """Short text is kept; long text is cut and says its size."""

    def test_short_kept(self) -> None:
        """Text up to the limit comes back unchanged."""
        self.assertEqual(clip("10.0.0.1:80"), "10.0.0.1:80")
        self.assertEqual(clip("x" * CLIP), "x" * CLIP)

    def test_long_cut_with_size(self) -> None:
        """A 1 MB value becomes its first characters and its size in bytes."""
        self.assertEqual(clip("x" * 10**6), "x" * CLIP + "... (1000000 bytes)")

    def test_size_in_utf8_bytes(self) -> None:
        """The size is counted as the registry stores the value: in UTF-8 bytes."""
        self.assertEqual(clip("é" * 5, limit=2), "éé... (10 bytes)")
