"""Fits moved from the full image's camera into the crop camera of crop-based trainers.

fit3d fits every person in the camera of the whole photo (OpenCV frame, the image's focal
length and principal point), so a person away from the image centre is seen along a ray
that is not the optical axis, and ``global_orient`` is relative to the photo's axes. SPIN and
HMR-style trainers (SPIN ``train/trainer.py``: the ground-truth body gets only a translation,
fitted in crop pixels with the camera on the crop's centre and no rotation; mmhuman3d's
``mesh_estimator.py`` the same) look at the crop straight on, along that ray. A full-frame
``global_orient`` is therefore off by the angle between the ray and the optical axis (up to
~25 degrees in ordinary photos), which is the observation of CLIFF (Li et al., ECCV 2022,
Sec. 3.1). The pseudo-ground-truth those trainers ship (SPIN's static fits, EFT's fits) is
fitted in crop space, i.e. in this frame.

The crop camera here is the photo's camera turned about its centre by the smallest
rotation that takes the ray through the crop's centre (the box centre) onto the optical
axis, as perspective crop layers do (Yu et al., "PCLs: Geometry-aware Neural Reconstruction
of 3D Pose with Perspective Crop Layers", CVPR 2021). The body is moved rigidly with the
camera, so its pose and shape are unchanged and ``R x_full`` is its position in the crop frame.
"""

from __future__ import annotations

import numpy as np
import roma
import torch


def crop_rotation(center: np.ndarray, focal_length: np.ndarray, principal_point: np.ndarray) -> np.ndarray:
    """The rotation from the photo's camera frame to each person's crop camera frame.

    Args:
        center: ``(N, 2)`` crop centres, pixels (the box centres).
        focal_length: ``(N, 2)`` pixels. principal_point: ``(N, 2)`` pixels.
    Returns:
        ``(N, 3, 3)`` float64 ``R`` with ``R d = (0, 0, 1)`` for the unit ray ``d`` through the
        centre, the smallest such rotation (about ``d x z``); the identity for a centred crop.
    Raises:
        ValueError: shapes differ from ``(N, 2)`` or a value is not finite.
    """
    c, f, pp = (np.asarray(a, dtype=np.float64) for a in (center, focal_length, principal_point))
    if not (c.ndim == 2 and c.shape[1] == 2 and f.shape == c.shape == pp.shape):
        raise ValueError(f"center, focal_length and principal_point must all be (N, 2): got {c.shape}, "
                         f"{f.shape}, {pp.shape}")
    if not (np.isfinite(c).all() and np.isfinite(f).all() and np.isfinite(pp).all()) or (f <= 0).any():
        raise ValueError("crop centres and cameras must be finite, with positive focal lengths")
    ray = np.concatenate([(c - pp) / f, np.ones((len(c), 1))], 1)
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    axis = np.cross(ray, np.array([0.0, 0.0, 1.0]))
    sin = np.linalg.norm(axis, axis=1, keepdims=True)
    angle = np.arctan2(sin, ray[:, 2:])
    rotvec = np.where(sin > 0, axis / np.maximum(sin, 1e-300) * angle, 0.0)
    return roma.rotvec_to_rotmat(torch.from_numpy(rotvec)).numpy()


def to_crop_frame(people: dict) -> dict:
    """``people`` (the arrays of :func:`fit3d.export.people.exported_people`) with each body
    moved into its crop camera frame (:func:`crop_rotation` about the box centre).

    Reads ``bbox`` (N, 4) x, y, w, h pixels, ``focal_length`` and ``principal_point`` (N, 2) pixels,
    ``global_orient`` (N, 3) axis-angle, ``transl`` (N, 3) metres, ``joints_3d`` (N, J, 3) metres
    (joint 0 the root the orientation turns about, as every fit3d body model's); ``keypoints_3d``
    (N, K, 3) when present. A person with a non-finite orientation or translation stays non-finite;
    the others are not touched by it.

    ``global_orient`` becomes ``R R_go``; ``transl`` changes so that the root joint lands at
    ``R root`` (with fit3d's and SMPL's rule ``x -> R_go (x - j0) + j0 + transl``, whose posed
    root is ``joints_3d[:, 0] = j0 + transl``): ``transl' = R root - root + transl``;
    ``joints_3d`` and ``keypoints_3d`` are rotated. ``body_pose`` and ``betas`` do not change.
    Adds ``crop_rotation`` ``(N, 3, 3)``: ``x_crop = crop_rotation @ x_full`` (its transpose
    takes the body back to the photo's camera, whose ``focal_length`` and ``principal_point``
    are kept).

    Raises:
        KeyError: a field above is missing. ValueError: as :func:`crop_rotation` (a non-finite box
        or camera, which fitted people never have).
    """
    box = np.asarray(people["bbox"], dtype=np.float64)
    R = crop_rotation(box[:, :2] + box[:, 2:] / 2, people["focal_length"], people["principal_point"])
    go = torch.from_numpy(np.asarray(people["global_orient"], dtype=np.float64))
    orient = roma.rotmat_to_rotvec(torch.from_numpy(R) @ roma.rotvec_to_rotmat(go)).numpy()
    out = dict(people)
    root = np.asarray(people["joints_3d"], dtype=np.float64)[:, 0]
    out["global_orient"] = orient.astype(np.float32)
    out["transl"] = (np.einsum("nij,nj->ni", R, root) - root + people["transl"]).astype(np.float32)
    for k in ("joints_3d", "keypoints_3d"):
        if k in people:
            out[k] = np.einsum("nij,npj->npi", R, np.asarray(people[k], np.float64)).astype(np.float32)
    out["crop_rotation"] = R.astype(np.float32)
    return out
