import json

import numpy as np
import pytest
import smplx
import torch
from click.testing import CliRunner

from fit3d.body_models import build_body_model
from fit3d.cli.main import cli
from fit3d.data.conventions import SPIN24
from fit3d.data.readers import read_coco
from fit3d.export import export_fits
from fit3d.fitters import SMPLify, Stage
from fit3d.pipeline import RunConfig, run
from fit3d.pipeline.merge import merge_fits

FAST = [Stage("camera", ("global_orient", "transl"), 10, 0.05, dict(reprojection=1.0, depth=100.0), "torso"),
        Stage("body", ("global_orient", "body_pose", "betas", "transl"), 15, 0.04,
              dict(reprojection=1.0, pose_prior=1.0, bend=10.0, shape=1.0))]


def _fit(model, images_dir, ann, out):
    images, problems = read_coco(ann, images_dir)
    run(images, SMPLify(model, schedule=FAST, depth_flips=False), model, RunConfig(out, progress=False), problems)
    return out


@pytest.fixture(scope="module")
def smpl_fits(tmp_path_factory, smpl_like_dir, sample_dir):
    return _fit(build_body_model("smpl", smpl_like_dir), sample_dir, sample_dir / "test_coco.json",
                tmp_path_factory.mktemp("smpl_fits"))


def _posed_joints(smpl_like_dir, model_type, n_joints, **params):
    layer = smplx.create(str(smpl_like_dir), model_type=model_type, use_pca=False, flat_hand_mean=True,
                         batch_size=len(params["betas"]))
    with torch.no_grad():
        out = layer(**{k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in params.items()})
    return out.joints[:, :n_joints].numpy()


def test_spin_export_round_trips_through_smplx(tmp_path, smpl_fits, smpl_like_dir):
    out = tmp_path / "spin.npz"
    c = export_fits(smpl_fits, "spin", out)
    assert c["exported"] == 12 and c["dropped"] == {"not fitted": 2} and c["model"] == "smpl"
    d = np.load(out)
    N = 12
    assert d["pose"].shape == (N, 72) and d["shape"].shape == (N, 10) and d["part"].shape == (N, 24, 3)
    assert d["center"].shape == (N, 2) and d["scale"].shape == (N,) and (d["has_smpl"] == 1).all()
    assert d["focal_length"].shape == (N, 2) and d["principal_point"].shape == (N, 2)
    fits, _ = merge_fits(smpl_fits)
    row = {(str(i), int(a)): k for k, (i, a) in enumerate(zip(fits["image"], fits["annot_id"]))}
    idx = [row[(str(i), int(a))] for i, a in zip(d["imgname"], d["annot_id"])]
    # the box: SPIN's center and scale = size / 200
    box = fits["bbox"][idx]
    np.testing.assert_allclose(d["scale"] * 200, box[:, 2:].max(1), rtol=1e-5)
    # 2D keypoints in SPIN's order
    li = SPIN24.index("left_knee")
    np.testing.assert_allclose(d["part"][:, li, :2], fits["keypoints_2d"][idx, 13, :2])
    # posing the export through smplx gives fit3d's joints within 1 mm
    joints = _posed_joints(smpl_like_dir, "smpl", 24, global_orient=d["pose"][:, :3], body_pose=d["pose"][:, 3:],
                           betas=d["shape"], transl=d["transl"])
    assert np.abs(joints - fits["joints_3d"][idx]).max() < 1e-3


def test_evaluate_reads_the_spin_export(tmp_path, smpl_fits, sample_dir, anny_model):
    from fit3d.data.spin import read_spin
    from fit3d.evaluation.evaluate import evaluate

    spin = tmp_path / "spin.npz"
    export_fits(smpl_fits, "spin", spin)
    images, problems = read_spin(spin, sample_dir)
    assert problems == [] and sum(len(r.people) for r in images) == 12
    refit = tmp_path / "refit"
    run(images, SMPLify(anny_model, schedule=FAST, depth_flips=False), anny_model, RunConfig(refit, progress=False))
    r = CliRunner().invoke(cli, ["evaluate", "--fits", str(refit), "--gt", str(spin)])
    assert r.exit_code == 0, r.output
    summary, _ = evaluate(refit, spin)
    assert summary["count"] == 12 and summary["fitted"] == 12 and summary["error_2d_px"] < 40
    fits, _ = merge_fits(smpl_fits)
    assert sorted(p.annot_id for r in images for p in r.people) == sorted(fits["annot_id"][fits["status"] == "fitted"])
    same, _ = evaluate(smpl_fits, spin)  # the export scores the fits it came from: the ids match (they were rows)
    assert same["count"] == 12 and same["fitted"] == 12  # matched by annotation id (by row: none)


def test_neuralannot_json_round_trips(tmp_path, smpl_fits, smpl_like_dir):
    out = tmp_path / "na.json"
    r = CliRunner().invoke(cli, ["export", "--fits", str(smpl_fits), "--format", "neuralannot", "--out", str(out)])
    assert r.exit_code == 0 and "exported 12 of 14 people (smpl fits)" in r.output, r.output
    data = json.loads(out.read_text())
    fits, _ = merge_fits(smpl_fits)
    fitted = fits["status"] == "fitted"
    assert sorted(data) == sorted(str(a) for a in fits["annot_id"][fitted])
    e = data[str(int(fits["annot_id"][fitted][0]))]
    assert len(e["smpl_param"]["pose"]) == 72 and len(e["smpl_param"]["shape"]) == 10 and len(e["cam_param"]["focal"]) == 2
    ids = [int(a) for a in fits["annot_id"][fitted]]
    pose = np.asarray([data[str(a)]["smpl_param"]["pose"] for a in ids])
    joints = _posed_joints(smpl_like_dir, "smpl", 24, global_orient=pose[:, :3], body_pose=pose[:, 3:],
                           betas=[data[str(a)]["smpl_param"]["shape"] for a in ids],
                           transl=[data[str(a)]["smpl_param"]["trans"] for a in ids])
    assert np.abs(joints - fits["joints_3d"][fitted]).max() < 1e-3


def test_humandata_keeps_smplx_and_round_trips(tmp_path, smpl_like_dir, sample_dir):
    fits_dir = _fit(build_body_model("smplx", smpl_like_dir), sample_dir, sample_dir / "test_coco.json",
                    tmp_path / "fits")
    out = tmp_path / "hd.npz"
    assert export_fits(fits_dir, "humandata", out, valid_only=True)["model"] == "smplx"
    d = np.load(out, allow_pickle=True)
    N = int(d["__data_len__"])
    assert d["bbox_xywh"].shape == (N, 5) and (d["bbox_xywh"][:, 4] == 1).all()
    from fit3d.export.human_data_keypoints import HUMAN_DATA

    assert d["keypoints2d"].shape == (N, 190, 3) and d["keypoints2d_mask"].shape == (190,)
    assert d["keypoints2d_mask"].sum() == 17  # COCO's points, where mmhuman3d's COCO converter puts them
    merged, _ = merge_fits(fits_dir)
    first = {(str(i), int(a)): k for k, (i, a) in enumerate(zip(merged["image"], merged["annot_id"]))}
    k0 = first[(str(d["image_path"][0]), int(d["misc"].item()["annot_id"][0]))]
    for coco_index, hd_name in ((0, "nose"), (11, "left_hip_extra"), (16, "right_ankle")):
        assert np.array_equal(d["keypoints2d"][0, HUMAN_DATA.index(hd_name)], merged["keypoints_2d"][k0, coco_index])
    p, misc = d["smplx"].item(), d["misc"].item()
    assert p["body_pose"].shape == (N, 21, 3) and p["left_hand_pose"].shape == (N, 15, 3)
    assert misc["cam_param_type"] == "perspective" and misc["focal_length"].shape == (N, 2)
    fits, _ = merge_fits(fits_dir)
    row = {(str(i), int(a)): k for k, (i, a) in enumerate(zip(fits["image"], fits["annot_id"]))}
    idx = [row[(str(i), int(a))] for i, a in zip(d["image_path"], misc["annot_id"])]
    params = {k: v.reshape(N, -1) for k, v in p.items()}
    joints = _posed_joints(smpl_like_dir, "smplx", 22, **params)
    assert np.abs(joints - fits["joints_3d"][idx]).max() < 1e-3
    with pytest.raises(ValueError, match="humandata keeps SMPL-X"):
        export_fits(fits_dir, "spin", tmp_path / "spin.npz")


def test_anny_fits_export_their_own_parameters_or_refuse(tmp_path, anny_model, sample_dir):
    fits_dir = _fit(anny_model, sample_dir, sample_dir / "test_coco.json", tmp_path / "fits")
    export_fits(fits_dir, "humandata", tmp_path / "hd.npz")
    d = np.load(tmp_path / "hd.npz", allow_pickle=True)
    assert "anny" in d.files and "smpl" not in d.files and d["anny"].item()["body_pose"].shape[1:] == (19, 3)
    for fmt in ("spin", "neuralannot"):
        r = CliRunner().invoke(cli, ["export", "--fits", str(fits_dir), "--format", fmt, "--out", str(tmp_path / "x")])
        assert r.exit_code == 1 and "these fits are of anny" in r.output and "--model smpl" in r.output
        assert "Traceback" not in r.output and not (tmp_path / "x").exists()


def test_duplicate_annotation_ids_are_rejected_both(tmp_path, anny_model, sample_dir):
    data = json.loads((sample_dir / "test_coco.json").read_text())
    anns = [a for a in data["annotations"] if a["num_keypoints"] >= 6]
    image = next(i for i in {a["image_id"] for a in anns} if sum(a["image_id"] == i for a in anns) >= 2)
    same_image = [a for a in anns if a["image_id"] == image]
    same_image[1]["id"] = same_image[0]["id"]
    ann = tmp_path / "dup.json"
    ann.write_text(json.dumps(data))
    fits_dir = _fit(anny_model, sample_dir, ann, tmp_path / "fits")
    c = export_fits(fits_dir, "humandata", tmp_path / "hd.npz")
    assert c["dropped"]["duplicate annotation id"] == 2 and c["exported"] == 10
