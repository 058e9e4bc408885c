import pytest
import torch

from fit3d.body_models import build_body_model
from fit3d.body_models.smplx_model import SMPLXModel, find_model_file
from fit3d.fitters import SMPLify


def test_missing_model_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="smpl.is.tue.mpg.de"):
        build_body_model("smpl", None)
    with pytest.raises(FileNotFoundError, match="SMPLX_NEUTRAL"):
        find_model_file("smplx", tmp_path, "neutral")
    with pytest.raises(ValueError):
        build_body_model("mano", tmp_path)


def test_fake_smpl_through_smplx(fake_smpl_dir):
    m = build_body_model("smpl", fake_smpl_dir)
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


def test_smplify_runs_through_smplx(fake_smpl_dir, make_synthetic):
    m = build_body_model("smpl", fake_smpl_dir)
    batch, gt, _ = make_synthetic(m, 4, seed=3)
    fit = SMPLify(m)
    res = fit(batch)
    assert res.body_pose.shape == (4, 23, 3)
    assert torch.isfinite(res.keypoints_3d).all()
    assert res.reproj_error_px.median() < 5.0
