import math

import pytest
import torch

from fit3d.fitters.camera_init import METHODS, estimate_depth, image_roll, orientation_hypotheses, root_pixel
from fit3d.fitters.smplify import SMPLify


def _drop(batch, names):
    conv = batch.convention
    for n in names:
        batch.keypoints_2d[:, conv.index(n), 2] = 0
    return batch


@pytest.mark.parametrize(
    "dropped, methods",
    [
        ((), {"torso"}),
        (("left_hip", "right_hip"), {"shoulders", "upper_arms", "shins"}),  # hidden at the waist
        (("left_shoulder", "right_shoulder"), {"hips", "thighs", "shins"}),  # head and shoulders out of frame
        (("left_shoulder", "right_shoulder", "left_hip", "right_hip"), {"shins"}),
        (("left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee", "left_elbow", "right_elbow"), {"bbox"}),
    ],
)
def test_depth_fallbacks_on_truncated_people(anny_model, make_synthetic, dropped, methods):
    batch, gt, out = make_synthetic(anny_model, 16, seed=7)
    batch = _drop(batch, dropped)
    fit = SMPLify(anny_model)
    z, m = estimate_depth(batch.keypoints_2d, batch.bbox, batch.focal_length, batch.convention,
                          fit.rest_keypoints, fit.standing_height)
    assert {METHODS[i] for i in m.tolist()} <= methods
    rel = (z / gt["transl"][:, 2] - 1).abs()
    # similar triangles overestimate depth under foreshortening; the median stays close
    assert rel.median() < 0.35, (dropped, rel)
    assert torch.isfinite(z).all() and (z > 0).all()


def test_without_the_torso_the_depth_is_the_median_of_the_segments_shown(anny_model, make_synthetic):
    """One foreshortened segment (a side-on person's shoulders, drawn 4x shorter) does not decide
    the depth of a person without the torso: the median of the segments shown does."""
    batch, gt, out = make_synthetic(anny_model, 8, seed=3)
    batch = _drop(batch, ("left_hip", "right_hip"))
    fit = SMPLify(anny_model)
    args = (batch.bbox, batch.focal_length, batch.convention, fit.rest_keypoints, fit.standing_height)
    z, m = estimate_depth(batch.keypoints_2d, *args)
    conv, kp = batch.convention, batch.keypoints_2d.clone()
    l, r = conv.index("left_shoulder"), conv.index("right_shoulder")
    mid = 0.5 * (kp[:, l, :2] + kp[:, r, :2])
    kp[:, l, :2] = mid + 0.25 * (kp[:, l, :2] - mid)
    kp[:, r, :2] = mid + 0.25 * (kp[:, r, :2] - mid)
    narrow = (kp[:, l, :2] - kp[:, r, :2]).norm(dim=-1) > 2.0  # (still a measurable width)
    z2, m2 = estimate_depth(kp, *args)
    assert narrow.sum() >= 4
    assert (z2[narrow] / z[narrow] - 1).abs().max() < 0.35  # the shoulders alone: 4x as far
    assert (m2[narrow] != METHODS.index("shoulders")).all()


def test_far_people_start_as_far_as_their_size_says(anny_model, make_synthetic):
    """A person 20-odd pixels tall in a 12-megapixel photo is hundreds of metres away: the start is
    not cut at a bound (200 m cut them short, and the fits shrank them to a child's height)."""
    batch, gt, out = make_synthetic(anny_model, 4, seed=2)
    fit = SMPLify(anny_model)
    args = (batch.convention, fit.rest_keypoints, fit.standing_height)
    z, _ = estimate_depth(batch.keypoints_2d, batch.bbox, batch.focal_length, *args)
    kp = batch.keypoints_2d.clone()
    centre = batch.bbox[:, None, :2] + 0.5 * batch.bbox[:, None, 2:]
    kp[..., :2] = centre + (kp[..., :2] - centre) / 100  # 100x smaller: 100x as far
    box = torch.cat([centre[:, 0] - batch.bbox[:, 2:] / 200, batch.bbox[:, 2:] / 100], -1)
    z_far, _ = estimate_depth(kp, box, batch.focal_length, *args)
    # (segments under 2 px carry no scale: other segments than at full size decide)
    assert (z_far > 300).all() and ((z_far / (100 * z) - 1).abs() < 0.3).all()


def test_root_pixel_and_roll(anny_model, make_synthetic):
    batch, gt, out = make_synthetic(anny_model, 4, seed=2)
    uv = root_pixel(batch.keypoints_2d, batch.bbox, batch.convention)
    conv = batch.convention
    mid = 0.5 * (batch.keypoints_2d[:, conv.index("left_hip"), :2] + batch.keypoints_2d[:, conv.index("right_hip"), :2])
    assert torch.allclose(uv, mid)
    roll = image_roll(batch.keypoints_2d, conv)
    assert roll.abs().max() < math.radians(45)  # upright people
    # an upside-down person rolls by ~180 degrees
    flipped = batch.keypoints_2d.clone()
    flipped[..., 1] = 1000 - flipped[..., 1]
    r2 = image_roll(flipped, conv)
    assert (r2.abs() > math.radians(135)).all()


def test_hypotheses_face_the_camera_then_turn(anny_model):
    rv = orientation_hypotheses(torch.zeros(1), (0.0, 180.0))
    p = anny_model.neutral_params(2)
    p["global_orient"] = rv[0]
    p["transl"] = torch.tensor([[0, 0, 3.0]] * 2)
    kp = anny_model(**p).keypoints_3d
    conv = anny_model.keypoint_convention
    nose, ear = conv.index("nose"), conv.index("left_ear")
    assert kp[0, nose, 2] < kp[0, ear, 2]  # yaw 0: nose towards the camera
    assert kp[1, nose, 2] > kp[1, ear, 2]  # yaw 180: facing away
    assert kp[0, nose, 1] < kp[0, conv.index("left_ankle"), 1]  # upright in OpenCV (y down)


def test_an_unlabelled_point_with_nan_coordinates_does_not_spoil_its_segment(anny_model, make_synthetic):
    """A review: one side's shoulder at NaN (unlabelled) made the torso's length NaN, and the
    person fell back to its box; the other side's torso stands."""
    batch, gt, out = make_synthetic(anny_model, 4, seed=5)
    fit = SMPLify(anny_model)
    args = (batch.bbox, batch.focal_length, batch.convention, fit.rest_keypoints, fit.standing_height)
    kp = batch.keypoints_2d.clone()
    kp[:, batch.convention.index("right_shoulder")] = torch.tensor([math.nan, math.nan, 0.0])
    z, m = estimate_depth(kp, *args)
    assert (m == METHODS.index("torso")).all() and torch.isfinite(z).all()
