import threading

import pytest
from filelock import FileLock

from fit3d.training.lock import lock_path, training_lock


def test_one_training_at_a_time_per_output_file_also_from_python(tmp_path):
    """The lock lived in the command line: two notebooks training into one file shared its checkpoint.
    The package's trainings hold it; the command line's hold around theirs nests."""
    from fit3d.training.priors import train_prior

    out = tmp_path / "gmm.pt"
    with FileLock(str(lock_path(out)), timeout=0):  # another process trains into it
        with pytest.raises(ValueError, match="another training into .*gmm.pt is running now"):
            train_prior("gmm", tmp_path / "no_poses.npz", out)
    assert not out.exists()
    with training_lock(out):
        with training_lock(out):  # nested in one thread: a no-op
            pass
        refused = []

        def other():
            try:
                with training_lock(out):
                    pass
            except ValueError as e:
                refused.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(refused) == 1  # another thread of this process is another training
    with training_lock(out):  # free again
        pass


def test_the_lock_file_stays_and_a_removed_one_is_not_taken_twice(tmp_path):
    """Removing OUT.lock while held (the command line did) let a process that had opened the old file
    lock it while a later one locked a new file: the file now stays, so every process locks one file."""
    out = tmp_path / "r.pt"
    with training_lock(out):
        assert lock_path(out).is_file()
    assert lock_path(out).is_file()
    first = FileLock(str(lock_path(out)), timeout=0)
    first.acquire()
    try:
        with pytest.raises(ValueError, match="is held"):
            with training_lock(out):
                pass
    finally:
        first.release()
