"""Pose coverage beyond the captured motions: augmentations of a retargeted pose set.

The bundled mocap is mostly walking, so priors and regressors trained on it alone
call unseen but ordinary poses unlikely. These augmentations widen it, each on
``(N, J, 3)`` axis-angle ``body_pose`` arrays of a model whose joint names follow
SMPL's (``left_hip``, ``right_elbow``...), so they work for anny and the SMPL family:

* :func:`mirror`: left/right reflection of the canonical X axis;
* :func:`recombine`: limb-wise recombination: the torso of one captured pose with
  arms and legs taken from others (a limb keeps its own joint rotations, relative
  to its parent, so a raised arm of a boxer joins the legs of a climber);
* global orientations of every kind for synthetic people (upright and turned, lying,
  inverted, crawling, seen from above): :class:`fit3d.training.synthetic.OrientationModel`, drawn by
  :func:`~fit3d.training.synthetic.make_people`;
* :func:`sample_within_limits`: new joint rotations drawn inside learned per-joint
  limits (the articulation prior's range) rather than copied from a frame.

The shipped priors train on the first two (:func:`augmented_poses`), the regressor on the first
three (:data:`fit3d.training.regressor.TRAIN_ORIENTATIONS`). Poses drawn within the limits are not in
their training: added to the tuning weights' poses they made SMPLify + GMM ~4 mm and EFT ~0.5 mm
worse on the validation subjects (``docs/experiments.md``, thirty-fourth session).
"""

from __future__ import annotations

import numpy as np
import roma
import torch

from fit3d.data.conventions import mirror_permutation

LIMB_PARTS = ("left_arm", "right_arm", "left_leg", "right_leg")


def mirror(body_pose: np.ndarray, joint_names) -> np.ndarray:
    """Left-right mirror of ``(N, J, 3)`` poses whose joints are ``joint_names[1:]`` (root excluded).

    Swaps ``left_*`` and ``right_*`` joints and negates the y and z axis-angle
    components (a reflection of the canonical frame's X axis).

    Raises:
        ValueError: a sided joint has no counterpart (:func:`~fit3d.data.conventions.mirror_permutation`).
    """
    perm = mirror_permutation(list(joint_names)[1:])
    out = body_pose[:, perm].copy()
    out[..., 1:] *= -1
    return out


def mirror_orient(global_orient: np.ndarray) -> np.ndarray:
    """The global orientation ``(N, 3)`` of a mirrored pose: ``M R M`` with ``M = diag(-1, 1, 1)``."""
    return global_orient * np.asarray([1.0, -1.0, -1.0], dtype=global_orient.dtype)


def body_parts(joint_names) -> np.ndarray:
    """``(J,)`` part of each ``body_pose`` joint: ``left_arm``, ``right_arm``, ``left_leg``,
    ``right_leg`` or ``torso`` (spine, neck, head and anything unnamed)."""
    out = []
    for n in list(joint_names)[1:]:
        side = n.split("_")[0] if n.startswith(("left_", "right_")) else None
        if side and any(k in n for k in ("hip", "knee", "ankle", "foot")):
            out.append(f"{side}_leg")
        elif side and any(k in n for k in ("collar", "shoulder", "elbow", "wrist", "hand")):
            out.append(f"{side}_arm")
        else:
            out.append("torso")
    return np.asarray(out)


def recombine(body_pose: np.ndarray, joint_names, n: int, rng: np.random.Generator,
              p_same: float = 0.3, p_legs_together: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """``n`` poses, each limb from a random source pose.

    Args:
        body_pose: ``(N, J, 3)`` source poses.
        n: poses to make.
        p_same: chance that a limb stays with the torso's own source pose.
        p_legs_together: chance that both legs come from one source (symmetric motions).
    Returns:
        ``(poses (n, J, 3), torso_source (n,))``: the index of each pose's torso source,
        whose global orientation the new pose may keep.
    """
    parts = body_parts(joint_names)
    N = len(body_pose)
    base = rng.integers(0, N, n)
    out = body_pose[base].copy()
    for part in LIMB_PARTS:
        src = np.where(rng.uniform(size=n) < p_same, base, rng.integers(0, N, n))
        cols = parts == part
        out[:, cols] = body_pose[src][:, cols]
    together = rng.uniform(size=n) < p_legs_together
    src = rng.integers(0, N, n)
    legs = (parts == "left_leg") | (parts == "right_leg")
    out[np.ix_(together, legs)] = body_pose[src[together]][:, legs]
    return out, base


def axis_rotation(axis: int, angle: np.ndarray) -> torch.Tensor:
    """``(N, 3, 3)`` rotations by ``angle`` (rad) about coordinate axis ``axis`` (0 x, 1 y, 2 z)."""
    v = np.zeros((len(angle), 3))
    v[:, axis] = angle
    return roma.rotvec_to_rotmat(torch.as_tensor(v, dtype=torch.float32))


def sample_within_limits(body_pose: np.ndarray, prior, n: int, rng: np.random.Generator,
                         spread: float = 1.0, max_tries: int = 8) -> np.ndarray:
    """``n`` poses whose joints are drawn independently, each inside its learned range.

    Each joint's rotation starts from the same joint in a random source pose and is
    moved by Gaussian noise of ``spread`` times that joint's standard deviation over
    ``body_pose``; draws whose joint falls outside the range of ``prior`` (an
    :class:`~fit3d.priors.articulation.ArticulationPrior`: per-joint NLL above its
    threshold) are drawn again, up to ``max_tries`` times, then the source rotation is kept.

    Args:
        body_pose: ``(N, J, 3)`` source poses.
        prior: a trained articulation prior for the same joints.
    Returns:
        ``(n, J, 3)`` float32.
    """
    N, J, _ = body_pose.shape
    std = body_pose.reshape(-1, J, 3).std(0)
    src = body_pose[rng.integers(0, N, (n, J)), np.arange(J)[None, :]]  # (n, J, 3): joint j from a random pose
    out = src.copy()
    todo = np.ones((n, J), dtype=bool)
    device = prior.threshold.device  # (a prior on the GPU: the draws go there, the answers come back)
    threshold = prior.threshold.detach().cpu().numpy()
    for _ in range(max_tries):
        cand = src + rng.normal(0, 1, src.shape) * std[None] * spread
        with torch.no_grad():
            nll = -prior.log_prob_joints(torch.as_tensor(cand, dtype=torch.float32, device=device)).cpu().numpy()
        ok = (nll <= threshold[None]) & todo
        out[ok] = cand[ok]
        todo &= ~ok
        if not todo.any():
            break
    return out.astype(np.float32)


def augmented_poses(body_pose: np.ndarray, global_orient: np.ndarray, joint_names, n_recombined: int,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Captured poses, their mirror images and ``n_recombined`` limb-wise recombinations.

    Returns:
        ``(body_pose (M, J, 3), global_orient (M, 3))`` float32, the captured poses
        first (mocap world orientations; recombined poses keep their torso source's).
    """
    rng = np.random.default_rng(seed)
    bp = np.concatenate([body_pose, mirror(body_pose, joint_names)]).astype(np.float32)
    go = np.concatenate([global_orient, mirror_orient(global_orient)]).astype(np.float32)
    if n_recombined <= 0:
        return bp, go
    rbp, src = recombine(bp, joint_names, n_recombined, rng)
    return np.concatenate([bp, rbp]), np.concatenate([go, go[src]])
