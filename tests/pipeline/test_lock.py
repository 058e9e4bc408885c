import pytest
from filelock import FileLock

from fit3d.data.readers import read_coco
from fit3d.pipeline import RunConfig, run
from fit3d.pipeline.lock import check_unlocked, lock_path, run_lock


def test_runs_of_overlapping_shards_do_not_fit_into_one_folder_at_once(tmp_path):
    """Found by a trial: a second run (with --overwrite and other settings) started while the first was
    fitting left a folder of mixed fits that merge, export and a rerun all took for one run's (exit 0);
    two identical runs did all the work twice. Shards of one split still run side by side."""
    out = tmp_path / "fits"
    out.mkdir()
    with run_lock(out, (0, 1)):  # a whole-folder run leaves its lock file behind
        pass
    other_process = FileLock(str(lock_path(out, (0, 2))), timeout=0)  # shard 1/2 is fitting
    other_process.acquire()
    try:
        with run_lock(out, (1, 2)):  # 2/2 beside it: other images (the 1/1 file left behind is no run)
            with run_lock(out, (1, 2)):  # nested in one process (NeuralAnnot locks, then run() again)
                pass
        for other in ((0, 2), (0, 1), (2, 3)):  # the same shard, the whole folder, another split
            with pytest.raises(ValueError, match="is fitting into.*if no fit3d run is going, delete"):
                with run_lock(out, other):
                    pass
            with pytest.raises(ValueError, match="would be refused"):  # what --dry-run says
                check_unlocked(out, other)
        check_unlocked(out, (1, 2))
    finally:
        other_process.release()
    with run_lock(out, (0, 1)):  # once it ended, the folder is free
        pass


def test_starting_shards_do_not_refuse_each_other(tmp_path):
    """Found by a review: probing another split's lock file with an exclusive lock made shards that
    started together refuse each other (12 of 160 starts); probes are shared now."""
    import subprocess
    import sys

    out = tmp_path / "fits"
    out.mkdir()
    with run_lock(out, (0, 1)):
        pass
    # every process imports, says it is ready, then all start together once all six are ready (a review:
    # a fixed start time could pass before a slow machine had started them, testing no race)
    code = ("import sys, time; from pathlib import Path; from fit3d.pipeline.lock import run_lock\n"
            "out, i, gate = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])\n"
            "(gate / f'ready{i}').touch()\n"
            "end = time.time() + 60\n"
            "while len(list(gate.glob('ready*'))) < 6 and time.time() < end: time.sleep(0.005)\n"
            "with run_lock(out, (i, 6)): time.sleep(0.5)\n")
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out), str(i), str(gate)], stderr=subprocess.PIPE)
             for i in range(6)]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors


def test_run_refuses_a_folder_another_run_of_its_shard_holds(tmp_path, sample_copy, anny_model, fast_fitter):
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    out.mkdir()
    held = FileLock(str(lock_path(out, (0, 1))), timeout=0)  # (another process's lock, as the OS sees it)
    held.acquire()
    try:
        with pytest.raises(ValueError, match="shard 1/1 is fitting into"):
            run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
        assert not list(out.glob("*.npz"))
    finally:
        held.release()
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    assert s["this_run"]["images_written"] >= 3
