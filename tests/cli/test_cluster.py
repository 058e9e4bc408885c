import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from fit3d.cli.main import cli
from fit3d.pipeline.merge import merge_fits


def test_submit_local_jobs_then_merge_equals_one_run(tmp_path, sample_dir, anny_model):
    common = ["--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"), "--steps", "10",
              "--no-progress"]
    r = CliRunner().invoke(cli, ["eft", *common, "--out", str(tmp_path / "one")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["submit", "eft", *common, "--out", str(tmp_path / "many"), "--jobs", "3",
                                 "--cluster", "local", "--logs", str(tmp_path / "logs")])
    assert r.exit_code == 0, r.output
    assert "3 task(s) finished: 3 exit 0" in r.output and "submitted 3 task(s) of 'fit3d eft'" in r.output
    assert len(list((tmp_path / "many").glob("summary.shard-*-of-3.json"))) == 3
    r = CliRunner().invoke(cli, ["merge", "--fits", str(tmp_path / "many")])
    assert r.exit_code == 0 and "merged 14 people (12 fitted" in r.output, r.output
    a, _ = merge_fits(tmp_path / "one")
    b = dict(np.load(tmp_path / "many" / "dataset.npz"))
    order = lambda d: np.lexsort((d["annot_id"], d["image"]))  # noqa: E731
    ia, ib = order(a), order(b)
    np.testing.assert_array_equal(a["annot_id"][ia], b["annot_id"][ib])
    np.testing.assert_allclose(a["body_pose"][ia], b["body_pose"][ib], atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(a["transl"][ia], b["transl"][ib], atol=1e-4, equal_nan=True)


def test_submit_refuses_what_it_sets_itself(tmp_path, sample_dir):
    r = CliRunner().invoke(cli, ["submit", "eft", "--images", str(sample_dir), "--out", str(tmp_path / "o"),
                                 "--shard", "1/2", "--cluster", "local", "--logs", str(tmp_path / "logs")])
    assert r.exit_code == 2 and "leave it out" in r.output
    r = CliRunner().invoke(cli, ["submit", "neuralannot", "--images", str(sample_dir), "--out", str(tmp_path / "o"),
                                 "--jobs", "2", "--cluster", "local", "--logs", str(tmp_path / "logs")])
    assert r.exit_code == 2 and "--ranks" in r.output
    # SLURM's settings with local tasks: every task started at once, --max-parallel ignored (a scale trial)
    r = CliRunner().invoke(cli, ["submit", "eft", "--images", str(sample_dir), "--out", str(tmp_path / "o"),
                                 "--jobs", "3", "--max-parallel", "1", "--cluster", "local", "--no-check",
                                 "--logs", str(tmp_path / "logs")])
    assert r.exit_code == 2 and "--max-parallel applies to SLURM only" in r.output and not (tmp_path / "logs").exists()
    from fit3d.pipeline.submit import SubmitConfig

    with pytest.raises(ValueError, match="--slurm-partition, --slurm-arg apply to SLURM only"):
        SubmitConfig(jobs=2, cluster="local", partition="gpu", slurm_args={"account": "a"})


def test_submit_neuralannot_runs_one_job_of_two_ranks(tmp_path, sample_dir):
    out = tmp_path / "na"
    r = CliRunner().invoke(cli, ["submit", "neuralannot", "--images", str(sample_dir), "--annotations",
                                 str(sample_dir / "test_coco.json"), "--out", str(out), "--epochs", "1", "--recipes",
                                 "pretrain", "--no-progress", "--cluster", "local", "--ranks", "2", "--logs",
                                 str(tmp_path / "logs")])
    assert r.exit_code == 0 and "2 task(s) finished: 2 exit 0" in r.output, r.output
    assert "submitted 1 job(s) of 2 tasks (ranks) of 'fit3d neuralannot'" in r.output  # not "1 task(s)", then 2
    assert (out / "annotator.pt").is_file() and len(list(out.glob("*.npz"))) == 4
    assert len(list(out.glob("summary.shard-*-of-2.json"))) == 2  # each rank annotated its share


def test_submit_reports_a_task_error_and_a_missing_cluster(tmp_path, sample_dir):
    r = CliRunner().invoke(cli, ["submit", "eft", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"),
                                 "--jobs", "2", "--cluster", "local", "--logs", str(tmp_path / "jobs"), "--no-check"])
    assert r.exit_code == 2, r.output  # each task's usage error, with its exit code
    assert "is not a folder" in r.output and "(log: " in r.output
    logs = [f.read_text() for f in (tmp_path / "jobs").rglob("*.err")]
    assert len(logs) == 2 and all("this task's fit3d command exited 2" in t for t in logs)  # not just "completed"
    if shutil.which("srun") is None:  # no SLURM on this machine: one line saying so, no traceback
        import fit3d.pipeline.submit

        def no_precheck(*a, **kw):
            raise AssertionError("the pre-check ran before the cluster was checked")

        with pytest.MonkeyPatch.context() as mp:  # the cluster is checked first (the pre-check takes a while)
            mp.setattr(fit3d.pipeline.submit, "precheck", no_precheck)
            r = CliRunner().invoke(cli, ["submit", "eft", "--images", str(sample_dir), "--annotations",
                                         str(sample_dir / "test_coco.json"), "--out", str(tmp_path / "o"),
                                         "--logs", str(tmp_path / "jobs2")])
        assert r.exit_code == 1 and "no slurm cluster here" in r.output and "--cluster local" in r.output
        assert isinstance(r.exception, SystemExit) and not (tmp_path / "jobs2").exists()


def test_submit_checks_the_command_before_queueing(tmp_path, sample_dir):
    logs = tmp_path / "jobs"
    r = CliRunner().invoke(cli, ["submit", "eft", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"),
                                 "--jobs", "2", "--cluster", "local", "--logs", str(logs)])
    assert r.exit_code == 2 and "is not a folder" in r.output and "nothing submitted" in r.output, r.output
    assert not logs.exists()  # no task was queued
    # an output folder fitted with other settings: every task would refuse; the check says so once
    out = tmp_path / "fits"
    out.mkdir()
    (out / "fit_settings.json").write_text(json.dumps({"fitter": "eft", "flip": False}))
    (out / "img.jpg.npz").write_bytes(b"")
    r = CliRunner().invoke(cli, ["submit", "eft", "--images", str(sample_dir), "--annotations",
                                 str(sample_dir / "test_coco.json"), "--out", str(out), "--jobs", "2", "--cluster",
                                 "local", "--logs", str(logs)])
    assert r.exit_code == 1 and "flip: False there, True now" in r.output and "nothing submitted" in r.output, r.output
    assert not logs.exists()


def test_submit_queues_an_array_whose_first_shard_has_nothing_to_fit(tmp_path, sample_dir, monkeypatch):
    """The pre-check is the first task's dry run, which exits 4 when its shard has nothing to fit;
    the array was then refused whole, and the other shard's people never fitted (a review)."""
    import fit3d.pipeline.submit
    from fit3d.pipeline.selection import in_shard
    from fit3d.pipeline.submit import precheck_passes

    data = json.loads((sample_dir / "test_coco.json").read_text())
    empty = {i["id"] for i in data["images"] if in_shard(i["file_name"], (0, 2))}
    for a in data["annotations"]:
        if a["image_id"] in empty:
            a["keypoints"], a["num_keypoints"] = [0] * 51, 0
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    queued = []
    monkeypatch.setattr(fit3d.pipeline.submit, "submit", lambda command, options, config, entry: queued.append(
        (command, config.jobs)) or [])
    r = CliRunner().invoke(cli, ["submit", "eft", "--images", str(sample_dir), "--annotations", str(ann), "--out",
                                 str(tmp_path / "o"), "--jobs", "2", "--cluster", "local", "--logs", str(tmp_path / "j")])
    assert r.exit_code == 0 and queued == [("eft", 2)], r.output
    assert [precheck_passes(c, j) for c, j in ((0, 1), (3, 1), (4, 1), (4, 2), (5, 2), (2, 2), (None, 1))] == [
        True, True, False, True, False, False, True]
