import numpy as np
import pytest
import torch

from fit3d.body_models import build_body_model
from fit3d.body_models.smplx_model import SMPLXModel, find_model_file
from fit3d.fitters import SMPLify, Stage
from tests.fixtures.shapes import grouped_against_repeated


def test_missing_model_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="smpl.is.tue.mpg.de"):
        build_body_model("smpl", None)
    with pytest.raises(FileNotFoundError, match="SMPLX_NEUTRAL"):
        find_model_file("smplx", tmp_path, "neutral")
    with pytest.raises(ValueError):
        build_body_model("mano", tmp_path)


def test_smpl_like_model_through_smplx(smpl_like_dir):
    m = build_body_model("smpl", smpl_like_dir)
    assert isinstance(m, SMPLXModel)
    assert m.num_body_joints == 23 and m.num_betas == 10
    p = m.neutral_params(2)
    out = m(**p, return_vertices=True)
    assert out.vertices.shape == (2, 6890, 3)
    assert out.joints_3d.shape == (2, 24, 3)
    assert out.keypoints_3d.shape == (2, 23, 3)
    kp = dict(zip(m.keypoint_convention.names, out.keypoints_3d[0]))
    assert kp["left_shoulder"][0] > kp["right_shoulder"][0]
    # rigid placement follows SMPL's rule: rotation about the root joint, plus transl
    p["transl"] = torch.tensor([[0.0, 0.0, 3.0]] * 2)
    moved = m(**p)
    assert torch.allclose(moved.joints_3d[:, 0], out.joints_3d[:, 0] + p["transl"], atol=1e-5)


def test_rows_per_shape_repeats_the_shapes(smpl_like_dir):
    """A model that does not group shapes itself (``groups_shapes`` False) repeats them: the same
    numbers and gradients as repeated betas."""
    m = build_body_model("smpl", smpl_like_dir)
    assert not m.groups_shapes
    grouped_against_repeated(m, 6, 3, 0)


def test_smplify_runs_through_smplx(smpl_like_dir, make_synthetic):
    m = build_body_model("smpl", smpl_like_dir)
    batch, gt, _ = make_synthetic(m, 4, seed=3)
    fit = SMPLify(m)
    res = fit(batch)
    assert res.body_pose.shape == (4, 23, 3)
    assert torch.isfinite(res.keypoints_3d).all()
    assert res.reproj_error_px.median() < 5.0


@pytest.mark.parametrize("model_type,n", [("smplh", 1), ("smplh", 8), ("smplx", 1), ("smplx", 8)])
def test_smplh_and_smplx_fit_batches_of_any_size(smpl_like_dir, make_synthetic, model_type, n):
    m = build_body_model(model_type, smpl_like_dir)
    assert m.num_body_joints == 21
    rest = m.rest_parts(n)
    assert rest["left_hand_pose"].shape == (n, 45) and (model_type == "smplh") == ("expression" not in rest)
    batch, _, _ = make_synthetic(m, n, seed=4)
    short = [Stage("camera", ("global_orient", "transl"), 30, 0.05, dict(reprojection=1.0, depth=100.0), "torso"),
             Stage("body", ("global_orient", "body_pose", "betas", "transl"), 60, 0.04,
                   dict(reprojection=1.0, pose_prior=1.0, bend=10.0, shape=1.0))]
    res = SMPLify(m, schedule=short, depth_flips=False)(batch)
    assert res.body_pose.shape == (n, 21, 3) and torch.isfinite(res.keypoints_3d).all()
    assert res.reproj_error_px.median() < 8.0  # a short schedule: fits, not tuned


def test_smplx_from_the_command_line(tmp_path, smpl_like_dir, sample_dir, schedule_file):
    import json

    from click.testing import CliRunner

    from fit3d.cli.main import cli

    sched = schedule_file(5)
    out = tmp_path / "fits"
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"),
                                 "--out", str(out), "--model", "smplx", "--model-path", str(smpl_like_dir),
                                 "--prior", "l2", "--schedule", str(sched), "--no-progress"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())["this_run"]
    assert s["people_fitted"] == 12 and s["people_failed"] == 0


def test_coco_hips_do_not_pull_smpl_hip_joints(smpl_like_dir, make_synthetic, anny_model):
    """SMPL's hip joints are not COCO's hips: weight 0 outside the camera stage (as SPIN);
    anny's keypoints are regressed to the annotated anatomy: all weight 1."""
    assert (anny_model.keypoint_weights() == 1).all()
    m = build_body_model("smpl", smpl_like_dir)
    w = dict(zip(m.keypoint_convention.names, m.keypoint_weights().tolist()))
    assert w["left_hip"] == w["right_hip"] == 0.0 and w["left_knee"] == w["nose"] == 1.0
    batch, _, _ = make_synthetic(m, 2, seed=5)
    fit = SMPLify(m, schedule=[Stage("body", ("body_pose",), 1, 0.01, dict(reprojection=1.0))], depth_flips=False)
    params = m.neutral_params(2)
    params["transl"] = torch.tensor([[0.0, 0.0, 4.0]] * 2)
    body = m(**params)
    moved = batch.keypoints_2d.clone()
    hips = [m.keypoint_convention.index("left_hip"), m.keypoint_convention.index("right_hip")]
    base = fit.losses(fit.schedule[0], body, params, batch, dict(scale=torch.ones(2) * 100))
    moved[:, hips, :2] += 500.0
    batch.keypoints_2d = moved
    assert torch.allclose(fit.losses(fit.schedule[0], body, params, batch, dict(scale=torch.ones(2) * 100)), base)


def test_a_bad_model_file_is_one_clear_line(tmp_path, sample_dir):
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    bad = tmp_path / "smpl" / "SMPL_NEUTRAL.pkl"
    bad.parent.mkdir()
    bad.write_bytes(b"not a pickle")
    r = CliRunner().invoke(cli, ["smplify", "--images", str(sample_dir), "--annotations",
                                 str(sample_dir / "test_coco.json"), "--out", str(tmp_path / "o"), "--model", "smpl",
                                 "--model-path", str(tmp_path)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "SMPL_NEUTRAL.pkl" in r.output and len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("model_type", ["smpl", "smplh", "smplx"])
def test_skeleton_path_equals_smplx_forward(smpl_like_dir, model_type):
    """Fitting iterations skip the mesh: same joints and keypoints as smplx's full forward."""
    m = build_body_model(model_type, smpl_like_dir)
    g = torch.Generator().manual_seed(0)
    pose = torch.randn(4, m.num_body_joints, 3, generator=g) * 0.4
    betas = torch.randn(4, m.num_betas, generator=g)
    fast = m.canonical(pose, betas)
    full = m.canonical(pose, betas, return_vertices=True)
    assert fast.vertices is None and full.vertices is not None
    assert torch.allclose(fast.joints_3d, full.joints_3d, atol=1e-5)
    assert torch.allclose(fast.keypoints_3d, full.keypoints_3d, atol=1e-5)
    one = m.canonical(pose, betas[:1])  # one shape for every pose (as retargeting does)
    assert torch.allclose(one.joints_3d, m.canonical(pose, betas[:1].expand(4, -1)).joints_3d, atol=1e-6)


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
def test_posing_reads_nothing_back_from_the_device(smpl_like_dir, model_type):
    """A CUDA audit: smplx's batch_rigid_transform indexes a list with a tensor per joint, a GPU
    sync each (23 per SMPL forward, 54 per SMPL-X forward, in every fitting iteration). The
    skeleton path's own kinematics reads no value back (counted here on the CPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Reads.count += func.__name__.startswith("_local_scalar_dense")
            return func(*args, **(kwargs or {}))

    m = build_body_model(model_type, smpl_like_dir)
    pose, betas = torch.zeros(2, m.num_body_joints, 3), torch.zeros(2, m.num_betas)
    m.canonical(pose, betas)  # (the tables are built once)
    with Reads():
        m.canonical(pose, betas)
    assert Reads.count == 0


def test_the_downloads_own_file_names_are_found_and_their_gender_checked(tmp_path, smpl_like_dir):
    """SMPL's download names its files basicmodel_{neutral,m,f}_lbs_10_207_0_v1.1.0.pkl, MANO's SMPL-H
    SMPLH_male.pkl, AMASS <gender>/model.npz: found without renaming; smplx.create, given such a file,
    took 'basicmodel' or 'model' for the model type (the file was called unreadable)."""
    import shutil

    smpl = smpl_like_dir / "smpl" / "SMPL_NEUTRAL.pkl"
    (tmp_path / "smpl").mkdir()
    official = tmp_path / "smpl" / "basicmodel_m_lbs_10_207_0_v1.1.0.pkl"
    shutil.copy(smpl, official)
    assert find_model_file("smpl", tmp_path, "male") == official
    with pytest.raises(FileNotFoundError, match="no female SMPL model file found"):
        find_model_file("smpl", tmp_path, "female")
    m = build_body_model("smpl", official, gender="male")
    assert m.gender == "male" and m.model_file == official and m.num_body_joints == 23
    with pytest.raises(ValueError, match="is the male SMPL model.*--gender male"):
        build_body_model("smpl", official)  # the neutral model asked for, the male one given
    shutil.copy(smpl_like_dir / "smplh" / "SMPLH_NEUTRAL.pkl", tmp_path / "SMPLH_female.pkl")
    assert find_model_file("smplh", tmp_path, "female") == tmp_path / "SMPLH_female.pkl"
    (tmp_path / "smplx" / "neutral").mkdir(parents=True)
    shutil.copy(smpl_like_dir / "smplx" / "SMPLX_NEUTRAL.npz", tmp_path / "smplx" / "neutral" / "model.npz")
    assert find_model_file("smplx", tmp_path, "neutral") == tmp_path / "smplx" / "neutral" / "model.npz"
    m = build_body_model("smplx", tmp_path / "smplx" / "neutral" / "model.npz")
    assert m.name == "smplx" and m.num_body_joints == 21


@pytest.mark.parametrize("model_type, source", [("smplh", "SMPLH_NEUTRAL.pkl"), ("smplx", "SMPLX_NEUTRAL.npz")])
def test_a_file_without_the_mano_hand_pca_loads(tmp_path, smpl_like_dir, model_type, source):
    """Found by a review: AMASS's "Extended SMPL+H" model.npz (and the SMPL-X files made for
    SOMA / MoSh / AMASS) have no hands_components / hands_mean, which smplx reads even with
    use_pca=False: the file was called unreadable or damaged. fit3d's hands are flat and at rest."""
    from fit3d.body_models.smplx_model import read_model_data

    full = smpl_like_dir / model_type / source
    data = {k: v for k, v in read_model_data(full).items() if not k.startswith("hands_")}
    amass = tmp_path / "male" / "model.npz"
    amass.parent.mkdir()
    np.savez(amass, **data)
    m, ref = build_body_model(model_type, tmp_path, gender="male"), build_body_model(model_type, full)
    assert m.model_file == amass
    g = torch.Generator().manual_seed(0)
    pose, betas = torch.randn(3, ref.num_body_joints, 3, generator=g) * 0.3, torch.randn(3, ref.num_betas, generator=g)
    a, b = m.canonical(pose, betas, return_vertices=True), ref.canonical(pose, betas, return_vertices=True)
    assert torch.allclose(a.keypoints_3d, b.keypoints_3d, atol=1e-6) and torch.allclose(a.vertices, b.vertices, atol=1e-6)


def test_a_file_of_another_smpl_family_model_is_named_as_such(smpl_like_dir):
    """Found by a trial: a SMPL-H file given as --model smpl loaded, then every pose failed deep in
    smplx's lbs with a traceback; a SMPL-X .npz given as SMPL was called damaged."""
    from fit3d.body_models import build_body_model

    with pytest.raises(ValueError, match=r"a model of 52 joints, not SMPL's 24: a SMPLH file \(use --model smplh\)"):
        build_body_model("smpl", smpl_like_dir / "smplh" / "SMPLH_NEUTRAL.pkl")
    with pytest.raises(ValueError, match="a file of another model"):
        build_body_model("smpl", smpl_like_dir / "smplx" / "SMPLX_NEUTRAL.npz")


def test_a_call_under_inference_mode_leaves_later_gradients_working(smpl_like_dir):
    """Found by a review: the skeleton tables, first built under torch.inference_mode(), were inference
    tensors, and every later fit through that model failed in its backward."""
    m = build_body_model("smpl", smpl_like_dir)
    p = m.neutral_params(2)
    with torch.inference_mode():
        m(p["global_orient"], p["body_pose"], p["betas"], p["transl"])
    pose = (p["body_pose"] + 0.1).requires_grad_(True)
    m(p["global_orient"], pose, p["betas"], p["transl"]).keypoints_3d.sum().backward()
    assert torch.isfinite(pose.grad).all() and pose.grad.abs().sum() > 0


def test_an_old_chumpy_pickle_is_named_with_what_to_use_instead(tmp_path):
    f = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    f.write_bytes(b"\x80\x02cchumpy.ch\nCh\nq\x00.")  # a pickle of a chumpy object, as SMPLify's old files hold
    with pytest.raises(ValueError, match="chumpy objects"):
        build_body_model("smpl", f)


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
def test_the_gpus_products_give_the_same_body(smpl_like_dir, model_type, monkeypatch):
    import fit3d.body_models.base as base
    import fit3d.body_models.smplx_model as sm
    from tests.body_models.test_anny_kinematics import check_cuda_products_on_cpu

    check_cuda_products_on_cpu(build_body_model(model_type, smpl_like_dir), monkeypatch, (sm, base))
