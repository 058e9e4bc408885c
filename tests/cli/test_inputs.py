"""Issue 12 from the command line: other keypoint layouts, exit codes, --dry-run, SIGTERM."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fit3d.cli.main import cli


@pytest.fixture()
def fast_schedule(schedule_file):
    return schedule_file(4)


DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("name", ["crowdpose_style.json", "mpii_style.json"])
def test_other_layouts_are_read_by_name_and_fitted(tmp_path, sample_dir, anny_model, fast_schedule, name):
    """tests/data/{crowdpose,mpii}_style.json: the bundled sample in CrowdPose-14 / MPII-16 layouts,
    names spelled as those datasets do (head, neck; r ankle, upper neck, ...)."""
    from fit3d.data.readers import read_coco
    from fit3d.pipeline.skips import usable_keypoints

    images, _ = read_coco(DATA / name, sample_dir)
    expected = sum(usable_keypoints(p, anny_model.keypoint_convention)[0] >= 6 for r in images for p in r.people)
    out = tmp_path / "fits"
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--annotations", str(DATA / name),
                                 "--out", str(out), "--schedule", str(fast_schedule), "--no-progress"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert expected >= 10 and s["this_run"]["people_fitted"] == expected  # every person with >= 6 usable points
    notes = [p for p in s["input_problems"] if p["source"].startswith("keypoint layout")]
    assert len(notes) == 1 and notes[0]["severity"] == "warning" and "12 of" in notes[0]["reason"]
    assert "head_top" in notes[0]["reason"]
    assert r.output.count("fit3d: warning: keypoint layout") == 1  # said on the terminal too, once
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--annotations", str(DATA / name),
                                 "--out", str(tmp_path / "dry"), "--dry-run"])
    assert r.output.count("fit3d: warning: keypoint layout") == 1 and "1 warning (dry run" in r.output


def test_a_layout_the_model_cannot_use_stops_before_writing(tmp_path, sample_dir):
    data = json.loads((sample_dir / "test_coco.json").read_text())
    data["categories"] = [dict(id=1, name="hand", keypoints=[f"finger_{i}" for i in range(17)])]
    ann = tmp_path / "hands.json"
    ann.write_text(json.dumps(data))
    out = tmp_path / "fits"
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--annotations", str(ann), "--out", str(out)])
    assert r.exit_code == 1 and "share no name" in r.output and "Traceback" not in r.output
    assert not out.exists() or not any(out.iterdir())


def test_all_images_missing_is_not_success(tmp_path, sample_dir, fast_schedule):
    ann = tmp_path / "ann.json"
    shutil.copy(sample_dir / "test_coco.json", ann)
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(cli, ["smplify", "--images", str(tmp_path / "empty"), "--annotations", str(ann),
                                 "--out", str(tmp_path / "fits"), "--schedule", str(fast_schedule), "--no-progress"])
    assert r.exit_code == 4, r.output
    s = json.loads((tmp_path / "fits" / "summary.json").read_text())
    assert s["this_run"]["input_errors"] == 4 and s["this_run"]["exit_meaning"] == "nothing was fitted"


def test_openpose_files_without_people_are_counted(tmp_path, sample_dir, fast_schedule):
    kdir = tmp_path / "openpose"
    kdir.mkdir()
    for im in sorted(sample_dir.glob("*.jpg")):
        (kdir / f"{im.stem}_keypoints.json").write_text(json.dumps({"version": 1.3, "people": []}))
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--keypoints", str(kdir),
                                 "--out", str(tmp_path / "fits"), "--schedule", str(fast_schedule), "--no-progress"])
    assert r.exit_code == 4, r.output  # nothing to fit is not a success...
    s = json.loads((tmp_path / "fits" / "summary.json").read_text())["this_run"]
    assert s["images"] == 4 and s["images_without_people"] == 4  # ...but every file is counted
    assert "4 without people" in r.output


def test_an_output_folder_inside_the_openpose_folder_is_refused(tmp_path, sample_dir):
    """Every JSON file under --keypoints is read as keypoints: fits written there made each later
    run report fit3d's own summary and settings files as corrupt OpenPose files, exit 3 (a trial)."""
    kdir = tmp_path / "openpose"
    kdir.mkdir()
    (kdir / "000000000785_keypoints.json").write_text(json.dumps({"version": 1.3, "people": []}))
    for out in (kdir, kdir / "fits"):
        for command in ("smplify", "neuralannot"):
            r = CliRunner().invoke(cli, [command, "--images", str(sample_dir), "--keypoints", str(kdir),
                                         "--out", str(out), "--no-progress"])
            assert r.exit_code == 2 and "choose an output folder outside it" in r.output, r.output
    assert sorted(p.name for p in kdir.iterdir()) == ["000000000785_keypoints.json"]  # nothing written


def test_dry_run_reads_everything_and_fits_nothing(tmp_path, sample_dir):
    out = tmp_path / "fits"
    r = CliRunner().invoke(cli, ["eft", "--images", str(sample_dir), "--annotations",
                                 str(sample_dir / "test_coco.json"), "--out", str(out), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "14 people: 12 with at least 6 usable keypoints (not all collinear) would be fitted, 2 skipped" in r.output
    assert "this job" not in r.output  # (the whole input)
    assert not out.exists()
    r = CliRunner().invoke(cli, ["eft", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"),
                                 "--out", str(out), "--dry-run", "--shard", "2/2", "--limit", "1"])
    assert r.exit_code == 0 and "this job (shard 2/2, --limit 1): 1 image, 0 already done" in r.output, r.output
    shutil.copytree(sample_dir, tmp_path / "images")
    (tmp_path / "images" / "000000000785.jpg").unlink()
    r = CliRunner().invoke(cli, ["eft", "--images", str(tmp_path / "images"), "--out", str(out), "--dry-run",
                                 "--annotations", str(sample_dir / "test_coco.json")])
    assert r.exit_code == 3 and "problem: " in r.output and "000000000785.jpg: image file not found" in r.output
    # an output folder the run could not create: the dry run says so (it used to pass, then every run failed)
    (tmp_path / "a_file").write_text("")
    r = CliRunner().invoke(cli, ["eft", "--images", str(sample_dir), "--annotations",
                                 str(sample_dir / "test_coco.json"), "--out", str(tmp_path / "a_file" / "fits"),
                                 "--dry-run"])
    assert r.exit_code == 1 and "a_file is not a folder" in r.output, r.output
    assert isinstance(r.exception, SystemExit)  # a clean error, not an exception escaping the command



def test_dry_run_names_the_outputs_a_run_would_remove(tmp_path, sample_dir):
    """An image whose annotations were all removed loses its output in a run: the dry run says
    so (it did not) and removes nothing."""
    data = json.loads((sample_dir / "test_coco.json").read_text())
    gone = next(i for i in data["images"] if i["file_name"] == "000000000785.jpg")["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != gone]
    ann = tmp_path / "corrected.json"
    ann.write_text(json.dumps(data))
    out = tmp_path / "fits"
    out.mkdir()
    stale = out / "000000000785.jpg.npz"  # an earlier run's fit of that image
    np.savez(stale, annot_id=np.array([7]), input_digest=np.str_("from earlier annotations"))
    r = CliRunner().invoke(cli, ["eft", "--images", str(sample_dir), "--annotations", str(ann), "--out", str(out),
                                 "--dry-run"])
    assert r.exit_code == 0, r.output
    assert ("1 image no longer annotated with people (e.g. 000000000785.jpg) had fits of earlier inputs: "
            "its output would be removed") in r.output
    assert stale.is_file()

@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message of a CPU-only torch")
def test_cuda_without_cuda_is_one_clear_line(tmp_path, sample_dir):
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--out", str(tmp_path / "o"),
                                 "--device", "cuda"])
    assert r.exit_code == 2 and "--force-reinstall" in r.output and "Traceback" not in r.output
    fits = tmp_path / "fits"  # fit3d render too (it was exit 1, from the model's build)
    fits.mkdir()
    r = CliRunner().invoke(cli, ["render", "--fits", str(fits), "--images", str(sample_dir), "--out",
                                 str(tmp_path / "r"), "--device", "cuda"])
    assert r.exit_code == 2 and "--force-reinstall" in r.output and "Traceback" not in r.output


def test_sigterm_keeps_finished_images_and_the_rerun_completes(tmp_path, sample_dir, anny_model, schedule_file):
    """A real process, a real signal: finished images are kept, exit 143, the rerun fits the rest,
    and the outputs are those of one uninterrupted run."""
    sched = schedule_file(30)  # slow enough to be caught mid-run
    out = tmp_path / "fits"
    cmd = [sys.executable, "-m", "fit3d.cli.main", "smplify", "--images", str(sample_dir), "--annotations",
           str(sample_dir / "test_coco.json"), "--out", str(out), "--schedule", str(sched), "--batch-size", "1",
           "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("*.npz")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[0]  # still running with one image written
        proc.send_signal(signal.SIGTERM)
        text = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, text
    assert "run the same command again to resume" in text
    done = sorted(p.name for p in out.glob("*.npz"))
    assert 1 <= len(done) < 4
    assert not list(out.glob("**/.*.tmp"))  # no half-written file
    s = json.loads((out / "summary.json").read_text())["this_run"]
    assert s["interrupted"] and s["exit_code"] == 143
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    s = json.loads((out / "summary.json").read_text())["this_run"]
    assert s["images_already_done"] == len(done) and len(list(out.glob("*.npz"))) == 4
    # the same outputs as one uninterrupted run
    ref = tmp_path / "ref"
    r = CliRunner().invoke(cli, cmd[cmd.index("smplify"):cmd.index("--out")] + ["--out", str(ref), "--schedule",
                                                                              str(sched), "--no-progress"])
    assert r.exit_code == 0, r.output
    for f in ref.glob("*.npz"):
        a, b = np.load(f), np.load(out / f.name)
        assert list(a["annot_id"]) == list(b["annot_id"]) and list(a["status"]) == list(b["status"])
        np.testing.assert_allclose(a["body_pose"], b["body_pose"], atol=1e-4, equal_nan=True)
        np.testing.assert_allclose(a["transl"], b["transl"], atol=1e-4, equal_nan=True)


def test_a_flood_of_input_problems_is_shown_up_to_a_limit(tmp_path, sample_dir):
    from fit3d.cli.fit import SHOWN_PROBLEMS

    data = json.loads((sample_dir / "test_coco.json").read_text())
    ghost = dict(data["annotations"][0], image_id=987654321)  # annotations of an image that is not listed
    data["annotations"] += [dict(ghost, id=10**9 + i) for i in range(SHOWN_PROBLEMS + 30)]
    ann = tmp_path / "many.json"
    ann.write_text(json.dumps(data))
    r = CliRunner().invoke(cli, ["eft", "--images", str(sample_dir), "--annotations", str(ann), "--out",
                                 str(tmp_path / "o"), "--dry-run"])
    shown = [line for line in r.output.splitlines() if line.startswith("fit3d: input problem")]
    assert len(shown) == SHOWN_PROBLEMS, r.output  # one problem per annotation, the first 50 shown
    assert "fit3d: ... and 30 more (30 input problems, 0 warnings) not shown" in r.output


def test_sigterm_before_fitting_starts_is_one_line_and_exit_143(tmp_path, sample_dir, monkeypatch, capsys):
    """Found by a new user's trial: SIGTERM while the inputs were read killed the process in silence
    (Ctrl-C there said "interrupted"): the console script's main() now says so and exits 143."""
    import fit3d.cli.main as main

    def reading(*args, **kwargs):  # the signal arrives while the annotations are read
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr("fit3d.data.readers.load_inputs", reading)
    monkeypatch.setattr(sys, "argv", ["fit3d", "smplify", "--images", str(sample_dir), "--out", str(tmp_path / "o")])
    old = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stop:
            main.main()  # installs its own SIGTERM handler, as the console script runs it
    finally:
        signal.signal(signal.SIGTERM, old)
    assert stop.value.code == 143 and "fit3d: terminated (SIGTERM)" in capsys.readouterr().err


def test_dry_run_says_a_run_would_be_refused_while_another_fits(tmp_path, sample_dir):
    """A review: --dry-run (and so fit3d submit's check before queueing) did not look at the run locks."""
    from filelock import FileLock

    from fit3d.pipeline.lock import lock_path

    out = tmp_path / "fits"
    out.mkdir()
    running = FileLock(str(lock_path(out, (0, 1))), timeout=0)  # a whole-folder run is fitting
    running.acquire()
    try:
        r = CliRunner().invoke(cli, ["eft", "--images", str(sample_dir), "--annotations",
                                     str(sample_dir / "test_coco.json"), "--out", str(out), "--dry-run",
                                     "--shard", "1/2"])
    finally:
        running.release()
    assert r.exit_code == 1 and "another fit3d run (shard 1/1) is fitting into" in r.output, r.output


def test_a_dry_run_exits_as_its_shard_would(tmp_path, sample_dir, schedule_file):
    """The dry run's exit code is the run's rule for this job (it was 0 for a shard with nothing to
    fit whenever another shard had people; the run then exited 4)."""
    from fit3d.pipeline.selection import in_shard

    data = json.loads((sample_dir / "test_coco.json").read_text())
    empty = {i["id"] for i in data["images"] if in_shard(i["file_name"], (0, 2))}
    assert empty and len(empty) < len(data["images"])
    for a in data["annotations"]:
        if a["image_id"] in empty:  # shard 1/2's people have no labelled keypoint
            a["keypoints"], a["num_keypoints"] = [0] * 51, 0
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    args = ["eft", "--images", str(sample_dir), "--annotations", str(ann), "--out", str(tmp_path / "fits")]
    codes = [CliRunner().invoke(cli, args + ["--dry-run", "--shard", f"{i}/2"]).exit_code for i in (1, 2)]
    assert codes == [4, 0]
    r = CliRunner().invoke(cli, args + ["--shard", "1/2", "--steps", "1", "--no-progress"])
    assert r.exit_code == 4, r.output  # what the run does


def test_a_source_given_to_the_other_option_is_pointed_to_the_right_one(tmp_path, sample_dir):
    """A trial: an OpenPose folder given as --annotations got click's 'is a directory', a COCO file
    as --keypoints 'is a file', an OpenPose file as --annotations 'not a COCO annotation file'."""
    kdir = tmp_path / "openpose"
    kdir.mkdir()
    (kdir / "a_keypoints.json").write_text(json.dumps({"version": 1.3, "people": []}))
    base = ["--images", str(sample_dir), "--out", str(tmp_path / "o")]
    for command in ("eft", "neuralannot"):
        r = CliRunner().invoke(cli, [command, *base, "--annotations", str(kdir)])
        assert r.exit_code == 2 and "goes to --keypoints DIR" in r.output, r.output
        r = CliRunner().invoke(cli, [command, *base, "--keypoints", str(sample_dir / "test_coco.json")])
        assert r.exit_code == 2 and "goes to --annotations FILE" in r.output, r.output
    r = CliRunner().invoke(cli, ["eft", *base, "--annotations", str(kdir / "a_keypoints.json")])
    assert r.exit_code == 1 and "it is an OpenPose keypoint file" in r.output and "--keypoints DIR" in r.output
