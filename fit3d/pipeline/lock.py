"""Runs that must not fit into one folder at the same time.

Shards of one split (``i/n`` and ``j/n``, ``i != j``) fit disjoint images and run side by side;
any other two runs of one folder would fit the same images: twice the work at best, and with
``--overwrite`` and other settings a folder of mixed fits that every later command took for one
run's (found by a trial). Each run holds ``.fit3d-run-<i>-of-<n>.lock`` in the folder while it
fits (an OS file lock through :mod:`filelock`: a killed run's lock is released by the system),
and refuses to start while a run of an overlapping shard holds one.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger("fit3d.pipeline.run")

_NAME = re.compile(r"^\.fit3d-run-(\d+)-of-(\d+)\.lock$")


def lock_path(out_dir: Path, shard: tuple[int, int]) -> Path:
    """The lock file of shard ``(i, n)`` (zero-based) of ``out_dir``."""
    i, n = shard
    return Path(out_dir) / f".fit3d-run-{i + 1}-of-{n}.lock"


def _held(path: Path) -> bool:
    """Whether another process holds the lock file ``path`` (probed without waiting)."""
    probe = FileLock(str(path), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return True
    except OSError:  # a file system without locks: nothing to tell
        return False
    probe.release()
    return False


@contextmanager
def run_lock(out_dir: Path, shard: tuple[int, int]):
    """Hold this run's lock (:func:`lock_path`) for the ``with`` block.

    Raises:
        ValueError: another run holds this shard's lock, or a lock of another split of the
            folder (another shard count: its images overlap this run's), naming it.
    """
    i, n = shard
    own = FileLock(str(lock_path(out_dir, shard)), timeout=0)
    try:
        own.acquire()
    except Timeout:
        raise ValueError(f"another fit3d run of shard {i + 1}/{n} is fitting into {out_dir} (it holds "
                         f"{lock_path(out_dir, shard).name}): wait for it to end, or give another --out") from None
    except OSError as e:  # e.g. a network file system without locks: run unlocked, as before
        log.warning("cannot lock %s (%s): nothing stops another run from fitting into it at the same time",
                    out_dir, e)
        yield
        return
    try:
        for other in sorted(Path(out_dir).glob(".fit3d-run-*-of-*.lock")):
            m = _NAME.match(other.name)
            if not m or other.name == lock_path(out_dir, shard).name:
                continue
            j, m_ = int(m.group(1)), int(m.group(2))
            if m_ != n and _held(other):
                raise ValueError(f"another fit3d run (shard {j}/{m_}) is fitting into {out_dir}: its images overlap "
                                 f"this run's (shard {i + 1}/{n}), so both would fit them (with other settings or "
                                 "--overwrite, into one folder of mixed fits): wait for it to end, or give another "
                                 "--out")
        yield
    finally:
        own.release()
