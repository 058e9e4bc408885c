"""Alternative starting points and depth interpretations that fitters try side by side.

* Limb depth flips. A limb segment seen in the image fixes its end point's camera
  ray but not where along the ray it lies: with its start point ``P`` and length
  fixed, the end point ``E = t r`` (unit ray ``r``) solves
  ``|t r - P| = L``, whose two roots sum to ``2 r.P``; the other interpretation is
  ``E' = (2 r.P - |E|) r`` (toward the camera instead of away, or the reverse).
  :func:`limb_depth_flips` rotates a joint so that its child moves from ``E`` to ``E'``
  (the same projection), for the lower segment of a limb (elbow -> wrist,
  knee -> ankle) or the upper one (shoulder -> elbow, hip -> knee; the lower segment is
  re-aimed so that the wrist or ankle keeps its projection too). The hand or foot keeps its
  orientation in the camera frame (it moves with the wrist or ankle; turned with the segment, a
  foot's toes and heel moved by a median ~40 px and over 100 px at most in the image over random
  poses, found by a review; now up to ~24 px for a flipped shin and ~34 px for a flipped thigh, from
  the ankle's change of depth and the keypoints' skinning to several bones). SMPLify fits these
  alternatives as extra batch rows and keeps the best by fit and prior.
* Joint rotations compose as SMPL's do: ``G_j = G_parent(j) R(body_pose_j)``,
  ``G_root = R(global_orient)`` (anny's ``local-ref`` parameterisation composes the
  same way, see :mod:`fit3d.body_models.anny_model`).
"""

from __future__ import annotations

import roma
import torch

#: SMPL's kinematic tree by joint name (child -> parent) for the joints fit3d's models expose.
SMPL_PARENT_NAMES = {
    "left_hip": "pelvis", "right_hip": "pelvis", "spine1": "pelvis", "left_knee": "left_hip",
    "right_knee": "right_hip", "spine2": "spine1", "left_ankle": "left_knee", "right_ankle": "right_knee",
    "spine3": "spine2", "left_foot": "left_ankle", "right_foot": "right_ankle", "neck": "spine3",
    "left_collar": "spine3", "right_collar": "spine3", "head": "neck", "left_shoulder": "left_collar",
    "right_shoulder": "right_collar", "left_elbow": "left_shoulder", "right_elbow": "right_shoulder",
    "left_wrist": "left_elbow", "right_wrist": "right_elbow", "left_hand": "left_wrist", "right_hand": "right_wrist",
}  # fmt: skip
#: (upper joint, middle joint, end joint) of the four limbs.
LIMBS = tuple((f"{s}_{a}", f"{s}_{b}", f"{s}_{c}") for s in ("left", "right")
              for a, b, c in (("shoulder", "elbow", "wrist"), ("hip", "knee", "ankle")))
#: Names of the depth-flip alternatives, in the order :func:`limb_depth_flips` returns them.
FLIP_NAMES = tuple(f"{mid}:{seg}" for _, mid, _ in LIMBS for seg in ("lower", "upper"))


def kinematic_parents(body_model) -> tuple[int, ...]:
    """Parent index of every joint of ``body_model.joint_names`` (-1 for the root).

    Uses the model's own ``parents`` when it has them, else SMPL's tree by joint name.

    Raises:
        KeyError: a joint name outside SMPL's tree and no ``parents`` on the model.
    """
    own = getattr(body_model, "parents", None)
    if own is not None:
        return tuple(int(p) for p in own)
    names = list(body_model.joint_names)
    return (-1,) + tuple(names.index(SMPL_PARENT_NAMES[n]) for n in names[1:])


def global_rotations(global_orient: torch.Tensor, body_pose: torch.Tensor, parents) -> torch.Tensor:
    """``(B, J+1, 3, 3)`` camera-frame rotation of every joint's frame (root first)."""
    R = roma.rotvec_to_rotmat(torch.cat([global_orient[:, None], body_pose], 1))
    G = [R[:, 0]]
    for j in range(1, R.shape[1]):
        G.append(G[parents[j]] @ R[:, j])
    return torch.stack(G, 1)


def rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 3)`` the smallest rotation turning direction ``a`` into direction ``b`` (``(B, 3)``)."""
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    axis = torch.linalg.cross(a, b)
    angle = torch.atan2(axis.norm(dim=-1, keepdim=True), (a * b).sum(-1, keepdim=True))
    return roma.rotvec_to_rotmat(torch.nn.functional.normalize(axis, dim=-1) * angle)


def _other_root(start: torch.Tensor, ray: torch.Tensor, length: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
    """The point on ``ray`` (unit, through the camera centre) at ``length`` from ``start``
    closest to ``near`` (the nearest point of the ray when none is at that distance)."""
    b = (ray * start).sum(-1, keepdim=True)
    disc = (b * b - (start * start).sum(-1, keepdim=True) + length * length).clamp(min=0).sqrt()
    p1, p2 = (b + disc) * ray, (b - disc) * ray
    first = (p1 - near).norm(dim=-1, keepdim=True) < (p2 - near).norm(dim=-1, keepdim=True)
    return torch.where(first, p1, p2)


def flip_segment(body_pose: torch.Tensor, global_orient: torch.Tensor, joints_3d: torch.Tensor, parents,
                 joint: int, child: int, grandchild: int | None = None) -> torch.Tensor:
    """``body_pose`` with ``child`` moved to the other depth on its camera ray (see module docstring).

    Args:
        body_pose: ``(B, J, 3)``; global_orient: ``(B, 3)``; joints_3d: ``(B, J+1, 3)``
            camera frame, the posed joints of these parameters.
        joint, child: joint indices (into ``joints_3d``) of the segment to flip;
            ``body_pose[:, joint - 1]`` turns, and ``body_pose[:, child - 1]`` so that the child
            keeps its orientation in the camera frame.
        grandchild: when given, ``body_pose[:, child - 1]`` is re-aimed instead so that the
            grandchild keeps its projection, and ``body_pose[:, grandchild - 1]`` so that the
            grandchild keeps its orientation.
    Returns:
        ``(B, J, 3)`` new body pose (a copy).
    """
    P, E = joints_3d[:, joint], joints_3d[:, child]
    ray = torch.nn.functional.normalize(E, dim=-1)
    E2 = (2 * (ray * P).sum(-1, keepdim=True) - E.norm(dim=-1, keepdim=True)) * ray
    R_flip = rotation_between(E - P, E2 - P)
    G = global_rotations(global_orient, body_pose, parents)
    G_parent = G[:, parents[joint]]
    out = body_pose.clone()
    local = G_parent.transpose(-1, -2) @ R_flip @ G[:, joint]
    out[:, joint - 1] = roma.rotmat_to_rotvec(local)
    if grandchild is None:  # the child (wrist, ankle) keeps its own orientation: the hand or foot does not swing
        out[:, child - 1] = roma.rotmat_to_rotvec((R_flip @ G[:, joint]).transpose(-1, -2) @ G[:, child])
        return out
    W = joints_3d[:, grandchild]
    moved = W + (E2 - E)  # where the grandchild goes if the child's segment keeps its direction
    target = _other_root(E2, torch.nn.functional.normalize(W, dim=-1), (W - E).norm(dim=-1, keepdim=True), moved)
    R_aim = rotation_between(moved - E2, target - E2)
    out[:, child - 1] = roma.rotmat_to_rotvec((R_flip @ G[:, joint]).transpose(-1, -2) @ R_aim @ G[:, child])
    # the grandchild (wrist, ankle) keeps its own orientation too
    out[:, grandchild - 1] = roma.rotmat_to_rotvec((R_aim @ G[:, child]).transpose(-1, -2) @ G[:, grandchild])
    return out


def limb_depth_flips(body_pose: torch.Tensor, global_orient: torch.Tensor, joints_3d: torch.Tensor,
                     joint_names, parents) -> torch.Tensor:
    """``(A, B, J, 3)``: the :data:`FLIP_NAMES` alternatives of every person's pose
    (lower and upper segment of each limb flipped in depth, one at a time)."""
    idx = {n: i for i, n in enumerate(joint_names)}
    out = []
    for upper, mid, end in LIMBS:
        a, b, c = idx[upper], idx[mid], idx[end]
        out.append(flip_segment(body_pose, global_orient, joints_3d, parents, b, c))
        out.append(flip_segment(body_pose, global_orient, joints_3d, parents, a, b, grandchild=c))
    return torch.stack(out)
