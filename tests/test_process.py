"""Tests for :mod:`ddiscover.process`: fd limit, GC freeze and SIGTERM, on the real process."""

import gc
import os
import resource
import signal

from twisted.trial.unittest import SynchronousTestCase

from ddiscover.process import freeze_startup_objects, raise_fd_limit, stop_gracefully_on_sigterm


class _Calls:
    """Records callFromThread calls, which the signal handler must use."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def callFromThread(self, f: object, *args: object, **kwargs: object) -> None:  # noqa: N802
        self.calls.append(f)


class RaiseFdLimitTests(SynchronousTestCase):
    """The soft open-files limit is raised to the hard one."""

    def test_raises_soft_to_hard(self) -> None:
        """A lowered soft limit comes back up to the hard limit."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        self.assertEqual(raise_fd_limit(), hard)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE), (hard, hard))


class FreezeTests(SynchronousTestCase):
    """Objects alive at startup leave the collector's generations; later ones do not."""

    def test_freeze(self) -> None:
        self.addCleanup(gc.unfreeze)
        before: list[object] = []
        freeze_startup_objects()
        after: list[object] = []
        self.assertGreater(gc.get_freeze_count(), 0)
        tracked = gc.get_objects()
        self.assertFalse(any(each is before for each in tracked))
        self.assertTrue(any(each is after for each in tracked))


class SigtermTests(SynchronousTestCase):
    """SIGTERM stops the reactor once, from the signal handler, without recording the signal."""

    def test_stop_once(self) -> None:
        """The first SIGTERM schedules a stop; a second one does not schedule another."""
        previous = signal.getsignal(signal.SIGTERM)
        self.addCleanup(signal.signal, signal.SIGTERM, previous)
        reactor = _Calls()
        stops: list[None] = []
        stop_gracefully_on_sigterm(reactor, lambda: stops.append(None))  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        self.assertEqual(len(reactor.calls), 1)
        stop = reactor.calls[0]
        assert callable(stop)
        stop()
        self.assertEqual(stops, [None])
