import json
import shutil

import numpy as np
import pytest

from fit3d.data.readers import read_coco
from fit3d.data.writers import output_path, read_fit
from fit3d.fitters import SMPLify, Stage
from fit3d.pipeline import RunConfig, neuralannot_target, parse_shard, run, select_images

FAST = [
    Stage("camera", ("global_orient", "transl"), 10, 0.05, dict(reprojection=1.0, depth=100.0), keypoints="torso"),
    Stage("body", ("global_orient", "body_pose", "betas", "transl"), 10, 0.04,
          dict(reprojection=1.0, pose_prior=5.0, bend=100.0, shape=1.0)),
]


@pytest.fixture()
def sample_copy(tmp_path, sample_dir):
    d = tmp_path / "images"
    shutil.copytree(sample_dir, d)
    return d


def _fitter(anny_model):
    return SMPLify(anny_model, schedule=FAST)


def test_run_writes_one_npz_per_image_and_a_summary(tmp_path, sample_copy, anny_model):
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    s = run(images, _fitter(anny_model), anny_model, RunConfig(out, batch_size=5, progress=False), problems)
    files = sorted(out.glob("*.npz"))
    assert len(files) == 4
    assert s["people"] == 12 and s["fitted"] + s["skipped"] == 12
    d = read_fit(files[0])
    P = len(d["annot_id"])
    for k, shape in dict(global_orient=(P, 3), body_pose=(P, 19, 3), betas=(P, 6), transl=(P, 3),
                         focal_length=(P, 2), principal_point=(P, 2), keypoints_2d=(P, 17, 3),
                         keypoints_3d=(P, 17, 3), keypoints_2d_fit=(P, 17, 2), joints_3d=(P, 20, 3),
                         bbox=(P, 4), reproj_error_px=(P,), valid=(P,), status=(P,)).items():
        assert d[k].shape == shape, k
    assert str(d["fitter"]) == "smplify" and str(d["model"]) == "anny"
    assert list(d["keypoint_names"])[:2] == ["nose", "left_eye"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["people_fitted"] == s["fitted"]
    assert "torch" in summary["versions"] and summary["schedule"][0]["name"] == "camera"


def test_bad_inputs_are_recorded_not_lost(tmp_path, sample_copy, anny_model):
    """Missing image, NaN keypoints and a person with 2 visible keypoints: each recorded, rest fitted."""
    data = json.loads((sample_copy / "test_coco.json").read_text())
    anns = [a for a in data["annotations"] if a["num_keypoints"] >= 10]
    nan_ann, two_ann = anns[0], anns[1]
    kp = np.asarray(nan_ann["keypoints"], dtype=float).reshape(17, 3)
    kp[:, :2] = np.nan  # every coordinate NaN
    nan_ann["keypoints"] = [None if np.isnan(v) else v for v in kp.ravel().tolist()]
    kp2 = np.zeros((17, 3))
    kp2[5] = [100, 100, 2]
    kp2[6] = [150, 100, 2]
    two_ann["keypoints"] = kp2.ravel().tolist()
    two_ann["num_keypoints"] = 2
    (sample_copy / "test_coco.json").write_text(json.dumps(data).replace("null", "NaN"))
    (sample_copy / "000000196141.jpg").unlink()  # missing image
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    assert any("000000196141.jpg" in p.source and "not found" in p.reason for p in problems)
    out = tmp_path / "fits"
    s = run(images, _fitter(anny_model), anny_model, RunConfig(out, progress=False), problems)
    assert len(list(out.glob("*.npz"))) == 3
    recs = {}
    for f in out.glob("*.npz"):
        d = read_fit(f)
        for a, st, r, v in zip(d["annot_id"], d["status"], d["skip_reason"], d["valid"]):
            recs[int(a)] = (str(st), str(r), bool(v))
    assert recs[nan_ann["id"]][0] == "skipped" and "17 non-finite" in recs[nan_ann["id"]][1]
    assert recs[two_ann["id"]][0] == "skipped" and "2 < 6" in recs[two_ann["id"]][1]
    assert not recs[two_ann["id"]][2]
    assert any(st == "fitted" for st, _, _ in recs.values())
    summary = json.loads((out / "summary.json").read_text())
    assert any("000000196141" in p["source"] for p in summary["input_problems"])
    assert {x["annot_id"] for x in summary["this_run"]["skipped"]} >= {nan_ann["id"], two_ann["id"]}


class Interrupt(Exception):
    pass


def test_resume_after_interrupted_run(tmp_path, sample_copy, anny_model):
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    inner = _fitter(anny_model)
    calls = {"n": 0}

    class Dying:
        schedule = inner.schedule
        extra_defaults = inner.extra_defaults

        def __call__(self, batch):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt  # the job is killed mid-run
            return inner(batch)

    with pytest.raises(KeyboardInterrupt):
        run(images, Dying(), anny_model, RunConfig(out, batch_size=3, progress=False))
    done = sorted(p.name for p in out.glob("*.npz"))
    assert 1 <= len(done) < 4
    assert not list(out.glob(".*.tmp"))  # no half-written files
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    s = run(images, inner, anny_model, RunConfig(out, batch_size=3, progress=False))
    assert s["this_run"]["images_already_done"] == len(done)
    assert len(list(out.glob("*.npz"))) == 4
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # done images untouched
    s = run(images, inner, anny_model, RunConfig(out, progress=False))
    assert s["this_run"]["images"] == 0 and s["this_run"]["images_already_done"] == 4


def test_failed_batch_is_recorded_and_run_continues(tmp_path, sample_copy, anny_model):
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)

    def broken(batch):
        raise RuntimeError("CUDA out of memory (simulated)")

    s = run(images, broken, anny_model, RunConfig(tmp_path / "f", progress=False))
    assert s["fitted"] == 0 and s["skipped"] == 12
    assert any("simulated" in x["reason"] for x in s["this_run"]["skipped"])


def test_shards_partition_the_images(tmp_path, sample_copy):
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    parts = [select_images(images, RunConfig(tmp_path, shard=parse_shard(f"{i}/3")))[0] for i in (1, 2, 3)]
    keys = [r.image_key for p in parts for r in p]
    assert sorted(keys) == sorted(r.image_key for r in images) and len(set(keys)) == 4
    with pytest.raises(ValueError):
        parse_shard("0/3")
    with pytest.raises(ValueError):
        parse_shard("abc")
    assert output_path(tmp_path, "x/000000000785.jpg").name == "000000000785.npz"


def test_neuralannot_target_keeps_people_with_enough_keypoints(sample_dir, anny_model):
    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    target = neuralannot_target(images, anny_model)
    assert len(target) == 12 and target.convention == anny_model.keypoint_convention
    with pytest.raises(ValueError, match="enough keypoints"):
        neuralannot_target(images, anny_model, min_visible=100)
