"""One training at a time per output file (``OUT.lock``)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

#: Lock files held in this process, by the thread that holds each (a nested :func:`training_lock`
#: of that thread, the command line's around the package's, is a no-op).
_HELD: dict[str, int] = {}


def lock_path(out: str | Path) -> Path:
    """The lock file of a training into ``out``: ``OUT.lock`` beside it."""
    return Path(f"{out}.lock")


@contextmanager
def training_lock(out: str | Path):
    """Hold ``OUT.lock`` (:func:`lock_path`) for the ``with`` block: an exclusive OS file lock
    through :mod:`filelock`, released by the system when the process ends however it ends. Two
    trainings into one file would share its checkpoint (``OUT.partial``) and write each other's
    weights; :func:`fit3d.training.priors.train_prior` and
    :func:`fit3d.training.regressor.train_regressor_file` hold it while they train (the command
    line around them, until its checkpoint is removed: nested in one thread, a no-op).

    The empty lock file stays when the block ends: removing it while held (as the command line
    did until 2026-12-06) let a process that had opened it just before the removal lock that
    removed file while a third locked a new one, two trainings at once.

    Raises:
        ValueError: another process (or another training in this one) holds the lock.
    """
    from filelock import FileLock, Timeout

    path = lock_path(out)
    key = str(path.resolve())
    if _HELD.get(key) == threading.get_ident():
        yield
        return
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ValueError(f"another training into {out} is running now ({path} is held): wait for it, or train "
                         "into another file") from None
    _HELD[key] = threading.get_ident()
    try:
        yield
    finally:
        del _HELD[key]
        lock.release()
