"""How unusual a pose is relative to the poses a model was trained on.

A pose's *rarity* is the mean per-joint distance (mm) from its skeleton to the
nearest training skeleton. Skeletons are the body model's joints at the mean shape,
root-relative, turned by the pose's orientation to gravity with the heading
removed (so lying and standing differ, facing north or south does not). The
training poses are mirrored (as training sees them). The benchmark's *rare* subset
is its most unusual tenth (:data:`RARE_QUANTILE`), "common" the rest: a share of each file,
not a fixed distance, so two files' rare subsets are compared by their rarity values, not by
name (a file of an ordinary subject has rare people nearer the training poses than another
file's common ones). A file of training poses (``--split train``) has none.
"""

from __future__ import annotations

import numpy as np
import roma
import torch

#: People at or above this quantile of a benchmark's rarity form its rare subset.
RARE_QUANTILE = 0.9


def gravity_frame_skeletons(body_model, body_pose: np.ndarray, global_orient: np.ndarray,
                            batch_size: int = 2048) -> np.ndarray:
    """``(N, J+1, 3)`` metres: mean-shape joints, root-relative, in a heading-free world frame.

    Args:
        body_pose: ``(N, J, 3)`` axis-angle; global_orient: ``(N, 3)`` mocap world
            orientation (Y up).
    """
    out = []
    with torch.no_grad():
        for s in range(0, len(body_pose), batch_size):
            bp = torch.as_tensor(body_pose[s : s + batch_size], dtype=torch.float32, device=body_model.device)
            c = body_model.canonical(bp, torch.zeros(len(bp), body_model.num_betas, device=bp.device))
            j = (c.joints_3d - c.joints_3d[:, :1]).cpu()
            R = roma.rotvec_to_rotmat(torch.as_tensor(global_orient[s : s + batch_size], dtype=torch.float32))
            fwd = R[:, :, 2]  # the body's forward axis (canonical +Z) in the world
            yaw = torch.atan2(fwd[:, 0], fwd[:, 2])
            Ry = roma.rotvec_to_rotmat(torch.stack([torch.zeros_like(yaw), -yaw, torch.zeros_like(yaw)], -1))
            out.append((j @ (Ry @ R).transpose(-1, -2)).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(body_model.joint_names), 3), np.float32)


def pose_rarity(body_model, body_pose: np.ndarray, global_orient: np.ndarray, train_body_pose: np.ndarray,
                train_global_orient: np.ndarray) -> np.ndarray:
    """``(N,)`` mm: each pose's distance to the nearest training pose (see module docstring).

    Uses scikit-learn's exact nearest-neighbour search on the flattened skeletons and
    reports the mean per-joint distance to that neighbour. The training poses are
    mirrored before the search.
    """
    from sklearn.neighbors import NearestNeighbors

    from fit3d.training.augment import mirror, mirror_orient

    names = list(body_model.joint_names)
    tbp = np.concatenate([train_body_pose, mirror(train_body_pose, names)])
    tgo = np.concatenate([train_global_orient, mirror_orient(train_global_orient)])
    ref = gravity_frame_skeletons(body_model, tbp, tgo)
    qry = gravity_frame_skeletons(body_model, body_pose, global_orient)
    nn = NearestNeighbors(n_neighbors=1).fit(ref.reshape(len(ref), -1))
    _, j = nn.kneighbors(qry.reshape(len(qry), -1))
    return (np.linalg.norm(qry - ref[j[:, 0]], axis=-1).mean(-1) * 1000).astype(np.float32)


def rare_mask(rarity_mm: np.ndarray, quantile: float = RARE_QUANTILE) -> np.ndarray:
    """``(N,)`` bool: the people at or above the ``quantile`` of ``rarity_mm``; a pose at distance 0
    (a training pose: a ``--split train`` file) is never rare (ties at 0 made every such person rare)."""
    rarity_mm = np.asarray(rarity_mm)
    return (rarity_mm >= np.quantile(rarity_mm, quantile)) & (rarity_mm > 0)
