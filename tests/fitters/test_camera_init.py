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
    "dropped, method",
    [
        ((), "torso"),
        (("left_hip", "right_hip"), "shoulders"),  # truncated at the waist
        (("left_shoulder", "right_shoulder"), "hips"),  # head and shoulders out of frame
        (("left_shoulder", "right_shoulder", "left_hip", "right_hip"), "shins"),
        (("left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee", "left_elbow", "right_elbow"), "bbox"),
    ],
)
def test_depth_fallbacks_on_truncated_people(anny_model, make_synthetic, dropped, method):
    batch, gt, out = make_synthetic(anny_model, 16, seed=7)
    batch = _drop(batch, dropped)
    fit = SMPLify(anny_model)
    z, m = estimate_depth(batch.keypoints_2d, batch.bbox, batch.focal_length, batch.convention,
                          fit.rest_keypoints, fit.standing_height)
    assert (m == METHODS.index(method)).all()
    rel = (z / gt["transl"][:, 2] - 1).abs()
    # similar triangles overestimate depth under foreshortening; the median stays close
    assert rel.median() < 0.35, (method, rel)
    assert torch.isfinite(z).all() and (z > 0).all()


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
