import json
import shutil
from pathlib import Path

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
    assert d["center"].shape == (N, 2) and d["scale"].shape == (N,) and d["has_smpl"].shape == (N,)
    assert d["focal_length"].shape == (N, 2) and d["principal_point"].shape == (N, 2)
    # SPIN's static fits beside it (FitsDict: data/static_fits/<dataset>_fits.npy), rows in the same order
    static = np.load(tmp_path / "spin_fits.npy")
    assert static.shape == (N, 82) and static.dtype == np.float32
    np.testing.assert_array_equal(static, np.concatenate([d["pose"], d["shape"]], 1))
    fits, _ = merge_fits(smpl_fits)
    row = {(str(i), int(a)): k for k, (i, a) in enumerate(zip(fits["image"], fits["annot_id"]))}
    idx = [row[(str(i), int(a))] for i, a in zip(d["imgname"], d["annot_id"])]
    assert np.array_equal(d["has_smpl"], fits["valid"][idx].astype(np.float32))  # 0: a fit marked invalid
    # the box (COCO's own): SPIN's center and scale = 1.2 * size / 200 (SPIN's preprocess/coco.py)
    box = fits["bbox"][idx]
    np.testing.assert_allclose(d["scale"] * 200, 1.2 * box[:, 2:].max(1), rtol=1e-5)
    np.testing.assert_allclose(d["center"], box[:, :2] + box[:, 2:] / 2, rtol=1e-5)
    # 2D keypoints in SPIN's order
    li = SPIN24.index("left_knee")
    np.testing.assert_allclose(d["part"][:, li, :2], fits["keypoints_2d"][idx, 13, :2])
    # posing the export through smplx gives fit3d's joints within 1 mm, turned into each person's crop
    # camera (the default frame: what SPIN's trainer compares with); the full frame as fitted
    assert str(d["frame"]) == "crop" and d["crop_rotation"].shape == (N, 3, 3)
    joints = _posed_joints(smpl_like_dir, "smpl", 24, global_orient=d["pose"][:, :3], body_pose=d["pose"][:, 3:],
                           betas=d["shape"], transl=d["transl"])
    assert np.abs(joints - np.einsum("nij,npj->npi", d["crop_rotation"], fits["joints_3d"][idx])).max() < 1e-3
    assert np.abs(joints - fits["joints_3d"][idx]).max() > 1e-2  # (the people are off the image centre)
    export_fits(smpl_fits, "spin", tmp_path / "full.npz", frame="full")
    f = np.load(tmp_path / "full.npz")
    assert str(f["frame"]) == "full" and "crop_rotation" not in f.files
    np.testing.assert_array_equal(f["pose"][:, 3:], d["pose"][:, 3:])  # the body's own pose does not change
    joints = _posed_joints(smpl_like_dir, "smpl", 24, global_orient=f["pose"][:, :3], body_pose=f["pose"][:, 3:],
                           betas=f["shape"], transl=f["transl"])
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
    r = CliRunner().invoke(cli, ["export", "--fits", str(smpl_fits), "--format", "neuralannot", "--keep-invalid",
                                 "--out", str(out)])
    assert r.exit_code == 0 and "exported 12 of 14 people (smpl fits, full camera frame)" in r.output, r.output
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
    # the camera each fit was made with (a mutation check: focal and princpt swapped passed)
    np.testing.assert_allclose([data[str(a)]["cam_param"]["focal"] for a in ids], fits["focal_length"][fitted], rtol=1e-6)
    np.testing.assert_allclose([data[str(a)]["cam_param"]["princpt"] for a in ids], fits["principal_point"][fitted],
                               rtol=1e-6)


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
    assert d["has_smplx"].shape == (N,) and (d["has_smplx"] == 1).all()  # --valid-only: every fit valid
    assert p["body_pose"].shape == (N, 21, 3)
    assert str(misc["cam_param_type"]) == "perspective" and misc["focal_length"].shape == (N, 2)
    # what fit3d does not fit is not written: mmhuman3d would train hands, jaw and expression toward
    # zeros for every key present (a review); the strings are 0-d, never sliced per person by HumanData
    assert sorted(p) == ["betas", "body_pose", "global_orient", "transl"]
    assert all(misc[k].shape == () for k in ("smpl_source", "camera_frame", "keypoints2d_source"))
    assert misc["keypoints2d_source"].item()[:2] == ["nose", "left_eye"]
    fits, _ = merge_fits(fits_dir)
    row = {(str(i), int(a)): k for k, (i, a) in enumerate(zip(fits["image"], fits["annot_id"]))}
    idx = [row[(str(i), int(a))] for i, a in zip(d["image_path"], misc["annot_id"])]
    np.testing.assert_allclose(misc["focal_length"], fits["focal_length"][idx], rtol=1e-6)
    np.testing.assert_allclose(misc["principal_point"], fits["principal_point"][idx], rtol=1e-6)
    # the square crop of mmhuman3d's converters of SMPL pseudo-GT (spin.py, eft.py: w = h = scale * 200):
    # SPIN's, around the annotation's own COCO box (not expanded in the fits)
    own = fits["bbox"][idx].astype(np.float64)
    side = 1.2 * own[:, 2:].max(1)
    np.testing.assert_allclose(d["bbox_xywh"][:, 2], side, rtol=1e-5)
    np.testing.assert_allclose(d["bbox_xywh"][:, 3], side, rtol=1e-5)
    np.testing.assert_allclose(d["bbox_xywh"][:, :2] + side[:, None] / 2, own[:, :2] + own[:, 2:] / 2, rtol=1e-5)
    params = {k: v.reshape(N, -1) for k, v in p.items()}
    zeros = dict(left_hand_pose=np.zeros((N, 45)), right_hand_pose=np.zeros((N, 45)), jaw_pose=np.zeros((N, 3)),
                 leye_pose=np.zeros((N, 3)), reye_pose=np.zeros((N, 3)), expression=np.zeros((N, 10)))
    joints = _posed_joints(smpl_like_dir, "smplx", 22, **params, **zeros)
    assert str(misc["frame"]) == "crop" and misc["crop_rotation"].shape == (N, 3, 3)  # sliced per person
    assert np.abs(joints - np.einsum("nij,npj->npi", misc["crop_rotation"], fits["joints_3d"][idx])).max() < 1e-3
    with pytest.raises(ValueError, match="humandata keeps SMPL-X"):
        export_fits(fits_dir, "spin", tmp_path / "spin.npz")
    # NeuralAnnot-style SMPL-X: Hand4Whole indexes lhand_valid / rhand_valid / face_valid for every
    # entry (a KeyError without them, found by a review); false: hands and face were not fitted
    export_fits(fits_dir, "neuralannot", tmp_path / "na.json")
    entry = next(iter(json.loads((tmp_path / "na.json").read_text()).values()))["smplx_param"]
    assert entry["lhand_valid"] is entry["rhand_valid"] is entry["face_valid"] is False
    assert len(entry["lhand_pose"]) == 45 and entry["gender"] == "neutral" and len(entry["body_pose"]) == 63


def test_invalid_fits_are_flagged_only_where_the_formats_loaders_read_the_flag():
    from fit3d.export import reads_validity

    assert reads_validity("spin", "smpl") and reads_validity("humandata", "smpl")
    assert not reads_validity("humandata", "smplx") and not reads_validity("neuralannot", "smpl")
    assert not reads_validity("neuralannot", "smplx")


def test_anny_fits_export_their_own_parameters_or_refuse(tmp_path, anny_model, sample_dir):
    fits_dir = _fit(anny_model, sample_dir, sample_dir / "test_coco.json", tmp_path / "fits")
    export_fits(fits_dir, "humandata", tmp_path / "hd.npz")
    d = np.load(tmp_path / "hd.npz", allow_pickle=True)
    assert "anny" in d.files and "smpl" not in d.files and d["anny"].item()["body_pose"].shape[1:] == (19, 3)
    misc = d["misc"].item()  # (a video trial: tracking ids were lost; the sample has none: -1)
    assert misc["track_id"].dtype == np.int64 and misc["track_id"].tolist() == [-1] * len(misc["annot_id"])
    for fmt, out in (("spin", tmp_path / "x.npz"), ("neuralannot", tmp_path / "x.json")):
        r = CliRunner().invoke(cli, ["export", "--fits", str(fits_dir), "--format", fmt, "--out", str(out)])
        assert r.exit_code == 1 and "these fits are of anny" in r.output and "--model smpl" in r.output
        assert "fit3d setup-model' once" in " ".join(r.output.split())  # the set-up it needs, with its time
        assert "Traceback" not in r.output and not out.exists()
    # refused before every fit is read (a scale trial: 6k files read, 20 s, then the refusal)
    import fit3d.export as export_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export_module, "exported_people", lambda *a, **k: pytest.fail("read every fit first"))
        with pytest.raises(ValueError, match="these fits are of anny"):
            export_fits(fits_dir, "spin", tmp_path / "y.npz")
    # found by a helper: an unreadable fit file was left out without a word, exit 0
    broken = sorted(fits_dir.glob("*.npz"))[0]
    broken.write_bytes(b"")
    r = CliRunner().invoke(cli, ["export", "--fits", str(fits_dir), "--format", "humandata",
                                 "--out", str(tmp_path / "hd2.npz")])
    assert r.exit_code == 3 and f"unreadable {broken.name}" in r.output and (tmp_path / "hd2.npz").is_file(), r.output
    # a folder that cannot be written: one line, no traceback
    (tmp_path / "file").write_text("")
    r = CliRunner().invoke(cli, ["export", "--fits", str(fits_dir), "--format", "humandata",
                                 "--out", str(tmp_path / "file" / "hd.npz")])
    assert r.exit_code == 1 and "cannot export to" in r.output and "Traceback" not in r.output, r.output


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


def _edited(fits_dir, dst, edit):
    """A copy of a run folder whose per-image files ``edit(arrays)`` changed (in place)."""
    from fit3d.data.writers import fit_files, read_fit

    shutil.copytree(fits_dir, dst)
    for f in fit_files(dst):
        d = read_fit(f)
        edit(d)
        np.savez(f, **d)
    return dst


def _fitted_keys(fits):
    return [(str(i), int(a)) for i, a, s in zip(fits["image"], fits["annot_id"], fits["status"]) if s == "fitted"]


def test_invalid_fits_are_flagged_in_every_format(tmp_path, smpl_fits):
    fits, _ = merge_fits(smpl_fits)
    bad = set(_fitted_keys(fits)[:3])

    def edit(d):  # three fits marked invalid, the other fitted ones valid
        keys = [(str(d["image"]), int(a)) for a in d["annot_id"]]
        d["valid"] = np.asarray([k not in bad for k in keys]) & (d["status"] == "fitted")

    fits_dir = _edited(smpl_fits, tmp_path / "fits", edit)
    expected = {k: k not in bad for k in _fitted_keys(fits)}
    # SPIN: has_smpl masks SPIN's SMPL losses (datasets/base_dataset.py): 0 for an invalid fit
    r = CliRunner().invoke(cli, ["export", "--fits", str(fits_dir), "--format", "spin",
                                 "--out", str(tmp_path / "s.npz")])
    assert r.exit_code == 0 and "exported 12 of 14 people (smpl fits, crop camera frame), 3 of them marked invalid" in r.output, r.output
    d = np.load(tmp_path / "s.npz")
    got = {(str(i), int(a)): float(h) for i, a, h in zip(d["imgname"], d["annot_id"], d["has_smpl"])}
    assert got == {k: float(v) for k, v in expected.items()}
    # HumanData: the top-level has_smpl that mmhuman3d's HumanImageDataset reads per sample
    export_fits(fits_dir, "humandata", tmp_path / "hd.npz")
    d = np.load(tmp_path / "hd.npz", allow_pickle=True)
    got = {(str(i), int(a)): float(h) for i, a, h in zip(d["image_path"], d["misc"].item()["annot_id"], d["has_smpl"])}
    assert got == {k: float(v) for k, v in expected.items()}
    assert d["has_smpl"].shape == (int(d["__data_len__"]),) and d["config"].item() == "fit3d"
    # NeuralAnnot-style JSON: its loaders train on every entry, so invalid fits are left out by
    # default (a review: Hand4Whole and I2L-MeshNet never read "valid"); --keep-invalid flags them
    r = CliRunner().invoke(cli, ["export", "--fits", str(fits_dir), "--format", "neuralannot",
                                 "--out", str(tmp_path / "na.json")])
    assert r.exit_code == 0 and "exported 9 of 14 people" in r.output and "3 not valid (this format's loaders would " \
        "train on them: --keep-invalid exports them flagged)" in r.output, r.output
    data = json.loads((tmp_path / "na.json").read_text())
    assert sorted(data) == sorted(str(a) for (_, a), v in expected.items() if v)
    assert all(e["valid"] for e in data.values())
    r = CliRunner().invoke(cli, ["export", "--fits", str(fits_dir), "--format", "neuralannot", "--keep-invalid",
                                 "--out", str(tmp_path / "na.json")])
    assert r.exit_code == 0 and "3 of them marked invalid (flagged: valid false)" in r.output, r.output
    data = json.loads((tmp_path / "na.json").read_text())
    assert {(i, a): data[str(a)]["valid"] for i, a in expected} == expected
    assert all(set(e) == {"smpl_param", "cam_param", "valid"} for e in data.values())
    assert all(e["smpl_param"]["gender"] == "neutral" for e in data.values())
    # --valid-only still leaves them out
    c = export_fits(fits_dir, "spin", tmp_path / "v.npz", valid_only=True)
    assert c["exported"] == 9 and c["dropped"]["not valid"] == 3 and c["invalid"] == 0
    assert (np.load(tmp_path / "v.npz")["has_smpl"] == 1).all()


def test_keypoints_without_usable_coordinates_are_exported_unlabelled(tmp_path, smpl_fits):
    """A folder written before the readers unlabelled NaN keypoints holds them marked labelled:
    SPIN's ``part`` got NaN with confidence 1 and HumanData a point at the origin marked seen."""
    from fit3d.data.conventions import COCO17, SPIN24
    from fit3d.export.human_data_keypoints import HUMAN_DATA

    def edit(d):  # every fitted person's left shoulder: NaN, still "labelled"
        kp = d["keypoints_2d"].copy()
        kp[:, COCO17.index("left_shoulder")] = [np.nan, np.nan, 1.0]
        d["keypoints_2d"] = kp

    fits_dir = _edited(smpl_fits, tmp_path / "fits", edit)
    export_fits(fits_dir, "spin", tmp_path / "s.npz")
    part = np.load(tmp_path / "s.npz")["part"]
    assert np.isfinite(part).all()
    assert (part[:, SPIN24.index("left_shoulder")] == 0).all() and part[:, SPIN24.index("left_hip"), 2].any()
    export_fits(fits_dir, "humandata", tmp_path / "hd.npz")
    kp2d = np.load(tmp_path / "hd.npz", allow_pickle=True)["keypoints2d"]
    j = HUMAN_DATA.index("left_shoulder")
    assert np.isfinite(kp2d).all() and (kp2d[:, j] == 0).all() and kp2d[:, HUMAN_DATA.index("left_hip_extra"), 2].any()


def test_spin_openpose_slot_holds_openpose_input_only(smpl_fits):
    """SPIN's ``openpose`` (N, 25, 3): zeros for COCO input (as SPIN's preprocessing without
    detections), the input keypoints in BODY_25 order for OpenPose input (BODY_25 or COCO-18)."""
    from fit3d.data.conventions import COCO17, OPENPOSE_BODY25, OPENPOSE_COCO18, convert
    from fit3d.export.people import exported_people
    from fit3d.export.spin import arrays

    people, _ = exported_people(smpl_fits)
    coco = arrays(people)
    assert coco["openpose"].shape == (len(coco["part"]), 25, 3) and not coco["openpose"].any()
    for layout in (OPENPOSE_BODY25, OPENPOSE_COCO18):
        op = dict(people, keypoint_names=np.asarray(layout.names),
                  keypoints_2d=convert(people["keypoints_2d"], COCO17, layout))
        d = arrays(op)
        np.testing.assert_array_equal(d["openpose"], convert(op["keypoints_2d"], layout, OPENPOSE_BODY25))
        li = OPENPOSE_BODY25.index("left_knee")
        np.testing.assert_array_equal(d["openpose"][:, li], people["keypoints_2d"][:, COCO17.index("left_knee")])
        assert d["openpose"][:, li, 2].any()
    # a detector's scores stay scores in ``part`` too: SPIN weights its keypoint loss by them (a
    # review: they were rounded to 1, so a 0.05 detection counted as a sure annotation)
    scored = people["keypoints_2d"].copy()
    scored[..., 2] *= 0.3
    op = dict(people, keypoint_names=np.asarray(OPENPOSE_BODY25.names),
              keypoints_2d=convert(scored, COCO17, OPENPOSE_BODY25))
    part = arrays(op)["part"]
    assert set(np.unique(part[..., 2])) <= {0.0, np.float32(0.3)} and (part[..., 2] > 0).any()



def test_spin_part_takes_body25b_and_mpii_points_under_spins_names(smpl_fits):
    """A SMPL user's trial: BODY_25B's upper neck (and MPII's upper neck, pelvis and thorax) never
    reached ``part``: SPIN names those slots neck_lsp, pelvis_mpii, thorax_mpii (its mpii.py)."""
    from fit3d.data.conventions import COCO17, MPII16, OPENPOSE_BODY25, OPENPOSE_BODY25B, SPIN24, convert
    from fit3d.export.people import exported_people
    from fit3d.export.spin import arrays

    people, _ = exported_people(smpl_fits)
    n = len(people["keypoints_2d"])
    for layout, extra in ((OPENPOSE_BODY25B, {"upper_neck": "neck_lsp"}),
                          (MPII16, {"upper_neck": "neck_lsp", "pelvis": "pelvis_mpii", "thorax": "thorax_mpii"})):
        kp = convert(people["keypoints_2d"], COCO17, layout)
        for k, name in enumerate(extra):
            kp[:, layout.index(name)] = [100.0 + k, 200.0, 0.6]
        d = arrays(dict(people, keypoint_names=np.asarray(layout.names), keypoints_2d=kp))
        for k, (name, slot) in enumerate(extra.items()):
            np.testing.assert_allclose(d["part"][:, SPIN24.index(slot)], [[100.0 + k, 200.0, 0.6]] * n)
        li = SPIN24.index("left_knee")
        np.testing.assert_array_equal(d["part"][:, li], people["keypoints_2d"][:, COCO17.index("left_knee")])
        if layout is OPENPOSE_BODY25B:  # its detections in SPIN's openpose slot too, by name
            assert d["openpose"][:, OPENPOSE_BODY25.index("left_knee"), 2].any()


def test_the_fitted_gender_reaches_spin_and_humandata(tmp_path, smpl_fits):
    """A folder fitted with a male SMPL (its fit_settings.json) exports SPIN's ``gender`` ``m`` and
    HumanData's ``meta['gender']`` ``m``; neutral fits write no SPIN gender and no HumanData gender
    (mmhuman3d reads any letter but ``m`` as female: a review found neutral fits posed as female)."""
    neutral_spin, neutral_hd = tmp_path / "n.npz", tmp_path / "nhd.npz"
    export_fits(smpl_fits, "spin", neutral_spin)
    export_fits(smpl_fits, "humandata", neutral_hd)
    assert "gender" not in np.load(neutral_spin)
    assert "gender" not in np.load(neutral_hd, allow_pickle=True)["meta"].item()
    male = tmp_path / "male"
    shutil.copytree(smpl_fits, male)
    (male / "fit_settings.json").write_text(json.dumps(dict(fitter="smplify", model="smpl", gender="male")))
    export_fits(male, "spin", tmp_path / "m.npz")
    export_fits(male, "humandata", tmp_path / "mhd.npz")
    spin = np.load(tmp_path / "m.npz")
    assert spin["gender"].shape == spin["has_smpl"].shape and set(spin["gender"]) == {"m"}
    assert set(np.load(tmp_path / "mhd.npz", allow_pickle=True)["meta"].item()["gender"]) == {"m"}
    (male / "fit_settings.json").write_text(json.dumps(dict(fitter="smplify", model="smpl", gender="female")))
    r = CliRunner().invoke(cli, ["export", "--fits", str(male), "--format", "spin", "--out", str(tmp_path / "f.npz")])
    assert r.exit_code == 0 and set(np.load(tmp_path / "f.npz")["gender"]) == {"f"}
    assert "warning: these are fits of the female model" in r.output  # the trainers pose them with a neutral SMPL
    # a record of another model says nothing about these fits
    (male / "fit_settings.json").write_text(json.dumps(dict(fitter="smplify", model="smplx", gender="female")))
    export_fits(male, "spin", tmp_path / "o.npz")
    assert "gender" not in np.load(tmp_path / "o.npz")


def test_a_neuralannot_folders_gender_is_read_from_its_summaries(tmp_path, smpl_fits):
    """Found by a review: fit3d neuralannot records its settings in its summaries, not in
    fit_settings.json, so fits of a female SMPL were exported (and rendered) as neutral."""
    from fit3d.pipeline.settings import fitting_settings

    na = tmp_path / "na"
    shutil.copytree(smpl_fits, na)
    (na / "fit_settings.json").unlink(missing_ok=True)
    settings = dict(fitter="neuralannot", model="smpl", gender="female", model_file="/models/SMPL_FEMALE.pkl")
    for old in na.glob("summary*.json"):
        old.unlink()
    (na / "summary.shard-1-of-2.json").write_text(json.dumps(dict(this_run={}, settings=settings)))
    assert fitting_settings(na)["model_path"] == "/models/SMPL_FEMALE.pkl"
    out = tmp_path / "na.json"
    export_fits(na, "neuralannot", out)
    assert {e["smpl_param"]["gender"] for e in json.loads(out.read_text()).values()} == {"female"}
    (na / "fit_settings.json").write_text(json.dumps(dict(fitter="smplify", model="smpl", gender="male")))
    assert fitting_settings(na)["gender"] == "male"  # the folder's own record first

def test_a_spin_export_failing_half_way_never_leaves_another_exports_static_fits(tmp_path, smpl_fits, monkeypatch):
    """Found by a review: the dataset file was replaced, then its static fits failed to write, leaving
    the previous export's fits (other rows) beside it; SPIN's FitsDict reads them by row."""
    from fit3d.export import spin

    out = tmp_path / "p.npz"
    export_fits(smpl_fits, "spin", out, valid_only=False)
    assert spin.static_fits_path(out).is_file()

    def full_disk(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spin, "atomic_write_bytes", full_disk)
    with pytest.raises(OSError):
        export_fits(smpl_fits, "spin", out)
    assert not spin.static_fits_path(out).exists()


def test_spin_center_and_scale_are_spins_preprocessing(tmp_path, smpl_fits, sample_dir):
    from fit3d.data.readers import keypoint_bbox

    fits, _ = merge_fits(smpl_fits)
    rebuilt, openpose_like = _fitted_keys(fits)[:2]

    def edit(d):  # one box rebuilt from the keypoints (noted), one padded keypoint box without a note (OpenPose's)
        d["bbox_note"] = d["bbox_note"].astype("U64")
        for k, a in enumerate(d["annot_id"]):
            if (str(d["image"]), int(a)) in (rebuilt, openpose_like):
                d["bbox"][k] = keypoint_bbox(d["keypoints_2d"][k], pad=0.1)
            if (str(d["image"]), int(a)) == rebuilt:
                d["bbox_note"][k] = "box rebuilt from the keypoints (no box)"

    fits_dir = _edited(smpl_fits, tmp_path / "fits", edit)
    export_fits(fits_dir, "spin", tmp_path / "s.npz")
    d = np.load(tmp_path / "s.npz")
    anns = {a["id"]: a for a in json.loads((sample_dir / "test_coco.json").read_text())["annotations"]}
    for name, aid, center, scale in zip(d["imgname"], d["annot_id"], d["center"], d["scale"]):
        a = anns[int(aid)]
        if (str(name), int(aid)) in (rebuilt, openpose_like):  # SPIN's lsp_dataset.py: keypoints' box, x 1.2
            kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
            kp = kp[kp[:, 2] > 0, :2]
            lo, hi = kp.min(0), kp.max(0)
            want_center, want_scale = (lo + hi) / 2, 1.2 * (hi - lo).max() / 200
        else:  # SPIN's coco.py: scale = scaleFactor*max(bbox[2], bbox[3])/200, scaleFactor = 1.2
            x, y, w, h = a["bbox"]
            want_center, want_scale = (x + w / 2, y + h / 2), 1.2 * max(w, h) / 200
        np.testing.assert_allclose(center, want_center, atol=1e-2)
        np.testing.assert_allclose(scale, want_scale, rtol=1e-4)


def _people_of(persons, names):
    return dict(bbox=np.stack([p.bbox for p in persons]), bbox_note=np.asarray([p.bbox_note for p in persons]),
                keypoints_2d=np.stack([p.keypoints_2d for p in persons]), keypoint_names=np.asarray(names))


def test_openpose_and_spin_input_boxes_are_not_expanded_twice(tmp_path, sample_dir):
    from fit3d.data.conventions import COCO17, OPENPOSE_BODY25, convert
    from fit3d.data.readers import read_openpose
    from fit3d.data.spin import read_spin
    from fit3d.export.spin import center_scale

    data = json.loads((sample_dir / "test_coco.json").read_text())
    files = {i["id"]: i["file_name"] for i in data["images"]}
    by_image = {}
    for a in data["annotations"]:
        if a["num_keypoints"] >= 2:
            kp = np.asarray(a["keypoints"], np.float32).reshape(17, 3)
            kp[:, 2] = kp[:, 2] > 0
            by_image.setdefault(a["image_id"], []).append(convert(kp, COCO17, OPENPOSE_BODY25))
    kdir = tmp_path / "openpose"
    kdir.mkdir()
    for image, people in by_image.items():
        (kdir / f"{Path(files[image]).stem}_keypoints.json").write_text(
            json.dumps({"people": [{"pose_keypoints_2d": p.ravel().tolist()} for p in people]}))
    images, _ = read_openpose(kdir, sample_dir)
    persons = [p for r in images for p in r.people]
    assert len(persons) == 12
    center, scale = center_scale(_people_of(persons, OPENPOSE_BODY25.names))
    for k, p in enumerate(persons):  # SPIN's box of keypoints: 1.2 x their extent, once
        kp = p.keypoints_2d[p.keypoints_2d[:, 2] > 0, :2]
        lo, hi = kp.min(0), kp.max(0)
        np.testing.assert_allclose(center[k], (lo + hi) / 2, atol=1e-2)
        np.testing.assert_allclose(scale[k], 1.2 * (hi - lo).max() / 200, rtol=1e-4)
    # a SPIN file's own center and scale come back as they were (fitting from --spin-npz, then exporting)
    spin = tmp_path / "in.npz"
    part = np.stack([convert(p.keypoints_2d, OPENPOSE_BODY25, SPIN24) for p in persons])
    np.savez(spin, imgname=np.asarray([p.image_key for p in persons]), center=center, scale=scale, part=part)
    images, problems = read_spin(spin, sample_dir)
    again = [p for r in images for p in r.people]
    assert problems == [] and len(again) == 12
    c2, s2 = center_scale(_people_of(again, SPIN24.names))
    order = [int(p.annot_id) for p in again]
    np.testing.assert_allclose(c2, center[order], atol=1e-3)
    np.testing.assert_allclose(s2, scale[order], rtol=1e-5)
    # with SPIN's OpenPose detections beside part (a review: the box was expanded again and part
    # came back with detections where the annotation had none)
    from fit3d.data.conventions import SPIN_OPENPOSE

    detections = np.stack([p.keypoints_2d for p in persons]) + np.float32([3.0, -2.0, 0.0])
    detections[..., 2] = 0.7
    np.savez(spin, imgname=np.asarray([p.image_key for p in persons]), center=center, scale=scale, part=part,
             openpose=detections)
    images, problems = read_spin(spin, sample_dir)
    again = [p for r in images for p in r.people]
    assert problems == [] and {p.convention.name for p in again} == {"spin24_openpose25"}
    c3, s3 = center_scale(_people_of(again, SPIN_OPENPOSE.names))
    np.testing.assert_allclose(c3, center[order], atol=1e-3)
    np.testing.assert_allclose(s3, scale[order], rtol=1e-5)
    for p in again:  # part's own points only, as annotated; the detections only where part has no place
        np.testing.assert_array_equal(convert(p.keypoints_2d, SPIN_OPENPOSE, SPIN24), part[p.annot_id])
        toe = SPIN_OPENPOSE.index("left_big_toe")
        np.testing.assert_allclose(p.keypoints_2d[toe], detections[p.annot_id, OPENPOSE_BODY25.index("left_big_toe")])


@pytest.mark.parametrize("fmt, out, want", [("spin", "op_spin.out", "op_spin.npz"), ("humandata", "hd", "hd.npz"),
                                            ("neuralannot", "na.npz", "na.json")])
def test_export_refuses_an_out_without_the_formats_suffix(tmp_path, smpl_fits, fmt, out, want):
    r = CliRunner().invoke(cli, ["export", "--fits", str(smpl_fits), "--format", fmt, "--out", str(tmp_path / out)])
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert r.exit_code == 2 and len(errors) == 1 and str(tmp_path / want) in errors[0], r.output
    assert f"does not end in {Path(want).suffix}" in errors[0] and not (tmp_path / out).exists()
    with pytest.raises(ValueError, match=rf"does not end in \{Path(want).suffix}"):
        export_fits(smpl_fits, fmt, tmp_path / out)
    assert not (tmp_path / out).exists()


def test_export_says_what_an_unfinished_run_lacks(tmp_path, smpl_fits):
    """Found by a trial: export of a folder whose run was killed or cut by --limit exported what was
    there, exit 0, without a word (merge warns)."""
    cut = tmp_path / "cut"
    shutil.copytree(smpl_fits, cut)
    s = json.loads((cut / "summary.json").read_text())
    s["this_run"]["interrupted"] = 15  # as a run stopped by SIGTERM records it
    (cut / "summary.json").write_text(json.dumps(s))
    r = CliRunner().invoke(cli, ["export", "--fits", str(cut), "--format", "spin", "--out", str(tmp_path / "s.npz")])
    assert r.exit_code == 0, r.output
    assert "warning: shard 1/1 is unfinished" in r.output and "not in the export" in r.output
    assert "then export again" in r.output


def test_people_with_few_labelled_keypoints_can_be_left_out(tmp_path, smpl_fits):
    """A trial with truncated people: 6-9 labelled points fit to a fraction of a pixel and are valid,
    while the rest of the body is the prior's guess; --min-keypoints leaves them out, counted."""
    fits, _ = merge_fits(smpl_fits)
    fitted = fits["status"].astype(str) == "fitted"
    labelled = ((fits["keypoints_2d"][..., 2] > 0) & np.isfinite(fits["keypoints_2d"]).all(-1)).sum(-1)[fitted]
    cut = int(np.median(labelled)) + 1  # some people above it, some below
    few = int((labelled < cut).sum())
    assert 0 < few < len(labelled)
    r = CliRunner().invoke(cli, ["export", "--fits", str(smpl_fits), "--format", "spin", "--out",
                                 str(tmp_path / "s.npz"), "--min-keypoints", str(cut)])
    assert r.exit_code == 0 and f"{few} fewer than {cut} labelled keypoints" in r.output, r.output
    d = np.load(tmp_path / "s.npz")
    assert len(d["imgname"]) == len(labelled) - few and (d["part"][..., 2] > 0).sum(-1).min() >= 1
    c = export_fits(smpl_fits, "spin", tmp_path / "all.npz")
    assert c["exported"] == len(labelled)
    with pytest.raises(ValueError, match="at least 99 labelled keypoints"):
        export_fits(smpl_fits, "spin", tmp_path / "none.npz", min_keypoints=99)


def test_spin_and_neuralannot_refuse_fits_without_ten_betas(smpl_fits):
    """Found by a review: fits of a body model built from Python with 16 or 300 shape coefficients were
    written as they were, where SPIN's and NeuralAnnot's readers take 10."""
    from fit3d.export import neuralannot, spin
    from fit3d.export.people import exported_people

    people, _ = exported_people(smpl_fits)
    wide = dict(people, betas=np.concatenate([people["betas"], np.zeros((len(people["betas"]), 6), np.float32)], 1))
    for fmt in (spin.arrays, neuralannot.entries):
        fmt(people)  # 10: as before
        with pytest.raises(ValueError, match="10 shape coefficients .* these fits have 16"):
            fmt(wide)


@pytest.mark.parametrize("state, said", [
    ({"full": False, "retargeting": "rest-relative"}, "a reduced 'fit3d setup-model'"),
    ({"full": True, "retargeting": None}, "a 'fit3d setup-model' of an earlier fit3d"),
    ({"full": True, "retargeting": "rest-relative"}, None),
    (None, None),  # (a folder fitted before the record kept the set-up)
])
def test_export_warns_of_fits_made_with_weights_of_a_reduced_or_an_earlier_setup(tmp_path, smpl_fits, state, said):
    """A user's trial: fits made with --quick weights (2 of 12 valid) were exported to a training set
    with no word; the fitting run's warning was all."""
    fits_dir = tmp_path / "fits"
    shutil.copytree(smpl_fits, fits_dir)
    (fits_dir / "fit_settings.json").write_text(json.dumps(dict(fitter="smplify", model="smpl", model_setup=state)))
    r = CliRunner().invoke(cli, ["export", "--fits", str(fits_dir), "--format", "humandata",
                                 "--out", str(tmp_path / "h.npz")])
    assert r.exit_code == 0, r.output
    if said:
        assert f"made while the smpl weights in fit3d's cache came from {said}" in r.output
    else:
        assert "setup-model" not in r.output
