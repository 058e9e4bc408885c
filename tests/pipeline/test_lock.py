import pytest
from filelock import FileLock

from fit3d.data.readers import read_coco
from fit3d.pipeline import RunConfig, run
from fit3d.pipeline.lock import lock_path, run_lock


def test_runs_of_overlapping_shards_do_not_fit_into_one_folder_at_once(tmp_path):
    """Found by a trial: a second run (with --overwrite and other settings) started while the first was
    fitting left a folder of mixed fits that merge, export and a rerun all took for one run's (exit 0);
    two identical runs did all the work twice. Shards of one split still run side by side."""
    out = tmp_path / "fits"
    out.mkdir()
    with run_lock(out, (0, 2)):  # shard 1/2 is fitting
        with run_lock(out, (1, 2)):  # 2/2 beside it: other images
            pass
        for other in ((0, 2), (0, 1), (2, 3)):  # the same shard, the whole folder, another split
            with pytest.raises(ValueError, match="is fitting into"):
                with run_lock(out, other):
                    pass
    with run_lock(out, (0, 1)):  # once it ended, the folder is free
        pass


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
