"""Stopping a run cleanly on Ctrl-C (SIGINT) or a scheduler's SIGTERM (SLURM preemption)."""

from __future__ import annotations

import contextlib
import signal
import threading


#: The signals that stop a run cleanly.
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised in the run's thread when SIGINT or SIGTERM arrives; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def interruptible():
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` (so the batch in flight
    is abandoned and what is finished is kept); the previous handlers come back afterwards.
    The handlers are swapped with both signals blocked and their restoring is armed first: a
    signal that arrives while the block is being entered raises :class:`Interrupted` from the
    ``with`` statement itself, with the previous handlers back (a review: one between the two
    swaps left this handler installed for the rest of the process). Outside the main thread
    (where Python cannot install handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    old: dict = {}
    try:
        _install(handler, old)
        yield  # (a signal held back while swapping is delivered above, before the block)
    finally:
        _restore(old)


def _install(handler, old: dict) -> None:
    """Install ``handler`` for SIGINT and SIGTERM with both blocked, recording the handlers it
    replaces in ``old`` (filled in place, so that a signal held back meanwhile, delivered as the
    signals are unblocked, finds them recorded for the caller's restore)."""
    with _blocked():
        for s in _SIGNALS:
            old[s] = signal.signal(s, handler)


def _restore(old: dict) -> None:
    """Put ``old`` handlers back with the signals blocked. A signal that lands before they are
    blocked raises :class:`Interrupted` here: the restore is tried again and the signal then goes
    to the handlers put back (a review: it escaped the restore and left fit3d's handler installed)."""
    caught = None
    while True:
        try:
            with _blocked():
                for s, h in old.items():
                    signal.signal(s, h)
            break
        except Interrupted as e:
            caught = e.signum
    if caught is not None:
        signal.raise_signal(caught)


@contextlib.contextmanager
def deferred():
    """Within the block, SIGINT and SIGTERM wait: one is delivered, to the handlers in place
    before it (e.g. :func:`interruptible`'s), when the block ends: SIGTERM when it came (a
    scheduler's preemption), else SIGINT; none when the block raises (its error then stops the
    run). For steps that must happen together, such as writing an image's output and counting
    it (a review: a signal between the two left the run's summary short of a file on disk).
    The handlers are swapped with both signals blocked, so none falls between the two swaps.
    Outside the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old: dict = {}
    _install(lambda signum, frame: caught.append(signum), old)
    completed = False
    try:
        yield
        completed = True
    finally:
        _restore(old)  # (its handler only records: a signal meanwhile raises nothing)
        if caught and completed:  # (a block that raised stops the run with its own error, not as interrupted)
            signal.raise_signal(signal.SIGTERM if signal.SIGTERM in caught else caught[0])


@contextlib.contextmanager
def _blocked():
    """SIGINT and SIGTERM held back (pending, delivered after the block) where the platform can."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
