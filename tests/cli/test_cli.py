import json
import shutil

from click.testing import CliRunner

from fit3d.cli.main import cli


def test_help_lists_commands_and_options():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "smplify" in r.output
    r = CliRunner().invoke(cli, ["smplify", "--help"])
    for opt in ("--images", "--annotations", "--keypoints", "--out", "--model", "--model-path", "--device",
                "--batch-size", "--focal-length", "--limit", "--shard", "--overwrite", "--prior", "--schedule"):
        assert opt in r.output


def test_smplify_cli_on_bundled_sample(tmp_path, sample_dir, anny_model):
    images = tmp_path / "coco" / "val2017"
    shutil.copytree(sample_dir, images)
    shutil.move(images / "test_coco.json", tmp_path / "coco" / "person_keypoints_val2017.json")
    sched = tmp_path / "fast.json"
    r = CliRunner().invoke(cli, ["print-schedule"])
    stages = json.loads(r.output)
    for s in stages:
        s["iterations"] = 5
    sched.write_text(json.dumps(stages))
    out = tmp_path / "fits"
    args = ["smplify", "--images", str(images), "--out", str(out), "--schedule", str(sched), "--no-progress", "--limit", "2"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "using annotations" in r.output and "person_keypoints_val2017.json" in r.output
    assert len(list(out.glob("*.npz"))) == 2
    r = CliRunner().invoke(cli, args[:-2])  # resume: the 2 done are skipped
    assert r.exit_code == 0 and "(2 already done)" in r.output
    assert len(list(out.glob("*.npz"))) == 4


def test_cli_errors_are_clear(tmp_path, sample_dir):
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "person_keypoints_" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--annotations", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "corrupt COCO JSON" in r.output
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"),
                                 "--out", str(tmp_path / "o"), "--model", "smpl"])
    assert r.exit_code != 0 and "smpl.is.tue.mpg.de" in r.output


def test_eft_cli_on_bundled_sample(tmp_path, sample_dir, anny_model):
    out = tmp_path / "fits"
    args = ["eft", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"), "--out", str(out),
            "--no-progress", "--steps", "5"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    import numpy as np

    files = sorted(out.glob("*.npz"))
    assert len(files) == 4
    d = np.load(files[0])
    assert str(d["fitter"]) == "eft" and (d["iterations"][d["status"] == "fitted"] == 5).all()
    s = json.loads((out / "summary.json").read_text())
    assert s["fitted"] == 12 and s["fitter"] == "eft"


def test_train_and_benchmark_commands_exist():
    for cmd in (["train-prior", "--help"], ["train-regressor", "--help"], ["prepare-mocap", "--help"],
                ["benchmark", "make", "--help"], ["benchmark", "run", "--help"], ["evaluate", "--help"],
                ["render", "--help"], ["report", "--help"]):
        r = CliRunner().invoke(cli, cmd)
        assert r.exit_code == 0, (cmd, r.output)


def test_neuralannot_cli_on_bundled_sample(tmp_path, sample_dir):
    images = tmp_path / "coco" / "val2017"
    shutil.copytree(sample_dir, images)
    shutil.move(images / "test_coco.json", tmp_path / "coco" / "person_keypoints_val2017.json")
    out = tmp_path / "na"
    args = ["neuralannot", "--images", str(images), "--out", str(out), "--epochs", "1", "--recipes", "pretrain",
            "--no-progress"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert (out / "annotator.pt").is_file() and len(list(out.glob("*.npz"))) == 4
    s = json.loads((out / "summary.json").read_text())
    assert s["fitter"] == "neuralannot" and s["fitted"] == 12
    import torch

    assert torch.load(out / "annotator.pt", weights_only=False)["epoch"] == 1
    r = CliRunner().invoke(cli, args[:5] + ["--epochs", "2"] + args[7:])  # resumes: trains epoch 2 only
    assert r.exit_code == 0, r.output
    ck = torch.load(out / "annotator.pt", weights_only=False)
    assert ck["epoch"] == 2 and len(ck["log"]) == 2
