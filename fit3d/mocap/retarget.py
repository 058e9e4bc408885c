"""Retargeting mocap to a body model by batched 3D inverse kinematics.

Bone-length independent: the model's pose (``global_orient``, ``body_pose``,
mean shape) is optimised so that the *directions* between corresponding
points (hip->knee, elbow->wrist, pelvis->neck...) match the mocap's; lengths
never enter the loss. A small L2 term fixes what directions leave free (wrist
and head twist). The residual is reported as the MPJPE (mm) between the model's
points and the mocap's after a similarity (Procrustes) alignment, so it also
holds the difference of the two skeletons' proportions.
"""

from __future__ import annotations

import logging

import roma
import torch

from fit3d.optim import BatchedAdam
from fit3d.mocap.clip import MOCAP_POINTS

log = logging.getLogger(__name__)

#: (from, to, weight) point pairs whose directions are matched. Only points defined
#: alike on both skeletons: the CMU neck base lies below the shoulder line and
#: anny's neck joint above it, so the neck enters only through ``shoulder_mid``.
DIRECTION_PAIRS = (
    ("left_hip", "left_knee", 1.0), ("right_hip", "right_knee", 1.0),
    ("left_knee", "left_ankle", 1.0), ("right_knee", "right_ankle", 1.0),
    ("left_ankle", "left_toe", 0.5), ("right_ankle", "right_toe", 0.5),
    ("right_hip", "left_hip", 1.0), ("pelvis", "spine_top", 0.5), ("spine_top", "shoulder_mid", 1.0),
    ("right_shoulder", "left_shoulder", 1.0),
    ("left_shoulder", "left_elbow", 1.0), ("right_shoulder", "right_elbow", 1.0),
    ("left_elbow", "left_wrist", 1.0), ("right_elbow", "right_wrist", 1.0),
    ("shoulder_mid", "head", 0.5), ("head", "head_top", 0.3),
)  # fmt: skip
#: Pairs whose points the two skeletons do not define alike: CMU's upper back, head and head top
#: lie elsewhere than anny's spine3 joint, head joint and mid-ears, so one posture gives other
#: directions (in the rest poses, spine3 -> mid-shoulders leans 25 degrees forward on anny and -1 to
#: -2 on CMU's subjects 01-03, head -> head top 20 against -3 to 2). Matched as such, subject 01
#: standing straight (its ASF's rest pose) became an anny with spine3 bent back 11 degrees and the
#: head raised 13 (a review). With the mocap's rest pose given, these pairs are matched relative to each
#: skeleton's rest (:func:`rest_offsets`).
REST_RELATIVE_PAIRS = (
    ("pelvis", "spine_top"), ("spine_top", "shoulder_mid"), ("shoulder_mid", "head"), ("head", "head_top"),
)  # fmt: skip
#: Points compared for the residual (defined alike on both skeletons).
RESIDUAL_POINTS = (
    "pelvis", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)  # fmt: skip
POINTS = MOCAP_POINTS + ("shoulder_mid",)


def with_shoulder_mid(points: torch.Tensor) -> torch.Tensor:
    """Append the mid-shoulder point to ``(N, P, 3)`` :data:`MOCAP_POINTS`."""
    i, j = MOCAP_POINTS.index("left_shoulder"), MOCAP_POINTS.index("right_shoulder")
    return torch.cat([points, 0.5 * (points[:, i : i + 1] + points[:, j : j + 1])], 1)
#: Torso points used to initialise the global orientation (Kabsch).
TORSO_POINTS = ("pelvis", "left_hip", "right_hip", "neck", "left_shoulder", "right_shoulder")


def model_points(body_model, out) -> torch.Tensor:
    """``(B, P+1, 3)`` the model's :data:`POINTS` from a ``BodyOutput`` of an SMPL-like
    skeleton (joints ``pelvis, left_hip, ... spine3, neck, head, left_shoulder...``).

    ``left_toe`` is the mean of the big and small toe keypoints; ``spine_top`` the
    ``spine3`` joint; ``head_top`` the middle of the ears (its direction from
    the head joint follows the head's tilt).
    """
    j = {n: out.joints_3d[:, i] for i, n in enumerate(body_model.joint_names)}
    k = {n: out.keypoints_3d[:, i] for i, n in enumerate(body_model.keypoint_convention.names)}
    pts = dict(j)
    for side in ("left", "right"):
        pts[f"{side}_toe"] = 0.5 * (k[f"{side}_big_toe"] + k[f"{side}_small_toe"])
    pts["spine_top"] = j["spine3"]
    pts["head_top"] = 0.5 * (k["left_ear"] + k["right_ear"])
    return with_shoulder_mid(torch.stack([pts[p] for p in MOCAP_POINTS], 1))


def _directions(points: torch.Tensor, idx_a, idx_b) -> torch.Tensor:
    return torch.nn.functional.normalize(points[:, idx_b] - points[:, idx_a], dim=-1)


def _chest_axes(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(N, 3)`` each: the chest's lateral axis (right -> left shoulder), its up axis (pelvis ->
    mid-shoulders, orthogonal to it) and its forward axis (lateral x up) of ``(N, P+1, 3)`` :data:`POINTS`."""
    at = {n: points[:, POINTS.index(n)] for n in ("left_shoulder", "right_shoulder", "shoulder_mid", "pelvis")}
    lateral = torch.nn.functional.normalize(at["left_shoulder"] - at["right_shoulder"], dim=-1)
    up = at["shoulder_mid"] - at["pelvis"]
    up = torch.nn.functional.normalize(up - (up * lateral).sum(-1, keepdim=True) * lateral, dim=-1)
    return lateral, up, torch.linalg.cross(lateral, up)


def forward_leans(points: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` radians: how far each of the :data:`REST_RELATIVE_PAIRS` directions leans forward
    (positive) or back from the chest's up axis, about its lateral axis (:func:`_chest_axes`), for
    ``(N, P+1, 3)`` :data:`POINTS` in any frame."""
    lateral, up, forward = _chest_axes(points)
    a = [POINTS.index(x) for x, _ in REST_RELATIVE_PAIRS]
    b = [POINTS.index(y) for _, y in REST_RELATIVE_PAIRS]
    v = points[:, b] - points[:, a]
    return torch.atan2((v * forward[:, None]).sum(-1), (v * up[:, None]).sum(-1))


def rest_offsets(model_rest: torch.Tensor, mocap_rest: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` radians to turn each mocap frame's :data:`REST_RELATIVE_PAIRS` directions forward
    about its chest's lateral axis so that the mocap's rest pose maps to the model's: the model's
    rest lean minus the mocap skeleton's. ``model_rest`` ``(P+1, 3)``, ``mocap_rest`` ``(N, P+1, 3)``
    :data:`POINTS`; frames whose rest is not finite (a source without one) get 0 (matched as such)."""
    offset = forward_leans(model_rest[None]) - forward_leans(mocap_rest)
    return torch.where(torch.isfinite(offset), offset, torch.zeros_like(offset))


def rest_relative(directions: torch.Tensor, points: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The ``(N, D, 3)`` target ``directions`` of :data:`DIRECTION_PAIRS` with those of
    :data:`REST_RELATIVE_PAIRS` turned forward by ``offsets`` ``(N, K)`` radians about the chest's
    lateral axis of the mocap ``points`` ``(N, P+1, 3)``."""
    lateral = _chest_axes(points)[0]
    names = [(a, b) for a, b, _ in DIRECTION_PAIRS]
    idx = [names.index(pair) for pair in REST_RELATIVE_PAIRS]
    turn = roma.rotvec_to_rotmat(offsets[..., None] * lateral[:, None])  # (N, K, 3, 3)
    out = directions.clone()
    out[:, idx] = (turn @ directions[:, idx, :, None])[..., 0]
    return out


def retarget(
    points: torch.Tensor,
    body_model,
    iterations: int = 300,
    lr: float = 0.05,
    chunk: int = 2048,
    pose_weight: float = 1e-3,
    progress: bool = False,
    rest: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Fit the model's pose to mocap frames.

    Args:
        points: ``(N, P, 3)`` mocap :data:`MOCAP_POINTS`, metres (any right-handed, Y-up world).
        body_model: the model (mean shape is used).
        iterations, lr: Adam steps and learning rate per chunk.
        chunk: frames optimised together.
        rest: ``(N, P, 3)`` each frame's skeleton in its rest pose (:attr:`MocapClip.rest`; NaN
            where unknown): the :data:`REST_RELATIVE_PAIRS` are matched relative to the two
            skeletons' rest poses (:func:`rest_offsets`). None (or NaN): as they are.
    Returns:
        ``global_orient (N, 3)``, ``body_pose (N, J, 3)``, ``direction_error_deg (N,)``
        (mean angle over the pairs), ``residual_mm (N,)`` (similarity-aligned MPJPE).
    """
    dev = body_model.device
    names = list(POINTS)
    ia = torch.tensor([names.index(a) for a, _, _ in DIRECTION_PAIRS], device=dev)
    ib = torch.tensor([names.index(b) for _, b, _ in DIRECTION_PAIRS], device=dev)
    w = torch.tensor([x for _, _, x in DIRECTION_PAIRS], device=dev)
    torso = torch.tensor([names.index(n) for n in TORSO_POINTS], device=dev)
    ir = torch.tensor([names.index(n) for n in RESIDUAL_POINTS], device=dev)
    J, S = body_model.num_body_joints, body_model.num_betas
    betas = torch.zeros(1, S, device=dev)
    with torch.no_grad():
        rest_points = model_points(body_model, body_model.canonical(torch.zeros(1, J, 3, device=dev), betas))[0]
    outs = {k: [] for k in ("global_orient", "body_pose", "direction_error_deg", "residual_mm")}
    chunks = range(0, points.shape[0], chunk)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="retarget", unit="chunk")
    for s in chunks:
        target = with_shoulder_mid(points[s : s + chunk].to(dev, torch.float32))
        n = target.shape[0]
        src = (rest_points[torso] - rest_points[torso].mean(0)).expand(n, -1, -1)
        dst = target[:, torso] - target[:, torso].mean(1, keepdim=True)
        R, _ = roma.rigid_points_registration(src, dst)
        go = roma.rotmat_to_rotvec(R).clone()
        bp = torch.zeros(n, J, 3, device=dev)
        go.requires_grad_(True)
        bp.requires_grad_(True)
        d_target = _directions(target, ia, ib)
        if rest is not None:
            mocap_rest = with_shoulder_mid(rest[s : s + chunk].to(dev, torch.float32))
            d_target = rest_relative(d_target, target, rest_offsets(rest_points, mocap_rest))
        opt = BatchedAdam([go, bp], lr=lr)
        active = torch.ones(n, dtype=torch.bool, device=dev)
        for _ in range(iterations):
            body = body_model.canonical(bp, betas)
            pts = model_points(body_model, body) @ roma.rotvec_to_rotmat(go).transpose(-1, -2)
            cos = (_directions(pts, ia, ib) * d_target).sum(-1)
            loss = ((1 - cos) * w).sum(-1) + pose_weight * bp.pow(2).sum((1, 2))
            loss.sum().backward()
            opt.step(active)
        with torch.no_grad():
            body = body_model.canonical(bp, betas)
            pts = model_points(body_model, body) @ roma.rotvec_to_rotmat(go).transpose(-1, -2)
            cos = (_directions(pts, ia, ib) * d_target).sum(-1).clamp(-1, 1)
            ang = torch.rad2deg(torch.acos(cos)).mean(-1)
            p, q = pts[:, ir], target[:, ir]
            Rs, ts, sc = roma.rigid_points_registration(p, q, compute_scaling=True)
            aligned = sc[:, None, None] * p @ Rs.transpose(-1, -2) + ts[:, None]
            res = (aligned - q).norm(dim=-1).mean(-1) * 1000
        outs["global_orient"].append(go.detach())
        outs["body_pose"].append(bp.detach())
        outs["direction_error_deg"].append(ang)
        outs["residual_mm"].append(res)
    return {k: torch.cat(v) for k, v in outs.items()}
