import math

import numpy as np
import pytest
import roma
import torch

from fit3d.body_models.anny_model import ANNY_JOINTS, AnnyModel
from tests.fixtures.shapes import grouped_against_repeated


def test_shapes_and_names(anny_model: AnnyModel):
    m = anny_model
    assert m.num_body_joints == len(ANNY_JOINTS) - 1 == 19
    assert m.num_betas == 6
    p = m.neutral_params(3)
    out = m(**p, return_vertices=True)
    assert out.vertices.shape == (3, 13718, 3)
    assert out.joints_3d.shape == (3, 20, 3)
    assert out.keypoints_3d.shape == (3, 23, 3)
    assert m.faces().shape[1] == 3 and int(m.faces().max()) < 13718
    assert m.keypoint_convention.names[:17][5] == "left_shoulder"
    assert out.vertices.dtype == torch.float32


def test_canonical_frame_y_up_facing_plus_z(anny_model):
    m = anny_model
    p = m.neutral_params(1)
    out = m(**p)
    kp = dict(zip(m.keypoint_convention.names, out.keypoints_3d[0]))
    j = dict(zip(m.joint_names, out.joints_3d[0]))
    assert torch.allclose(j["pelvis"], torch.zeros(3), atol=1e-6)  # transl is the root position
    assert kp["nose"][1] > kp["left_hip"][1] + 0.5  # head above hips: Y up
    assert kp["nose"][2] > kp["left_ear"][2]  # facing +Z
    assert kp["left_shoulder"][0] > kp["right_shoulder"][0]  # person's left is +X (as SMPL)
    height = out.keypoints_3d[0, :, 1].max() - out.keypoints_3d[0, :, 1].min()
    assert 1.4 < height < 1.9


def test_global_orient_and_transl_are_rigid(anny_model):
    m = anny_model
    p = m.neutral_params(2)
    p["body_pose"] = torch.randn(2, 19, 3) * 0.2
    base = m(**p)
    p2 = dict(p, global_orient=torch.tensor([[math.pi, 0.0, 0.0]] * 2), transl=torch.tensor([[0.1, 0.2, 3.0]] * 2))
    moved = m(**p2)
    R = roma.rotvec_to_rotmat(p2["global_orient"])
    expect = base.keypoints_3d @ R.transpose(-1, -2) + p2["transl"][:, None]
    assert torch.allclose(moved.keypoints_3d, expect, atol=1e-5)
    # upright facing the camera in OpenCV: head has smaller y than hips
    kp = dict(zip(m.keypoint_convention.names, moved.keypoints_3d[0]))
    assert kp["nose"][1] < kp["left_hip"][1]


def test_pruned_keypoints_match_full_regressor(anny_model):
    m = anny_model
    g = torch.Generator().manual_seed(1)
    p = m.neutral_params(4)
    p["body_pose"] = torch.randn(4, 19, 3, generator=g) * 0.3
    p["betas"] = torch.randn(4, 6, generator=g)
    fast = m(**p).keypoints_3d
    full = m(**p, return_vertices=True).keypoints_3d
    assert (fast - full).norm(dim=-1).max() < 1e-3  # under 1 mm


def test_blendshape_coefficients_match_anny(anny_model):
    m = anny_model
    phen = torch.rand(5, 6, generator=torch.Generator().manual_seed(2))
    ours = m.blendshape_coefficients(phen)
    theirs = m.full._get_phenotype_blendshape_coefficients(phen, torch.zeros(5, 0), torch.zeros(5, 0))
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_betas_change_shape_and_stay_in_range(anny_model):
    m = anny_model
    p = m.neutral_params(2)
    p["betas"] = torch.tensor([[0.0] * 6, [0, 0, 0, 0, 3.0, 0]])  # taller
    out = m(**p)
    h = out.keypoints_3d[:, :, 1].max(1).values - out.keypoints_3d[:, :, 1].min(1).values
    assert h[1] > h[0] + 0.05
    ph = m.phenotype(torch.tensor([[-50.0] * 6, [50.0] * 6]))
    assert (ph >= 0).all() and (ph <= 1).all()


def test_gradients_flow(anny_model):
    m = anny_model
    p = {k: v.requires_grad_(True) for k, v in m.neutral_params(2).items()}
    out = m(**p)
    out.keypoints_3d.sum().backward()
    for k, v in p.items():
        assert v.grad is not None and torch.isfinite(v.grad).all(), k


def test_hinge_axes_flex_limbs_the_natural_way(anny_model):
    m = anny_model
    axes = m.hinge_axes()
    for side in ("left", "right"):
        p = m.neutral_params(1)
        i = m.joint_names.index(f"{side}_knee") - 1
        p["body_pose"][0, i] = axes[f"{side}_knee"] * 1.0
        kp = dict(zip(m.keypoint_convention.names, m(**p).keypoints_3d[0]))
        assert kp[f"{side}_ankle"][2] < kp[f"{side}_knee"][2] - 0.2  # shin swings backwards (-Z)
        p = m.neutral_params(1)
        i = m.joint_names.index(f"{side}_elbow") - 1
        rest = dict(zip(m.keypoint_convention.names, m(**p).keypoints_3d[0]))
        p["body_pose"][0, i] = axes[f"{side}_elbow"] * 1.0
        kp = dict(zip(m.keypoint_convention.names, m(**p).keypoints_3d[0]))
        assert kp[f"{side}_wrist"][2] > rest[f"{side}_wrist"][2]  # forearm forwards (+Z)


def test_rest_skeleton_cache_never_serves_other_shapes(anny_model):
    """Shapes without gradient reuse the last rest skeleton only when they are equal."""
    torch.manual_seed(0)
    pose = torch.randn(3, anny_model.num_body_joints, 3) * 0.2
    a, b = torch.randn(3, anny_model.num_betas), torch.randn(3, anny_model.num_betas)
    with torch.no_grad():
        ka = anny_model.canonical(pose, a).keypoints_3d
        kb = anny_model.canonical(pose, b).keypoints_3d  # same shape, other values: recomputed
        ka2 = anny_model.canonical(pose, a.clone()).keypoints_3d
    assert not torch.allclose(ka, kb)
    assert torch.allclose(ka, ka2)
    # the same tensor again: served without reading its values back (a GPU sync per iteration of
    # the pose-only stages, a CUDA audit); changed in place since: recomputed
    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Reads.count += func.__name__.startswith(("_local_scalar_dense", "equal"))
            return func(*args, **(kwargs or {}))

    with torch.no_grad():
        anny_model.canonical(pose, b)
        with Reads():
            kb2 = anny_model.canonical(pose, b).keypoints_3d
        assert Reads.count == 0 and torch.allclose(kb, kb2)
        b.copy_(a)
        assert torch.allclose(anny_model.canonical(pose, b).keypoints_3d, ka)
    with torch.inference_mode():  # (a review: inference tensors have no version counter)
        ki = anny_model.canonical(pose, a.clone()).keypoints_3d
        assert torch.allclose(anny_model.canonical(pose, a.clone()).keypoints_3d, ki)
    assert torch.allclose(ki, ka)
    a.requires_grad_(True)  # optimised shapes are never cached and get gradients
    anny_model.canonical(pose, a).keypoints_3d.sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_loading_and_posing_import_no_nvidia_warp(anny_model):
    """Every process (each worker too) pays for what it imports: anny imports NVIDIA warp (~0.5 s)
    only for warp skinning, which fit3d does not use (the model data is built, cached, by then)."""
    import subprocess
    import sys

    code = ("import sys, torch; from fit3d.body_models import build_body_model; m = build_body_model('anny'); "
            "m(torch.zeros(1, 3), torch.zeros(1, 19, 3), torch.zeros(1, 6), torch.zeros(1, 3), return_vertices=True); "
            "print('warp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_parameters_of_another_shape_are_refused(anny_model):
    """Found by an audit: an SMPL-shaped body_pose (B, 23, 3) was read as its first 19 joints."""
    B = 2
    good = dict(global_orient=torch.zeros(B, 3), body_pose=torch.zeros(B, 19, 3), betas=torch.zeros(B, 6),
                transl=torch.zeros(B, 3))
    assert anny_model(**good).joints_3d.shape == (B, 20, 3)
    for name, bad in (("body_pose", torch.zeros(B, 23, 3)), ("betas", torch.zeros(B, 10)),
                      ("transl", torch.zeros(B + 1, 3)), ("global_orient", torch.zeros(B, 4))):
        with pytest.raises(ValueError, match=name):
            anny_model(**dict(good, **{name: bad}))


def test_parameters_of_another_kind_are_named_and_float64_is_cast(anny_model):
    """A notebook trial: numpy parameters, None, an unbatched (3,) orientation and zero people gave
    AttributeErrors or reshape errors from inside; float64 failed in anny's index_put."""
    good = anny_model.neutral_params(2)
    for name, bad, error, said in (("global_orient", good["global_orient"].numpy(), TypeError, "is ndarray"),
                                   ("transl", None, TypeError, "transl is NoneType"),
                                   ("betas", torch.zeros(2, 6, dtype=torch.long), TypeError, "torch.int64 tensor"),
                                   ("global_orient", torch.zeros(3), ValueError, r"global_orient\[None\]")):
        with pytest.raises(error, match=said):
            anny_model(**dict(good, **{name: bad}))
    with pytest.raises(ValueError, match="a batch of 0 people"):
        anny_model(**{k: v[:0] for k, v in good.items()})
    out = anny_model(**{k: v.double() for k, v in good.items()})
    assert out.joints_3d.dtype == anny_model.dtype
    assert torch.allclose(out.joints_3d, anny_model(**good).joints_3d)


def test_a_model_made_float64_forgets_its_float32_rest_skeleton():
    """Found by a review: after .double(), one person of zero shape reused the float32 rest skeleton kept
    from construction, so SMPLify (and EFT --fallback) failed on a dtype clash; two people did not."""
    from fit3d.body_models.anny_model import AnnyModel
    from fit3d.fitters import SMPLify

    m32, m64 = AnnyModel(), AnnyModel().double()
    one = m64.neutral_params(1)
    out = m64(**one)
    assert out.joints_3d.dtype == torch.float64
    assert torch.allclose(out.joints_3d.float(), m32(**m32.neutral_params(1)).joints_3d, atol=1e-5)
    SMPLify(m64)  # (its set-up poses the model once at the rest shape)


def test_rows_per_shape_equals_repeating_each_shape(anny_model):
    """The fitters' hypotheses of one person share one shape (``rows_per_shape``): anny computes
    each rest skeleton once and reads each anchor matrix once for its rows; the numbers are those
    of the shapes repeated (one shape for all rows, and a single row, included)."""
    for B, G, seed in ((12, 4, 0), (6, 6, 1), (5, 1, 2), (1, 1, 3)):
        grouped_against_repeated(anny_model, B, G, seed)
    grouped_against_repeated(anny_model, 4, 2, 4, vertices=True)
    p = anny_model.neutral_params(6)
    with pytest.raises(ValueError, match="rows_per_shape = 4 for 6 rows"):
        anny_model(p["global_orient"], p["body_pose"], p["betas"][:2], p["transl"], rows_per_shape=4)
    with pytest.raises(ValueError, match=r"betas has shape \(6, 6\).*B / rows_per_shape"):
        anny_model(**p, rows_per_shape=3)
    count = np.int64(3)  # any integer type (a count computed with numpy)
    out = anny_model(p["global_orient"], p["body_pose"], p["betas"][:2], p["transl"], rows_per_shape=count)
    assert torch.allclose(out.joints_3d, anny_model(**p).joints_3d)
    with pytest.raises(ValueError, match="rows_per_shape = 1.5: an integer"):
        anny_model(**p, rows_per_shape=1.5)
    for vertices in (False, True):  # canonical called directly
        with pytest.raises(ValueError, match="4 shapes for 6 poses"):
            anny_model.canonical(p["body_pose"], p["betas"][:4], return_vertices=vertices)
