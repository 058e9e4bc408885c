import pytest
import torch

from fit3d.fitters.result import VALID_ERROR_FRACTION, FitResult, is_valid


def test_is_valid_threshold_nan_and_params():
    kp = torch.tensor([[0.0, 0.0, 1.0], [60.0, 0.0, 1.0], [0.0, 80.0, 1.0]]).repeat(3, 1, 1)
    bbox = torch.tensor([[0.0, 0.0, 60.0, 80.0]]).repeat(3, 1)  # person scale: 100 px
    limit = VALID_ERROR_FRACTION * 100.0
    err = torch.tensor([limit, limit + 0.01, float("nan")])
    assert is_valid(err, kp, bbox).tolist() == [True, False, False]
    assert is_valid(err, kp, bbox, fraction=1.0).tolist() == [True, True, False]
    pose = torch.zeros(3, 4, 3)
    pose[0, 2, 1] = float("inf")
    assert is_valid(err, kp, bbox, fraction=1.0, params={"body_pose": pose}).tolist() == [False, True, False]


def test_a_fit_of_keypoints_on_one_point_or_line_is_not_valid():
    """A trial: fitters called from Python (no batch run skipping such people) returned fits of all
    17 points at one place, or on a line with a pixel's jitter, as valid at any depth."""
    g = torch.Generator().manual_seed(0)
    person = torch.cat([torch.rand(1, 17, 2, generator=g) * 200, torch.ones(1, 17, 1)], -1)
    point = person.clone()
    point[..., :2] = 150.0
    line = person.clone()
    line[..., 0] = 300.0 + 0.8 * torch.randn(1, 17, generator=g)
    line[..., 1] = torch.linspace(0, 380, 17)
    kp = torch.cat([person, point, line])
    bbox = torch.tensor([[0.0, 0.0, 400.0, 400.0]]).repeat(3, 1)
    assert is_valid(torch.zeros(3), kp, bbox).tolist() == [True, False, False]


def _result(B: int, value: float, extras: dict) -> "FitResult":
    from fit3d.data.conventions import get_convention
    from fit3d.fitters.result import FitResult

    f = lambda *s: torch.full((B, *s), value)  # noqa: E731
    return FitResult(global_orient=f(3), body_pose=f(2, 3), betas=f(4), transl=f(3), joints_3d=f(3, 3),
                     keypoints_3d=f(5, 3), keypoints_2d_fit=f(5, 2), reproj_error_px=f(), valid=f() > 0,
                     loss=f(), iterations=torch.full((B,), int(value)), convention=get_convention("coco17"),
                     extras=extras)


def test_where_takes_each_person_from_one_result_extras_included():
    import pytest

    a = _result(3, 1.0, {"flag": torch.ones(3, dtype=torch.bool), "k": torch.full((3,), 7)})
    b = _result(3, 0.0, {"flag": torch.zeros(3, dtype=torch.bool), "k": torch.full((3,), -1), "extra": torch.ones(3)})
    mask = torch.tensor([True, False, True])
    r = a.where(mask, b)
    assert r.body_pose[:, 0, 0].tolist() == [1.0, 0.0, 1.0] and r.valid.tolist() == [True, False, True]
    assert r.iterations.tolist() == [1, 0, 1] and r.keypoints_2d_fit.shape == (3, 5, 2)
    assert r.extras["flag"].tolist() == [True, False, True] and r.extras["k"].tolist() == [7, -1, 7]
    assert set(r.extras) == {"flag", "k"} and r.convention is a.convention
    with pytest.raises(KeyError):
        b.where(mask, a)  # a lacks b's "extra"


def test_refinement_pays_above_the_ratio_or_when_the_base_is_invalid():
    from fit3d.fitters.result import refinement_pays

    base = torch.tensor([3.0, 3.0, 1.0, float("nan")])
    refined = torch.tensor([1.0, 2.5, 2.0, 1.0])
    valid = torch.tensor([True, True, False, False])
    assert refinement_pays(base, refined, 1.5, valid).tolist() == [True, False, True, True]
    assert refinement_pays(base, refined, 1.1, torch.ones(4, dtype=torch.bool)).tolist() == [True, True, False, False]
    # a diverged refinement never replaces a finite base, even an invalid one (a review found NeuralAnnot
    # keeping NaN annotations over finite predictions when both were invalid)
    nan = torch.tensor([float("nan"), float("inf"), float("nan"), 1.0])
    base2 = torch.tensor([50.0, 50.0, float("nan"), float("nan")])
    invalid = torch.zeros(4, dtype=torch.bool)
    assert refinement_pays(base2, nan, 1.5, invalid).tolist() == [False, False, True, True]


def test_index_and_scatter_move_people_with_their_extras():
    import pytest

    a = _result(4, 1.0, {"k": torch.arange(4), "flag": torch.zeros(4, dtype=torch.bool)})
    sub = a.index(torch.tensor([3, 1]))
    assert len(sub) == 2 and sub.extras["k"].tolist() == [3, 1] and sub.body_pose.shape == (2, 2, 3)
    assert a.index(torch.tensor([True, False, False, True])).extras["k"].tolist() == [0, 3]
    rows = _result(2, 5.0, {"flag": torch.ones(2, dtype=torch.bool)})
    r = a.scatter(torch.tensor([2, 0]), rows)
    assert r.transl[:, 0].tolist() == [5.0, 1.0, 5.0, 1.0] and r.iterations.tolist() == [5, 1, 5, 1]
    assert r.extras["flag"].tolist() == [True, False, True, False]
    assert r.extras["k"].tolist() == [0, 1, 2, 3]  # rows without this extra: kept
    assert a.transl[:, 0].tolist() == [1.0] * 4  # a copy: the original is unchanged
    with pytest.raises(ValueError):
        a.scatter(torch.tensor([0]), rows)


def test_repr_shows_shapes_not_values(anny_model):
    B, K = 2, len(anny_model.keypoint_convention)
    z = torch.zeros
    r = FitResult(z(B, 3), z(B, anny_model.num_body_joints, 3), z(B, anny_model.num_betas), z(B, 3),
                  z(B, 20, 3), z(B, K, 3), z(B, K, 2), z(B), torch.ones(B, dtype=torch.bool), z(B),
                  z(B, dtype=torch.long), anny_model.keypoint_convention, dict(prototype=z(B, dtype=torch.long)))
    text = repr(r)
    assert text.startswith("FitResult(B=2, global_orient=(2, 3), body_pose=(2, 19, 3)") and "prototype=(2,)" in text
    assert len(text) < 600


def test_reprojection_error_leaves_out_keypoints_no_fit_is_asked_to_reach():
    """Found by a review: SMPL's hips (weight 0 in every fit: another point than COCO's hips)
    counted in the error, so their fixed gap entered the validity rule and the comparisons of
    EFT, NeuralAnnot and --fallback."""
    from fit3d.fitters.result import reprojection_error_px

    kp = torch.tensor([[[0.0, 0.0, 1.0], [10.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    proj = torch.tensor([[[3.0, 4.0], [10.0, 0.0], [100.0, 0.0], [0.0, 40.0]]])
    assert reprojection_error_px(proj, kp).item() == 15.0  # (5 + 0 + 40) / 3: the unlabelled point not counted
    w = torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert reprojection_error_px(proj, kp, w).item() == 2.5  # the weight-0 point left out
    assert reprojection_error_px(proj, kp, torch.tensor([0.0, 0.0, 1.0, 0.0])).isnan().all()  # none left


def test_reprojection_error_weighs_keypoints_by_their_confidence():
    """A MediaPipe / OpenPose trial: a point the detector barely saw (which the fit's loss weighs
    by its score and so rightly does not follow) counted fully in the error and made fits
    invalid; annotations' 0/1 confidences give the plain mean as before."""
    from fit3d.fitters.result import reprojection_error_px

    kp = torch.tensor([[[0.0, 0.0, 0.9], [10.0, 0.0, 0.1], [0.0, 0.0, 0.0]]])
    proj = torch.tensor([[[2.0, 0.0], [10.0, 100.0], [100.0, 0.0]]])
    assert reprojection_error_px(proj, kp).item() == pytest.approx((0.9 * 2 + 0.1 * 100) / 1.0)
    kp[..., 2] = torch.tensor([1.0, 1.0, 0.0])
    assert reprojection_error_px(proj, kp).item() == pytest.approx(51.0)
    kp[..., 2] = torch.tensor([float("nan"), 0.0, 0.0])
    assert reprojection_error_px(proj, kp).isnan().all()


def test_fitters_report_the_error_on_the_keypoints_they_fit(anny_model, make_synthetic, monkeypatch):
    from dataclasses import replace

    from fit3d.fitters import SMPLify, Stage
    from fit3d.fitters.result import reprojection_error_px

    batch, _, _ = make_synthetic(anny_model, 2, seed=2)
    names = anny_model.keypoint_convention.names
    hips = [names.index(n) for n in ("left_hip", "right_hip")]
    w = torch.ones(len(names))
    w[hips] = 0.0
    monkeypatch.setattr(anny_model, "keypoint_weights", lambda: w)
    kp = batch.keypoints_2d.clone()
    kp[:, hips, 1] += 60.0  # a fixed gap at points the fit does not weigh
    fitter = SMPLify(anny_model, schedule=[Stage("camera", ("global_orient", "transl"), 30, 0.05,
                                                 dict(reprojection=1.0, depth=100.0), keypoints="torso"),
                                           Stage("body", ("global_orient", "body_pose", "betas", "transl"), 60, 0.04,
                                                 dict(reprojection=1.0, pose_prior=1.0, shape=1.0))], depth_flips=False)
    res = fitter(replace(batch, keypoints_2d=kp))
    assert torch.allclose(res.reproj_error_px, reprojection_error_px(res.keypoints_2d_fit, kp, w))
    assert (reprojection_error_px(res.keypoints_2d_fit, kp) > res.reproj_error_px + 4).all()  # the hips' gap
