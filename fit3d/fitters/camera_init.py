"""Initial root depth, position and image-plane roll from 2D keypoints.

Depth follows SMPLify's similar-triangles rule, ``z = f * L3d / L2d``, on the
torso (shoulder-to-hip) length. Truncated or occluded people fall back to the
median of the same rule on the other segments they show (the shoulder width, the
hip width, the thighs, the upper arms, the shins), and finally to the box height
against the model's standing height. The segment used (the median's) is returned
per person.

The median rather than the first segment in a fixed order: one segment is often
foreshortened (a side-on person's shoulder width) or marked elsewhere than the
model's point (COCO's hips are wider than anny's), and a fit keeps its starting
depth's error. Hiding the torso of the real people of ``coco_mini`` who show it, the
fallback's depth against the torso's: first available segment 10-90 % range
0.69-1.65 (train) and 0.75-1.70 (val), the median 0.72-1.26 and 0.77-1.28.
"""

from __future__ import annotations

import math

import torch

from fit3d.data.conventions import KeypointConvention

#: (method, keypoint pairs whose mean length is compared): the torso first, then the segments whose
#: median stands in for it.
SEGMENTS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("torso", (("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"))),
    ("shoulders", (("left_shoulder", "right_shoulder"),)),
    ("hips", (("left_hip", "right_hip"),)),
    ("thighs", (("left_hip", "left_knee"), ("right_hip", "right_knee"))),
    ("upper_arms", (("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"))),
    ("shins", (("left_knee", "left_ankle"), ("right_knee", "right_ankle"))),
)
METHODS = tuple(m for m, _ in SEGMENTS) + ("bbox",)
#: The largest starting depth, metres: far beyond any photo's people (a bound, for finite numbers).
MAX_DEPTH = 1e5


def estimate_depth(
    keypoints_2d: torch.Tensor,
    bbox: torch.Tensor,
    focal_length: torch.Tensor,
    convention: KeypointConvention,
    rest_keypoints_3d: torch.Tensor,
    standing_height: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Root depth per person.

    Args:
        keypoints_2d: ``(B, K, 3)`` pixels and confidence, in ``convention``.
        bbox: ``(B, 4)`` ``x, y, w, h`` pixels.
        focal_length: ``(B, 2)`` pixels.
        rest_keypoints_3d: ``(K, 3)`` the model's keypoints at rest, metres.
        standing_height: the model's height at rest, metres.
    Returns:
        ``(depth (B,) metres, method (B,) int index into METHODS)``.
    """
    f = focal_length.mean(-1)
    vis = keypoints_2d[..., 2] > 0
    estimates = []  # per segment: (B,) depth, NaN where the person does not show it
    for _, pairs in SEGMENTS:
        len2d = torch.zeros_like(f)
        len3d = torch.zeros_like(f)
        count = torch.zeros_like(f)
        for a, b in pairs:
            if a not in convention.names or b not in convention.names:
                continue
            ia, ib = convention.index(a), convention.index(b)
            l2 = (keypoints_2d[:, ia, :2] - keypoints_2d[:, ib, :2]).norm(dim=-1)
            ok = vis[:, ia] & vis[:, ib] & (l2 > 2.0)  # coincident points carry no scale
            len2d += torch.where(ok, l2, torch.zeros_like(l2))  # (not ok * l2: an unlabelled NaN point)
            len3d += ok.to(f) * (rest_keypoints_3d[ia] - rest_keypoints_3d[ib]).norm()
            count += ok.to(f)
        estimates.append(torch.where(count > 0, f * len3d / len2d.clamp(min=1e-6), torch.full_like(f, math.nan)))
    torso, others = estimates[0], torch.stack(estimates[1:], -1)
    median, which = others.nanmedian(-1)  # (NaN where none is shown; of an even count, the lower: the nearer)
    box = f * standing_height / bbox[:, 3].clamp(min=1.0)
    has_torso, has_other = ~torso.isnan(), ~median.isnan()
    depth = torch.where(has_torso, torso, torch.where(has_other, median, box))
    method = torch.where(has_torso, torch.zeros_like(which),
                         torch.where(has_other, which + 1, torch.full_like(which, len(METHODS) - 1)))
    # no upper bound a photo reaches (a 12-megapixel image's default focal length puts a 40 px tall
    # person 200 m away, a telephoto lens farther): a bound would start far people near, and the
    # fit would shrink them to a child's size to match
    return depth.clamp(min=0.3, max=MAX_DEPTH), method


def root_pixel(keypoints_2d: torch.Tensor, bbox: torch.Tensor, convention: KeypointConvention) -> torch.Tensor:
    """``(B, 2)`` pixel of the root (pelvis): mid-hips when both are labelled, else
    the mean of the labelled keypoints, else the box centre."""
    vis = keypoints_2d[..., 2] > 0
    xy = keypoints_2d[..., :2]
    w = vis.to(xy)
    mean_vis = (xy * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1)
    centre = bbox[:, :2] + 0.5 * bbox[:, 2:]
    out = torch.where(vis.any(1, keepdim=True), mean_vis, centre)
    if "left_hip" in convention.names and "right_hip" in convention.names:
        il, ir = convention.index("left_hip"), convention.index("right_hip")
        both = (vis[:, il] & vis[:, ir])[:, None]
        out = torch.where(both, 0.5 * (xy[:, il] + xy[:, ir]), out)
    return out


def image_roll(keypoints_2d: torch.Tensor, convention: KeypointConvention) -> torch.Tensor:
    """``(B,)`` radians: rotation about the camera axis that turns an upright body's
    up direction into the image direction from mid-hips to mid-shoulders
    (0 when those keypoints are missing)."""
    B = keypoints_2d.shape[0]
    roll = torch.zeros(B, dtype=keypoints_2d.dtype, device=keypoints_2d.device)
    names = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
    if not all(n in convention.names for n in names):
        return roll
    idx = [convention.index(n) for n in names]
    vis = keypoints_2d[:, idx, 2] > 0
    xy = keypoints_2d[:, idx, :2]
    sh_ok = vis[:, 0] | vis[:, 1]
    hip_ok = vis[:, 2] | vis[:, 3]

    def mid(a, b, va, vb):
        w = torch.stack([va, vb], 1).to(xy)
        return (torch.stack([a, b], 1) * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1)

    up = mid(xy[:, 0], xy[:, 1], vis[:, 0], vis[:, 1]) - mid(xy[:, 2], xy[:, 3], vis[:, 2], vis[:, 3])
    ok = sh_ok & hip_ok & (up.norm(dim=-1) > 2.0)
    # R_z(phi) maps the upright image direction (0, -1) to (sin phi, -cos phi).
    est = torch.atan2(up[:, 0], -up[:, 1])
    return torch.where(ok, est, roll)


def orientation_hypotheses(roll: torch.Tensor, yaws_deg: tuple[float, ...]) -> torch.Tensor:
    """``(B, H, 3)`` axis-angle global orientations ``R_z(roll) R_x(pi) R_y(yaw)``.

    ``R_x(pi)`` turns SMPL's canonical body (Y up, facing +Z) upright and facing
    the camera in the OpenCV frame; ``yaw`` turns it about its own vertical axis
    (0 facing the camera, 180 facing away, 90/270 side views).
    """
    import roma

    B = roll.shape[0]
    dev, dt = roll.device, roll.dtype
    yaw = torch.tensor([math.radians(y) for y in yaws_deg], device=dev, dtype=dt)
    H = yaw.shape[0]
    Ry = roma.rotvec_to_rotmat(torch.stack([torch.zeros_like(yaw), yaw, torch.zeros_like(yaw)], -1))
    Rx = roma.rotvec_to_rotmat(torch.tensor([math.pi, 0.0, 0.0], device=dev, dtype=dt))
    Rz = roma.rotvec_to_rotmat(torch.stack([torch.zeros_like(roll), torch.zeros_like(roll), roll], -1))
    R = Rz[:, None] @ Rx @ Ry[None]
    return roma.rotmat_to_rotvec(R.reshape(B * H, 3, 3)).reshape(B, H, 3)
