import json
import shutil

import pytest
from click.testing import CliRunner

from fit3d.cli.main import cli
from fit3d.fitters import SMPLify


def test_smplify_cli_on_bundled_sample(tmp_path, sample_dir, anny_model, schedule_file):
    images = tmp_path / "coco" / "val2017"
    shutil.copytree(sample_dir, images)
    shutil.move(images / "test_coco.json", tmp_path / "coco" / "person_keypoints_val2017.json")
    sched = schedule_file(5)
    out = tmp_path / "fits"
    args = ["smplify", "--images", str(images), "--out", str(out), "--schedule", str(sched), "--no-progress", "--limit", "2"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "using annotations" in r.output and "person_keypoints_val2017.json" in r.output
    assert len(list(out.glob("*.npz"))) == 2
    r = CliRunner().invoke(cli, args[:-2])  # resume: the 2 done are skipped
    assert r.exit_code == 0 and "2 already done" in r.output
    assert len(list(out.glob("*.npz"))) == 4


def test_cli_errors_are_clear(tmp_path, sample_dir):
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "person_keypoints_" in r.output
    r = CliRunner().invoke(cli, ["neuralannot", "--images", str(sample_dir), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--annotations FILE.json" in r.output and "--keypoints DIR (OpenPose)" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--annotations", str(bad), "--out",
                                 str(tmp_path / "o")])
    assert r.exit_code == 1 and "corrupt COCO JSON" in r.output and "Usage:" not in r.output  # a data error
    empty = tmp_path / "no_openpose"
    empty.mkdir()
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--keypoints", str(empty), "--out",
                                 str(tmp_path / "o")])
    assert r.exit_code == 2 and "no OpenPose JSON files" in r.output  # a wrong folder given
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--keypoints", str(empty), "--annotations",
                                 str(sample_dir / "test_coco.json"), "--out", str(tmp_path / "o"), "--dry-run"])
    assert r.exit_code == 2 and "--annotations and --keypoints were given" in r.output  # not one silently ignored
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"),
                                 "--out", str(tmp_path / "o"), "--model", "smpl"])
    assert r.exit_code != 0 and "smpl.is.tue.mpg.de" in r.output
    (tmp_path / "notes.md").write_text("# not a regressor")  # a wrong file given as --regressor
    r = CliRunner().invoke(cli, ["eft", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"),
                                 "--out", str(tmp_path / "o"), "--regressor", str(tmp_path / "notes.md")])
    assert r.exit_code == 1 and "notes.md is not a torch file" in r.output and r.exception is not None
    assert not isinstance(r.exception, ValueError) and not (tmp_path / "o").exists()  # stopped before writing
    # SMPL-family options with anny were ignored in silence (a forgotten --model smpl fitted anny;
    # found by a trial with SMPL-family files), and --prior-path with --prior l2 likewise
    base = ["smplify", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"),
            "--out", str(tmp_path / "o"), "--dry-run"]
    for extra, said in ((["--model-path", str(tmp_path)], "--model-path is for the SMPL family"),
                        (["--gender", "male"], "--gender is for the SMPL family")):
        r = CliRunner().invoke(cli, base + extra)
        assert r.exit_code == 2 and said in r.output and "--model smpl" in r.output, r.output
    r = CliRunner().invoke(cli, base[:-1] + ["--prior", "l2", "--prior-path", str(tmp_path / "notes.md")])
    assert r.exit_code == 1 and "the l2 prior has no weights" in r.output, r.output
    r = CliRunner().invoke(cli, ["eft"] + base[1:-1] + ["--prior-path", str(tmp_path / "notes.md")])
    assert r.exit_code == 2 and "is given without --prior" in r.output, r.output  # (a usage error)


def test_cli_says_which_images_are_written_incomplete(tmp_path, sample_dir, anny_model):
    data = json.loads((sample_dir / "test_coco.json").read_text())
    ann = [a for a in data["annotations"] if sum(b["image_id"] == a["image_id"] for b in data["annotations"]) > 1][0]
    ann["keypoints"] = ann["keypoints"][:-3]  # unreadable, beside readable people of its image
    ann = tmp_path / "broken.json"
    ann.write_text(json.dumps(data))
    args = ["eft", "--images", str(sample_dir), "--annotations", str(ann), "--out", str(tmp_path / "o"),
            "--no-progress", "--steps", "2"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 3 and "unreadable keypoints" in r.output, r.output
    assert "1 written without their unreadable annotations (fitted again next run)" in r.output


def test_eft_follow_is_recorded_and_written(tmp_path, sample_dir, anny_model):
    import numpy as np

    out = tmp_path / "fits"
    args = ["eft", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"), "--out", str(out),
            "--no-progress", "--steps", "2", "--limit", "1"]
    r = CliRunner().invoke(cli, args + ["--follow"])
    assert r.exit_code == 0, r.output
    d = np.load(next(out.glob("*.npz")))
    assert d["followed"].dtype == bool and len(d["followed"]) == len(d["status"])
    assert json.loads((out / "fit_settings.json").read_text())["follow"] is True
    r = CliRunner().invoke(cli, args + ["--dry-run"])  # without --follow: other settings
    assert r.exit_code == 1 and "follow" in r.output, r.output


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
    assert s["this_run"]["people_fitted"] == 12 and s["fitter"] == "eft" and s["this_run"]["exit_code"] == 0
    assert s["this_run"]["skipped_by_reason"] == {"too few usable keypoints": 2}
    assert s["settings"]["flip"] is True and s["settings"]["steps"] == 5
    # the same folder with other settings: refused, nothing refitted; --overwrite refits
    r = CliRunner().invoke(cli, args + ["--no-flip"])
    assert r.exit_code == 1 and "other settings (" in r.output and "flip: True there, False now" in r.output, r.output
    r = CliRunner().invoke(cli, args + ["--no-flip", "--dry-run"])  # a dry run says so too
    assert r.exit_code == 1 and "other settings" in r.output, r.output
    dry = [a for a in args if a not in ("--steps", "5")] + ["--dry-run"]  # EFT's default steps (30), left unset
    r = CliRunner().invoke(cli, dry)
    assert r.exit_code == 1 and "steps: 5 there, 30 now" in r.output, r.output
    r = CliRunner().invoke(cli, args + ["--no-flip", "--overwrite", "--limit", "1"])  # would leave it mixed
    assert r.exit_code == 1 and "would leave it mixed" in r.output, r.output
    r = CliRunner().invoke(cli, args + ["--no-flip", "--overwrite", "--steps", "5"])
    assert r.exit_code == 0 and "4 written" in r.output, r.output
    r = CliRunner().invoke(cli, args[:-2] + ["--no-flip", "--steps", "5", "--min-visible", "6"])  # defaults typed out
    assert r.exit_code == 0 and "4 already done" in r.output, r.output


def test_eft_cli_with_worker_processes_writes_what_one_process_writes(tmp_path, sample_dir, anny_model):
    """``--workers 2``: the command's fitter is rebuilt in a worker process (its options pickled)."""
    import numpy as np

    base = ["eft", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"), "--no-progress",
            "--steps", "2", "--batch-size", "4"]
    outs = {}
    for n in ("1", "2"):
        r = CliRunner().invoke(cli, base + ["--out", str(tmp_path / n), "--workers", n])
        assert r.exit_code == 0, r.output
        outs[n] = {f.name: np.load(f) for f in sorted((tmp_path / n).glob("*.npz"))}
        # (whether the worker, which takes seconds to start, gets a batch of this small sample depends
        # on timing; tests/pipeline/test_workers.py makes sure it does)
        assert json.loads((tmp_path / n / "summary.json").read_text())["processes"] in (1, int(n))
    assert outs["1"].keys() == outs["2"].keys() and len(outs["1"]) == 4
    for name, a in outs["1"].items():
        b = outs["2"][name]
        assert (a["status"] == b["status"]).all() and (a["iterations"] == b["iterations"]).all()
        assert np.allclose(a["body_pose"], b["body_pose"], atol=1e-4, equal_nan=True), name


def test_neuralannot_cli_on_bundled_sample(tmp_path, sample_dir, caplog):
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
    assert s["fitter"] == "neuralannot" and s["this_run"]["people_fitted"] == 12
    assert s["settings"]["recipes"] == ["pretrain"] and s["settings"]["annotator"]["epoch"] == 1  # what decided it
    r0 = s["this_run"]  # fits/s with and without the annotator's training
    assert r0["annotator_training_seconds"] > 0 and r0["fits_per_second_with_training"] < r0["fits_per_second"]
    assert f"({r0['fits_per_second_with_training']:.2f} with the annotator's training)" in r.output  # (a trial:
    # the closing line's rate, of annotating alone, read as the whole job's)
    import torch

    assert torch.load(out / "annotator.pt", weights_only=False)["epoch"] == 1
    r = CliRunner().invoke(cli, args[:5] + ["--epochs", "2"] + args[7:])  # resumes: trains epoch 2 only
    assert r.exit_code == 0, r.output
    ck = torch.load(out / "annotator.pt", weights_only=False)
    assert ck["epoch"] == 2 and len(ck["log"]) == 2
    assert "4 written, 0 already done" in r.output  # a further-trained annotator annotates every image again
    assert "4 annotation file(s) of another annotator" in caplog.text  # ...and says so
    assert json.loads((out / "summary.json").read_text())["this_run"]["annotations_replaced"] == 4
    assert r.output.count("fit3d: epoch ") == 1  # --no-progress: this run's epoch, printed as it ended
    r = CliRunner().invoke(cli, args[:5] + ["--epochs", "2"] + args[7:])  # finished, same annotator: nothing to do
    assert r.exit_code == 0 and "0 written, 4 already done" in r.output, r.output
    assert "already trained to epoch 2 (nothing to train)" in r.output and "fit3d: epoch " not in r.output
    assert "WARNING" not in r.output
    r = CliRunner().invoke(cli, args[:5] + ["--epochs", "3", "--recipes", "none", "--no-progress"])
    assert r.exit_code == 1 and "trained with other settings (recipes: ['pretrain'] there, [] now)" in r.output


def test_neuralannot_annotates_openpose_input(tmp_path, sample_dir):
    """NeuralAnnot read COCO JSON only: a detector's keypoints (OpenPose) had to be converted first."""
    from fit3d.data.conventions import COCO17, OPENPOSE_BODY25, convert
    from fit3d.data.readers import read_coco

    kp_dir = tmp_path / "op"
    kp_dir.mkdir()
    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    for rec in images:
        people = [{"pose_keypoints_2d": convert(p.keypoints_2d, COCO17, OPENPOSE_BODY25).ravel().tolist()}
                  for p in rec.people]
        (kp_dir / (rec.image_path.stem + "_keypoints.json")).write_text(json.dumps({"people": people}))
    out = tmp_path / "na"
    r = CliRunner().invoke(cli, ["neuralannot", "--images", str(sample_dir), "--keypoints", str(kp_dir), "--out",
                                 str(out), "--epochs", "1", "--recipes", "pretrain", "--no-progress"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["this_run"]["people_fitted"] == 12 and len(list(out.glob("*.npz"))) == 4
    r = CliRunner().invoke(cli, ["neuralannot", "--images", str(sample_dir), "--keypoints", str(kp_dir),
                                 "--annotations", str(sample_dir / "test_coco.json"), "--out", str(out)])
    assert r.exit_code == 2 and "no --annotations with them" in r.output


def test_neuralannot_refuses_two_image_folders_of_one_name(tmp_path, sample_dir):
    """Their outputs went into one subfolder: the second set's summary replaced the first's, and
    images of the same names were 'already done' (found by a new-user helper)."""
    for k in "ab":
        shutil.copytree(sample_dir, tmp_path / k / "coco")
    args = ["neuralannot", "--out", str(tmp_path / "na"), "--epochs", "1", "--recipes", "pretrain", "--no-progress"]
    for k in "ab":
        args += ["--images", str(tmp_path / k / "coco"), "--annotations", str(tmp_path / k / "coco" / "test_coco.json")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "several image folders are named coco" in r.output, r.output
    assert not (tmp_path / "na" / "annotator.pt").exists()  # refused before training


def test_neuralannot_cli_chooses_its_training_length_on_held_out_people(tmp_path, sample_dir):
    import torch

    out = tmp_path / "na"
    args = ["neuralannot", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"),
            "--out", str(out), "--epochs", "2", "--holdout", "0.5", "--recipes", "pretrain", "--no-progress",
            "--refine"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    ck = torch.load(out / "annotator.pt", weights_only=False)
    assert ck["phase"] == "final" and len(ck["held_out"]) >= 2 and ck["selected_epochs"] in (0, 1, 2)
    assert ck["epoch"] == ck["selected_epochs"]
    assert f"training length chosen on held-out people: {ck['selected_epochs']} epoch(s)" in r.output
    assert len(list(out.glob("*.npz"))) == 4
    import numpy as np

    # --refine: EFT's per-person fields, with defaults for the people skipped beside fitted ones
    d = [np.load(f) for f in out.glob("*.npz")]
    mixed = [x for x in d if (x["status"] == "skipped").any() and (x["status"] != "skipped").any()]
    assert mixed  # an image where a skipped person sits beside fitted ones (the case that crashed)
    status = np.concatenate([x["status"] for x in d])
    finetuned = np.concatenate([x["finetuned"] for x in d])
    assert (status == "skipped").any() and not finetuned[status == "skipped"].any()


def test_fit_options_from_the_command_line(tmp_path, sample_dir, monkeypatch):
    import fit3d.cli.fit
    from fit3d.cli.options import FitOptions

    seen = {}
    monkeypatch.setattr(fit3d.cli.fit, "run_fit",
                        lambda opts, name, make, options, **kw: seen.update(opts=opts, name=name, options=options,
                                                                            make=make, **kw))
    args = ["eft", "--images", str(sample_dir), "--out", str(tmp_path / "o"), "--limit", "1", "--shard", "2/3",
            "--batch-size", "5", "--focal-length", "900", "--min-visible", "7", "--no-progress", "--render",
            "--save-mesh", "ply", "--model", "smpl", "--gender", "female", "--overwrite", "--steps", "3",
            "--workers", "3"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert seen["name"] == "eft"
    assert seen["opts"] == FitOptions(
        images=sample_dir, out_dir=tmp_path / "o", annotations=None, keypoints_dir=None, spin_npz=None, model="smpl",
        model_path=None, gender="female", device="cpu", batch_size=5, focal_length=900.0, limit=1, shard=(1, 3),
        overwrite=True, min_visible=7, progress=False, render=True, save_mesh="ply", workers=3)
    import pickle

    assert pickle.loads(pickle.dumps(seen["make"])).keywords["steps"] == 3  # worker processes build it too
    assert seen["default_batch_size"] == 64
    assert seen["options"] == dict(steps=3, lr=None, regressor=None, prior=None, prior_path=None, refine=False,
                                   finetune="all", flip=True, fallback=False, follow=False)  # the run's settings
    from fit3d.cli.fit import fit_settings

    assert fit_settings(seen["opts"], "eft", seen["options"])["focal_length"] == 900.0
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--out", str(tmp_path / "o"),
                                 "--shard", "4/3"])
    assert r.exit_code == 2 and "Invalid value for '--shard'" in r.output and "1 <= i <= n (shards count from 1" in r.output
    for bad in ("0", "two"):
        r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--out", str(tmp_path / "o"),
                                     "--workers", bad])
        assert r.exit_code == 2 and "Invalid value for '--workers'" in r.output


def test_smplify_cli_limit_one(tmp_path, sample_dir, anny_model, schedule_file):
    import numpy as np

    sched = schedule_file(3)
    out = tmp_path / "fits"
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"),
                                 "--out", str(out), "--schedule", str(sched), "--limit", "1", "--focal-length", "1000",
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    files = list(out.glob("*.npz"))
    assert len(files) == 1
    d = np.load(files[0])
    assert str(d["fitter"]) == "smplify" and np.allclose(d["focal_length"], 1000.0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["images"] == 1
    assert summary["batch_size"] == SMPLify.default_batch_size == 256  # no --batch-size: the fitter's own
    # --render: an unreadable fit in the folder makes a clean fit exit 3; it never replaces the fit's own code
    # (a review found the render's exit 3 raised in place of the fit's, 5 and 4 included)
    import fit3d.cli.fit

    rendered = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fit3d.cli.fit, "render_fits", lambda *a, **k: rendered.append(k["names"]) or 1)
        r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--annotations",
                                     str(sample_dir / "test_coco.json"), "--out", str(out), "--schedule", str(sched),
                                     "--limit", "1", "--focal-length", "1000", "--no-progress", "--render"])
        assert r.exit_code == 3 and rendered == [[files[0].name[: -len(".npz")]]], r.output
        # this job's images only, not the folder's (a scale trial: every task of an array rendered every fit)
        from fit3d.data.readers import read_coco
        from fit3d.pipeline.selection import shard_images

        images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
        second = max(range(2), key=lambda i: len(shard_images(images, (i, 2))))
        r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--annotations",
                                     str(sample_dir / "test_coco.json"), "--out", str(out), "--schedule", str(sched),
                                     "--shard", f"{second + 1}/2", "--limit", "2", "--focal-length", "1000",
                                     "--no-progress", "--render"])
        assert rendered[-1] == [i.image_key for i in shard_images(images, (second, 2))[:2]], r.output
        r = CliRunner().invoke(cli, ["smplify", "--images", str(tmp_path), "--annotations",
                                     str(sample_dir / "test_coco.json"), "--out", str(tmp_path / "none"),
                                     "--schedule", str(sched), "--no-progress", "--render"])
        assert r.exit_code == 4, r.output  # nothing fitted (no image found) stays 4


def test_eft_fallback_records_which_fit_was_kept(tmp_path, sample_dir, anny_model):
    import numpy as np

    out = tmp_path / "fits"
    args = ["eft", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"), "--out", str(out),
            "--no-progress", "--steps", "2", "--fallback", "--limit", "2"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    d = [np.load(f) for f in sorted(out.glob("*.npz"))]
    fitted = np.concatenate([x["status"] == "fitted" for x in d])
    fallback = np.concatenate([x["fallback"] for x in d])
    assert fitted.sum() >= 2 and fallback.dtype == bool and not fallback[~fitted].any()
    assert json.loads((out / "summary.json").read_text())["settings"]["fallback"] is True


def test_help_names_the_defaults():
    from fit3d.fitters.build import DEFAULT_PRIOR
    from fit3d.fitters.eft import FINETUNE_PRESETS

    r = CliRunner().invoke(cli, ["smplify", "--help"], terminal_width=400)
    assert f"default: {DEFAULT_PRIOR}," in r.output
    r = CliRunner().invoke(cli, ["eft", "--help"], terminal_width=400)
    import re

    said = {name: float(lr) for lr, name in re.findall(r"([0-9.]+e-[0-9]+) for (\w+)", r.output)}
    assert said == {name: p.lr for name, p in FINETUNE_PRESETS.items()}


def test_a_prior_retrained_at_the_same_path_is_another_setting(tmp_path, sample_dir, anny_model, schedule_file):
    """The folder records a fingerprint of the weights the fitter loaded: a GMM file rewritten
    with other values (as setup-model retraining it would) stops a rerun into the folder."""
    import numpy as np

    from fit3d.priors import GMMPrior
    from fit3d.priors.io import save_prior

    poses = np.random.default_rng(0).normal(0, 0.2, (300, anny_model.num_body_joints, 3))
    path = tmp_path / "gmm.pt"
    save_prior(GMMPrior.fit(poses, n_components=2), path)
    args = ["smplify", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"),
            "--out", str(tmp_path / "fits"), "--schedule", str(schedule_file(3)), "--limit", "1",
            "--prior-path", str(path), "--no-progress"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "1 already done" in CliRunner().invoke(cli, args).output  # the same weights: resumes
    save_prior(GMMPrior.fit(poses[:150], n_components=2), path)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "fitter.prior.weights:" in r.output, r.output


def test_a_sharded_run_opens_only_its_own_images(tmp_path, sample_dir, anny_model, schedule_file):
    """A scale trial: every task of an array opened every image and parsed every person of a
    COCO-train-sized file (~55 s) before fitting its share; an unreadable image made every task
    exit 3. Now a task opens its own images; a dry run still reads the whole input."""
    from fit3d.data.readers import read_coco
    from fit3d.pipeline.selection import shard_images

    images = tmp_path / "imgs"
    shutil.copytree(sample_dir, images)
    records, _ = read_coco(images / "test_coco.json", images)
    owner = next(i for i in range(2) if len(shard_images(records, (i, 2))) >= 2)
    broken = shard_images(records, (owner, 2))[0].image_key
    (images / broken).write_bytes(b"not an image")
    sched = schedule_file(2)
    base = ["smplify", "--images", str(images), "--annotations", str(images / "test_coco.json"), "--out",
            str(tmp_path / "fits"), "--schedule", str(sched), "--no-progress", "--workers", "1"]
    other = CliRunner().invoke(cli, base + ["--shard", f"{2 - owner}/2"])
    assert other.exit_code == 0 and broken not in other.output, other.output
    mine = CliRunner().invoke(cli, base + ["--shard", f"{owner + 1}/2"])
    assert mine.exit_code == 3 and broken in mine.output, mine.output
    dry = CliRunner().invoke(cli, base + ["--shard", f"{2 - owner}/2", "--dry-run"])
    assert dry.exit_code == 3 and broken in dry.output  # (the whole input, as the submit pre-check reads it)
    summaries = [json.loads(p.read_text())["this_run"] for p in sorted((tmp_path / "fits").glob("summary.shard-*"))]
    assert sum(s["images"] for s in summaries) == len(records) - 1 and sum(s["input_errors"] for s in summaries) == 1


def test_numbers_that_cannot_be_used_are_usage_errors(tmp_path, sample_dir):
    """A new-user trial: --focal-length nan and --lr 0 / -1 / nan were refused by the package (exit 1,
    a message naming Python's None), --prior-path without --prior too; click's ranges let NaN through."""
    base = ["eft", "--images", str(sample_dir), "--out", str(tmp_path / "o")]
    for extra, said in ((["--focal-length", "nan"], "nan is not a finite number"),
                        (["--lr", "nan"], "nan is not a finite number"), (["--lr", "0"], "x>0.0"),
                        (["--lr", "-1"], "x>0.0"), (["--focal-length", "inf"], "inf is not a finite number"),
                        (["--prior-path", str(sample_dir / "test_coco.json")], "without --prior")):
        r = CliRunner().invoke(cli, base + extra)
        assert r.exit_code == 2 and said in r.output, (extra, r.output)
    assert not (tmp_path / "o").exists()


def test_each_fitting_command_names_its_own_default_batch_sizes():
    """smplify --help listed EFT's batch sizes too; each now names the sizes its fitter takes."""
    from fit3d.fitters import EFT, SMPLify
    from fit3d.fitters.fallback import fallback_batch_size

    def help_of(command):
        r = CliRunner().invoke(cli, [command, "--help"])
        return " ".join(r.output.split())

    smplify, eft = help_of("smplify"), help_of("eft")
    assert f"on a CPU {SMPLify.default_batch_size} " in smplify and f"on a GPU {SMPLify.cuda_batch_size} " in smplify
    assert "eft" not in smplify.split("--batch-size")[1].split("--focal-length")[0]
    assert f"on a CPU {EFT.default_batch_size}, with --fallback {fallback_batch_size(EFT, SMPLify, 'cpu')} " in eft
    assert f"on a GPU {EFT.cuda_batch_size} " in eft and fallback_batch_size(EFT, SMPLify, "cuda") == EFT.cuda_batch_size
