"""Flip test-time augmentation: the mirror is the body model's, and EFT runs through it."""

import pytest
import torch

from fit3d.data.conventions import mirror_permutation
from fit3d.fitters.eft import EFT
from fit3d.regressors.base import crop_cam_to_transl
from fit3d.regressors.flip import FlipAveraged, mirror_batch
from fit3d.regressors.keypoint_regressor import KeypointRegressor
from tests.conftest import synthetic_people


def _regressor(model, seed=0, prototypes=None):
    torch.manual_seed(seed)
    reg = KeypointRegressor(len(model.keypoint_convention), model.num_body_joints, model.num_betas,
                            width=32, prototypes=prototypes)
    with torch.no_grad():  # IEF's last layer starts at zero: give the prediction something to mirror
        reg.ief[-1].weight.normal_(0, 0.05)
    return reg.eval()


def test_mirror_permutation():
    assert mirror_permutation(["nose", "left_eye", "right_eye"]).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="counterpart"):
        mirror_permutation(["nose", "left_eye"])


def test_mirrored_parameters_pose_the_mirrored_body(anny_model):
    """``mirror_params`` is the body's mirror: keypoints of the mirrored prediction equal the
    prediction's keypoints with camera x negated and left and right swapped."""
    reg = _regressor(anny_model)
    g = torch.Generator().manual_seed(1)
    p = reg.init_params + 0.3 * torch.randn(4, reg.n_params, generator=g)
    perm = mirror_permutation(list(anny_model.joint_names)[1:])
    a, m = reg.decode(p), reg.decode(reg.mirror_params(p, perm))
    box = torch.tensor([[-100.0, 50.0, 200.0, 300.0]]).repeat(4, 1)
    f, pp = torch.full((4, 2), 1000.0), torch.zeros(4, 2)
    mbox = torch.cat([-(box[:, :1] + box[:, 2:3]), box[:, 1:]], -1)
    with torch.no_grad():
        oa = anny_model(a["global_orient"], a["body_pose"], a["betas"], crop_cam_to_transl(a["cam"], box, f, pp))
        om = anny_model(m["global_orient"], m["body_pose"], m["betas"], crop_cam_to_transl(m["cam"], mbox, f, pp))
    kp = oa.keypoints_3d * torch.tensor([-1.0, 1.0, 1.0])
    kperm = mirror_permutation(anny_model.keypoint_convention.names)
    assert torch.allclose(om.keypoints_3d, kp[:, kperm], atol=1e-4)


def test_mirrored_batch_is_the_mirrored_people_seen_by_the_mirrored_camera(anny_model):
    """``mirror_batch``'s keypoints are the projections of the 3D keypoints mirrored (camera x
    negated, sides swapped) through the camera with its principal point mirrored."""
    from fit3d.geometry import project

    batch, _, out = synthetic_people(anny_model, 3, seed=6)
    kperm = mirror_permutation(anny_model.keypoint_convention.names)
    mirrored = mirror_batch(batch, kperm)
    kp3d = out.keypoints_3d[:, kperm] * torch.tensor([-1.0, 1.0, 1.0])
    expected = project(kp3d, batch.focal_length, mirrored.principal_point)
    assert torch.allclose(mirrored.keypoints_2d[..., :2], expected, atol=1e-3)
    assert torch.equal(mirrored.keypoints_2d[..., 2], batch.keypoints_2d[:, kperm, 2])
    lo, hi = expected.min(1).values, expected.max(1).values  # the box still encloses them
    assert torch.allclose(mirrored.bbox, torch.cat([lo, hi - lo], -1), atol=1e-3)


def test_flip_averaged_prediction_is_mirror_symmetric(anny_model):
    batch, _, _ = synthetic_people(anny_model, 3, seed=2)
    flip = FlipAveraged(_regressor(anny_model), anny_model)
    kperm = mirror_permutation(anny_model.keypoint_convention.names)
    mirrored = mirror_batch(batch, kperm)
    assert torch.allclose(mirror_batch(mirrored, kperm).keypoints_2d, batch.keypoints_2d)
    with torch.no_grad():
        a, m = flip.predict(batch), flip.predict(mirrored)
    jperm = mirror_permutation(list(anny_model.joint_names)[1:])
    sign = torch.tensor([1.0, -1.0, -1.0])
    assert torch.allclose(m["body_pose"], a["body_pose"][:, jperm] * sign, atol=1e-4)
    assert torch.allclose(m["global_orient"], a["global_orient"] * sign, atol=1e-4)
    assert torch.allclose(m["transl"], a["transl"] * torch.tensor([-1.0, 1.0, 1.0]), atol=1e-4)
    # it is not just one of the two predictions
    direct = flip.inner.predict(batch)
    assert not torch.allclose(a["body_pose"], direct["body_pose"], atol=1e-3)


def test_eft_through_flip_averaging_fits_each_person_on_its_own(anny_model):
    batch, _, _ = synthetic_people(anny_model, 3, seed=4, noise_px=1.0)
    reg = _regressor(anny_model, seed=5)
    eft = EFT(anny_model, FlipAveraged(reg, anny_model), steps=5, lr=1e-3, accept_ratio=None)
    together = eft(batch)
    alone = eft(batch.index(slice(1, 2)))
    assert torch.allclose(together.body_pose[1:2], alone.body_pose, atol=1e-4)
    start = EFT(anny_model, FlipAveraged(reg, anny_model), steps=0, accept_ratio=None)(batch)
    assert (together.loss < start.loss).all()  # fine-tuning through the average lowers each person's loss
    assert not torch.allclose(together.body_pose, start.body_pose, atol=1e-4)


def test_flip_averaging_refuses_a_prototype_head_and_other_modules(anny_model):
    protos = torch.zeros(2, anny_model.num_body_joints, 3)
    with pytest.raises(ValueError, match="prototype"):
        FlipAveraged(_regressor(anny_model, prototypes=protos), anny_model)
    from fit3d.regressors.plain import PlainRegressor

    with pytest.raises(TypeError, match="regress_with"):
        FlipAveraged(PlainRegressor(_regressor(anny_model)), anny_model)
    with pytest.raises(ValueError, match="entries"):
        _regressor(anny_model).mirror_params(torch.zeros(1, _regressor(anny_model).n_params), [0, 1])


def test_build_eft_flip_option(anny_model, tmp_path, monkeypatch, sample_dir):
    """``fit3d eft --no-flip`` reaches ``build_eft``; a prototype head runs without the flip, with a warning."""
    from click.testing import CliRunner

    import fit3d.fitters.build as build
    from fit3d.cli.main import cli
    from fit3d.regressors.io import save_regressor

    protos = torch.zeros(2, anny_model.num_body_joints, 3)
    save_regressor(_regressor(anny_model, prototypes=protos), tmp_path / "pm.pt")
    with pytest.warns(UserWarning, match="flip averaging skipped"):
        f = build.build_eft(anny_model, regressor_path=tmp_path / "pm.pt")
    assert not isinstance(f.regressor, FlipAveraged)
    seen = []

    def fake(*args, **kwargs):
        seen.append(kwargs["flip"])
        raise SystemExit(0)

    monkeypatch.setattr(build, "build_eft", fake)
    for flag, want in (("--no-flip", False), ("--flip", True)):
        CliRunner().invoke(cli, ["eft", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"),
                                 "--out", str(tmp_path / "o"), flag])
    assert seen == [False, True]


def test_with_flip_wraps_unless_told_not_to_or_the_regressor_has_prototypes(anny_model):
    from fit3d.regressors.flip import with_flip

    plain = _regressor(anny_model)
    assert isinstance(with_flip(plain, anny_model), FlipAveraged)
    assert with_flip(plain, anny_model, flip=False) is plain
    protos = _regressor(anny_model, prototypes=torch.zeros(3, anny_model.num_body_joints, 3))
    with pytest.warns(UserWarning, match="prototype head"):
        assert with_flip(protos, anny_model) is protos
