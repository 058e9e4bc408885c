"""Runs that must not fit into one folder at the same time.

Shards of one split (``i/n`` and ``j/n``, ``i != j``) fit disjoint images and run side by side;
any other two runs of one folder would fit the same images: twice the work at best, and with
``--overwrite`` and other settings a folder of mixed fits that every later command took for one
run's (found by a trial). Each run holds ``.fit3d-run-<i>-of-<n>.lock`` in the folder while it
fits (an exclusive OS file lock through :mod:`filelock`: a killed run's lock is released by the
system), and refuses to start while a run of an overlapping shard holds one. Other splits' lock
files are probed with a shared lock, which clashes only with a run holding one (an exclusive
probe made starting shards refuse each other); a run takes its own lock waiting up to
:data:`ACQUIRE_SECONDS` for such probes to let go.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger("fit3d.pipeline.run")

_NAME = re.compile(r"^\.fit3d-run-(\d+)-of-(\d+)\.lock$")
#: How long a run waits for its own lock (another process's probe holds it for microseconds; a run
#: holding it holds it for the whole run).
ACQUIRE_SECONDS = 2.0
#: Lock files this process holds (so that :func:`run_lock` nests: NeuralAnnot locks its folders
#: before training, then :func:`fit3d.pipeline.run` locks again).
_HELD: set[str] = set()
#: What a file system without locks raises (filelock 3: NotImplementedError for ENOSYS).
_NO_LOCKS = (OSError, NotImplementedError)


def lock_path(out_dir: Path, shard: tuple[int, int]) -> Path:
    """The lock file of shard ``(i, n)`` (zero-based) of ``out_dir``."""
    i, n = shard
    return Path(out_dir) / f".fit3d-run-{i + 1}-of-{n}.lock"


def _held(path: Path) -> bool:
    """Whether a run holds the lock file ``path``: a shared, non-blocking probe on a read-only
    descriptor (it clashes only with an exclusive holder, never with other probes)."""
    try:
        import fcntl
    except ImportError:  # (no flock: Windows) nothing to tell
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a file system without locks
        return False
    finally:
        os.close(fd)  # (releases the probe)
    return False


def _stale_hint(path: Path) -> str:
    return f"wait for it to end, or give another --out (if no fit3d run is going, delete {path})"


def _overlapping(out_dir: Path, shard: tuple[int, int], include_own: bool):
    """``(path, (j, m))`` of each lock file of ``out_dir`` whose shard overlaps ``shard``: another
    split's, and, with ``include_own``, the same shard's."""
    i, n = shard
    for other in sorted(Path(out_dir).glob(".fit3d-run-*-of-*.lock")):
        m = _NAME.match(other.name)
        if not m:
            continue
        j, m_ = int(m.group(1)), int(m.group(2))
        if m_ != n or (include_own and j == i + 1):
            yield other, (j, m_)


def check_unlocked(out_dir: Path, shard: tuple[int, int]) -> None:
    """What :func:`run_lock` would refuse, without locking anything (``--dry-run``, and so
    ``fit3d submit``'s check before it queues tasks).

    Raises:
        ValueError: a run of an overlapping shard holds its lock in ``out_dir``.
    """
    i, n = shard
    for other, (j, m_) in _overlapping(out_dir, shard, include_own=True):
        if _held(other):
            raise ValueError(f"another fit3d run (shard {j}/{m_}) is fitting into {out_dir}: a run of shard "
                             f"{i + 1}/{n} would be refused: {_stale_hint(other)}")


@contextmanager
def run_lock(out_dir: Path, shard: tuple[int, int]):
    """Hold this run's lock (:func:`lock_path`) for the ``with`` block (nested: a no-op when this
    process holds it already).

    Raises:
        ValueError: another run holds this shard's lock, or a lock of another split of the
            folder (another shard count: its images overlap this run's), naming it.
    """
    i, n = shard
    path = lock_path(out_dir, shard)
    if str(path) in _HELD:
        yield
        return
    own = FileLock(str(path), timeout=ACQUIRE_SECONDS, mode=0o666)
    try:
        own.acquire()
    except Timeout:
        raise ValueError(f"another fit3d run of shard {i + 1}/{n} is fitting into {out_dir} (it holds "
                         f"{path.name}): {_stale_hint(path)}") from None
    except _NO_LOCKS as e:  # e.g. a network file system without locks: run unlocked, as before
        log.warning("cannot lock %s (%s): nothing stops another run from fitting into it at the same time",
                    out_dir, e)
        yield
        return
    _HELD.add(str(path))
    try:
        for other, (j, m_) in _overlapping(out_dir, shard, include_own=False):
            if _held(other):
                raise ValueError(f"another fit3d run (shard {j}/{m_}) is fitting into {out_dir}: its images overlap "
                                 f"this run's (shard {i + 1}/{n}), so both would fit them (with other settings or "
                                 f"--overwrite, into one folder of mixed fits): {_stale_hint(other)}")
        yield
    finally:
        _HELD.discard(str(path))
        own.release()
