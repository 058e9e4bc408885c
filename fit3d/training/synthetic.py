"""Synthetic benchmark: held-out mocap poses, random people and cameras, realistic 2D errors.

Per person (deterministic by seed):

* pose: a retargeted mocap frame of a held-out trial (its own root orientation
  kept, so lying or bending stays so), turned by a random yaw about the vertical;
* shape: ``betas ~ N(0, 0.6^2)`` (anny phenotype logits around a young adult);
* camera: full frame; image size drawn from common photo sizes; focal length
  from a 35 mm-equivalent focal length log-uniform in [24, 85] mm (phones to
  portrait lenses): ``f = diagonal * f_eq / 43.3``; pitch ``N(0, 10 deg)``, roll ``N(0, 3 deg)``;
* placement: person height 25-90 % of the image height, root inside the central
  80 % x 40 % of the frame, so some people are truncated by the border;
* 2D errors: per-keypoint Gaussian noise with COCO's per-keypoint standard
  deviations ``sigma_i`` (the OKS constants of the COCO keypoint evaluation,
  measured from 5000 redundantly annotated images: ``sigma_i^2 = E[d_i^2 / s^2]``,
  ``d`` the 2D distance between annotations, ``s^2`` the person's segment area;
  Ronchi & Perona, ICCV 2017; COCO-WholeBody's values for the feet). With the
  segment area taken as half the labelled keypoints' box area, each coordinate
  gets ``N(0, (sigma_i s)^2 / 2)``: about 4 px on a hip of a 200 px tall person,
  1 px on the eyes. Then 10 % of keypoints
  dropped at random, 20 % of people with a whole limb occluded, keypoints
  outside the image dropped (truncation), and 3 % of people with one left/right
  pair swapped (a common detector and annotator error).
"""

from __future__ import annotations

import math

import numpy as np
import roma
import torch

from fit3d.geometry import project

#: COCO OKS per-keypoint sigmas (std of annotator error / object scale), by name.
KEYPOINT_SIGMAS = {
    "nose": 0.026, "left_eye": 0.025, "right_eye": 0.025, "left_ear": 0.035, "right_ear": 0.035,
    "left_shoulder": 0.079, "right_shoulder": 0.079, "left_elbow": 0.072, "right_elbow": 0.072,
    "left_wrist": 0.062, "right_wrist": 0.062, "left_hip": 0.107, "right_hip": 0.107,
    "left_knee": 0.087, "right_knee": 0.087, "left_ankle": 0.089, "right_ankle": 0.089,
    "left_big_toe": 0.068, "left_small_toe": 0.066, "left_heel": 0.066,
    "right_big_toe": 0.068, "right_small_toe": 0.066, "right_heel": 0.066,
}  # fmt: skip
IMAGE_SIZES = ((640, 480), (480, 640), (640, 427), (427, 640), (640, 640), (1024, 768))
LIMB_GROUPS = (
    ("left_knee", "left_ankle", "left_big_toe", "left_small_toe", "left_heel"),
    ("right_knee", "right_ankle", "right_big_toe", "right_small_toe", "right_heel"),
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
    ("nose", "left_eye", "right_eye", "left_ear", "right_ear"),
)  # fmt: skip
SWAP_PAIRS = (("left_wrist", "right_wrist"), ("left_ankle", "right_ankle"), ("left_knee", "right_knee"),
              ("left_elbow", "right_elbow"))


def _rot(axis: int, angle: np.ndarray) -> torch.Tensor:
    v = np.zeros((len(angle), 3))
    v[:, axis] = angle
    return roma.rotvec_to_rotmat(torch.as_tensor(v, dtype=torch.float32))


def make_synthetic_benchmark(pose_set: dict, body_model, n: int = 500, seed: int = 0, split: str = "test",
                             noise: bool = True, with_vertices: bool = True, batch_size: int = 64) -> dict:
    """Generate ``n`` people (see module docstring). Returns numpy arrays:

    inputs ``keypoints_2d (N, K, 3)``, ``bbox``, ``focal_length (N, 2)``, ``principal_point``,
    ``image_size``, ``keypoint_names``; ground truth ``global_orient``, ``body_pose``,
    ``betas``, ``transl``, ``joints_3d``, ``keypoints_3d``, ``keypoints_2d_clean``,
    ``vertices`` (float16, relative to the root joint ``joints_3d[:, 0]``; when
    ``with_vertices``), ``joint_names``, ``trial``, ``model``.

    Raises:
        ValueError: the split has no poses or the pose set is for another model.
    """
    rng = np.random.default_rng(seed)
    if str(pose_set.get("model", body_model.name)) != body_model.name:
        raise ValueError(f"pose set is for {pose_set['model']}, not {body_model.name}")
    sel = np.nonzero(pose_set["is_test"] if split == "test" else ~pose_set["is_test"])[0]
    if len(sel) == 0:
        raise ValueError(f"no {split} poses in the pose set")
    idx = rng.choice(sel, size=n, replace=n > len(sel))
    body_pose = torch.as_tensor(pose_set["body_pose"][idx], dtype=torch.float32)
    R_world = roma.rotvec_to_rotmat(torch.as_tensor(pose_set["global_orient"][idx], dtype=torch.float32))
    yaw = _rot(1, rng.uniform(0, 2 * math.pi, n))
    cam = _rot(2, np.deg2rad(rng.normal(0, 3, n))) @ _rot(0, np.deg2rad(rng.normal(0, 10, n)) + math.pi)
    global_orient = roma.rotmat_to_rotvec(cam @ yaw @ R_world)
    betas = torch.as_tensor(rng.normal(0, 0.6, (n, body_model.num_betas)), dtype=torch.float32)
    sizes = np.asarray([IMAGE_SIZES[i] for i in rng.integers(0, len(IMAGE_SIZES), n)], dtype=np.float32)
    diag = np.linalg.norm(sizes, axis=1)
    f = diag * np.exp(rng.uniform(math.log(24), math.log(85), n)) / 43.3
    frac = rng.uniform(0.25, 0.9, n)
    z = np.maximum(f * 1.7 / (frac * sizes[:, 1]), 1.0)
    u = sizes[:, 0] * rng.uniform(0.1, 0.9, n)
    v = sizes[:, 1] * rng.uniform(0.3, 0.7, n)
    pp = sizes / 2
    root = np.stack([(u - pp[:, 0]) * z / f, (v - pp[:, 1]) * z / f, z], 1)
    focal = torch.as_tensor(np.stack([f, f], 1), dtype=torch.float32)
    ppt = torch.as_tensor(pp, dtype=torch.float32)

    dev = body_model.device
    outs = {k: [] for k in ("joints_3d", "keypoints_3d", "vertices", "transl")}
    with torch.no_grad():
        zero = torch.zeros(1, body_model.num_body_joints, 3, device=dev)
        for s in range(0, n, batch_size):
            sl = slice(s, s + batch_size)
            canon = body_model.canonical(body_pose[sl].to(dev), betas[sl].to(dev), return_vertices=with_vertices)
            # transl puts the root joint at ``root``: SMPL's rule x -> R (x - j0) + j0 + t
            t = torch.as_tensor(root[sl], dtype=torch.float32, device=dev) - canon.joints_3d[:, 0]
            out = body_model.place(canon, global_orient[sl].to(dev), t)
            outs["joints_3d"].append(out.joints_3d.cpu())
            outs["keypoints_3d"].append(out.keypoints_3d.cpu())
            outs["transl"].append(t.cpu())
            if with_vertices:  # root-relative, so float16 keeps sub-millimetre precision
                outs["vertices"].append((out.vertices - out.joints_3d[:, :1]).cpu().half())
        del zero
    kp3 = torch.cat(outs["keypoints_3d"])
    clean = project(kp3, focal, ppt)
    names = list(body_model.keypoint_convention.names)
    K = len(names)
    vis = np.ones((n, K), dtype=bool)
    inside = (clean[..., 0] >= 0) & (clean[..., 0] < torch.as_tensor(sizes[:, :1])) & (clean[..., 1] >= 0) & (
        clean[..., 1] < torch.as_tensor(sizes[:, 1:2])) & (kp3[..., 2] > 0.1)
    vis &= inside.numpy()
    kp = clean.numpy().copy()
    if noise:
        lo = np.where(vis[..., None], kp, np.inf).min(1)
        hi = np.where(vis[..., None], kp, -np.inf).max(1)
        scale = np.sqrt(0.5 * np.clip((hi - lo).prod(-1), 1.0, None))  # sqrt(segment area)
        sig = np.asarray([KEYPOINT_SIGMAS.get(k, 0.07) for k in names], dtype=np.float32)
        kp += rng.normal(0, 1, kp.shape) * (sig[None, :, None] * scale[:, None, None] / np.sqrt(2.0))
        vis &= rng.uniform(size=vis.shape) > 0.10
        for i in np.nonzero(rng.uniform(size=n) < 0.2)[0]:
            group = LIMB_GROUPS[rng.integers(0, len(LIMB_GROUPS))]
            vis[i, [names.index(g) for g in group if g in names]] = False
        for i in np.nonzero(rng.uniform(size=n) < 0.03)[0]:
            a, b = SWAP_PAIRS[rng.integers(0, len(SWAP_PAIRS))]
            ia, ib = names.index(a), names.index(b)
            kp[i, [ia, ib]] = kp[i, [ib, ia]]
    kp2d = np.concatenate([kp, vis[..., None].astype(np.float32)], -1)
    kp2d[~vis] = 0.0
    lo = np.where(vis[..., None], kp, np.inf).min(1)
    hi = np.where(vis[..., None], kp, -np.inf).max(1)
    lo, hi = np.where(np.isfinite(lo), lo, 0), np.where(np.isfinite(hi), hi, 1)
    pad = 0.1 * (hi - lo)
    bbox = np.concatenate([lo - pad, hi - lo + 2 * pad], 1).astype(np.float32)
    res = dict(
        keypoints_2d=kp2d.astype(np.float32), bbox=bbox, focal_length=focal.numpy(), principal_point=pp.astype(np.float32),
        image_size=sizes, keypoint_names=np.asarray(names), keypoints_2d_clean=clean.numpy().astype(np.float32),
        global_orient=global_orient.numpy(), body_pose=body_pose.numpy(), betas=betas.numpy(),
        transl=torch.cat(outs["transl"]).numpy(), joints_3d=torch.cat(outs["joints_3d"]).numpy(),
        keypoints_3d=kp3.numpy(), joint_names=np.asarray(body_model.joint_names),
        trial=pose_set["trial"][idx], model=np.str_(body_model.name), seed=np.int64(seed),
    )
    if with_vertices:
        res["vertices"] = torch.cat(outs["vertices"]).numpy()
    return res
