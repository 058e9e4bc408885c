"""Stopping a run cleanly on Ctrl-C (SIGINT) or a scheduler's SIGTERM (SLURM preemption)."""

from __future__ import annotations

import contextlib
import signal
import threading


class Interrupted(Exception):
    """Raised in the run's thread when SIGINT or SIGTERM arrives; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def interruptible():
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` (so the batch in flight
    is abandoned and what is finished is kept); the previous handlers come back afterwards.
    Outside the main thread (where Python cannot install handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
