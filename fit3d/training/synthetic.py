"""Synthetic people with known 3D truth: mocap poses, random shapes and cameras, realistic 2D errors.

Used to train the regressor and NeuralAnnot's depth recipe (training and validation subjects, never test)
and to make the development benchmarks (held-out subjects, :mod:`fit3d.evaluation.benchmark`).
Per person (deterministic by seed):

* pose: a retargeted mocap frame (its own orientation to gravity kept, so lying or
  bending stays so), turned by a random yaw about the vertical; optionally
  orientations of every kind (:class:`OrientationModel`);
* shape: ``betas ~ N(0, 0.6^2)``;
* camera (:class:`CameraModel`): full frame; image size drawn from common photo
  sizes; the true focal length is ``diagonal * U`` with ``U`` log-uniform in a range.
  With ``fitter_focal="diagonal"`` the fitter is *not* told it: the person's
  ``focal_length`` is the image diagonal (fit3d's default), the truth is kept in
  ``focal_length_true``; camera pitch ``N(0, 10 deg)``, roll ``N(0, 3 deg)``;
* placement: person height 25-90 % of the image height, root inside the central
  80 % x 40 % of the frame, so some people are truncated by the border; optionally a share
  framed close, from the waist or chest up (``CameraModel.p_closeup``);
* 2D errors (:class:`NoiseModel`): per-keypoint Gaussian noise per axis with standard
  deviation ``scale * max(sigma_i s / sqrt(2), floor * box diagonal)``, where
  ``sigma_i`` are COCO's per-keypoint OKS constants (the standard deviation of human
  annotators' errors over the object scale ``s = sqrt(segment area)``, measured from
  5000 redundantly annotated images; Ronchi & Perona, ICCV 2017; COCO-WholeBody's
  values for the feet), the segment area being taken as half the labelled keypoints'
  box area; then a share of keypoints dropped at random, a share of people with a
  whole limb occluded, keypoints outside the image dropped (truncation), and a share
  of people with one left/right pair swapped (a common annotator and detector error).
  ``scale = 0`` is the noise-free variant: exact keypoints, only truncation.
  With ``scores="detector"`` each labelled point gets a detector-like confidence in (0, 1)
  instead of 1: its OKS keypoint similarity to the truth (how close the noisy point lies)
  times a uniform draw in [0.35, 1] (detectors are unsure of points they place well too), so
  scores sit around 0.6, as OpenPose's do, and fall with the point's error.

:data:`BENCHMARK_V1` reproduces the earlier benchmark exactly (known focal length
24-85 mm equivalent, no noise floor, 3 % swaps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import roma
import torch

from fit3d.data.boxes import KEYPOINT_BOX_PAD
from fit3d.geometry import project
from fit3d.training.augment import axis_rotation

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
#: How labelled keypoints are scored (:class:`NoiseModel`).
SCORES = ("labels", "detector")
SWAP_PAIRS = (("left_wrist", "right_wrist"), ("left_ankle", "right_ankle"), ("left_knee", "right_knee"),
              ("left_elbow", "right_elbow"))


@dataclass(frozen=True)
class NoiseModel:
    """Annotator-like 2D errors (see module docstring).

    Attributes:
        scale: multiplies the positional noise; 0 gives exact keypoints and no
            drops, occlusions or swaps.
        floor: smallest per-axis standard deviation, as a share of the labelled
            keypoints' box diagonal.
        drop: share of keypoints dropped at random.
        occlude: share of people with one whole limb (or the face) unlabelled.
        swap: share of people with one left/right pair swapped.
        scores: ``"labels"``: labelled points have confidence 1 (annotators' visibility
            flags); ``"detector"``: graded confidences (see module docstring).
    """

    scale: float = 1.0
    floor: float = 0.015
    drop: float = 0.10
    occlude: float = 0.20
    swap: float = 0.02
    scores: str = "labels"

    def __post_init__(self):
        if self.scores not in SCORES:
            raise ValueError(f"unknown keypoint scores {self.scores!r}; choose from {SCORES}")


@dataclass(frozen=True)
class CameraModel:
    """Full-frame cameras.

    Attributes:
        focal_range: the true focal length is ``diagonal * U``, ``U`` log-uniform in
            this range.
        fitter_focal: ``"diagonal"``: the fitter gets the image diagonal (fit3d's
            default, the truth is unknown to it); ``"true"``: the fitter gets the truth.
        p_closeup: share of people framed close, as in photos of people from the waist or
            chest up (a fifth of the fitted people of ``coco_mini`` have no hip labelled): the
            whole body 1.2-2.2 x the image height, the top of the head 5-35 % down the frame,
            so the bottom edge cuts the body between the chest and the knees (the cut-off
            keypoints are dropped as any truncated ones). The other people are placed as the
            module docstring says (their placement is the same with or without close-ups; their noise,
            drops and swaps are not: the close-up draws come before them in the stream).
    """

    focal_range: tuple[float, float] = (0.6, 1.6)
    fitter_focal: str = "diagonal"
    p_closeup: float = 0.0


#: What the upright placement assumes of a body of height 1: the root (pelvis) sits this far
#: below the top of the head.
ROOT_BELOW_HEAD = 0.44


@dataclass(frozen=True)
class OrientationModel:
    """Orientations beyond the captured ones (for training): a share ``p_any`` of people
    gets a uniformly random body orientation, a share ``p_high`` a camera pitched 30-80 deg."""

    p_any: float = 0.0
    p_high: float = 0.0


#: The earlier benchmark's models: known focal length 24-85 mm equivalent (f = diagonal x f_eq / 43.3 mm).
CAMERA_V1 = CameraModel(focal_range=(24 / 43.3, 85 / 43.3), fitter_focal="true")
NOISE_V1 = NoiseModel(scale=1.0, floor=0.0, drop=0.10, occlude=0.20, swap=0.03)
NOISE_FREE = NoiseModel(scale=0.0)


def _depth(f: np.ndarray, frac: np.ndarray, height_px: np.ndarray) -> np.ndarray:
    """Camera distance (m) at which a 1.7 m body spans ``frac`` of an image ``height_px`` high at
    focal length ``f`` px, at least 1 m (the body is then shown smaller than ``frac``)."""
    return np.maximum(f * 1.7 / (frac * height_px), 1.0)


def make_people(body_pose: np.ndarray, global_orient: np.ndarray, body_model, n: int, seed: int = 0,
                camera: CameraModel = CameraModel(), noise: NoiseModel = NoiseModel(),
                orientations: OrientationModel = OrientationModel(), with_vertices: bool = False,
                batch_size: int = 64) -> dict:
    """``n`` synthetic people drawn from a pool of poses (see module docstring).

    Args:
        body_pose: ``(P, J, 3)`` pool of poses; global_orient: ``(P, 3)`` their mocap
            world orientations (Y up).
        body_model: the model that poses them.
        n: people; drawn without replacement when ``n <= P``.
    Returns:
        numpy arrays: inputs ``keypoints_2d (N, K, 3)``, ``bbox (N, 4)``, ``focal_length (N, 2)``
        (what the fitter is told), ``principal_point``, ``image_size``, ``keypoint_names``;
        truth ``focal_length_true``, ``global_orient``, ``body_pose``, ``betas``, ``transl``,
        ``joints_3d``, ``keypoints_3d``, ``keypoints_2d_clean``, ``vertices`` (float16,
        relative to the root joint; when ``with_vertices``), ``joint_names``,
        ``pose_index (N,)`` into the pool, ``model``, ``seed``.
    """
    rng = np.random.default_rng(seed)
    P = len(body_pose)
    idx = rng.choice(P, size=n, replace=n > P)
    bp = torch.as_tensor(body_pose[idx], dtype=torch.float32)
    R_world = roma.rotvec_to_rotmat(torch.as_tensor(global_orient[idx], dtype=torch.float32))
    if orientations.p_any > 0:
        g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        anyR = roma.random_rotmat(n, generator=g)
        R_world = torch.where(torch.as_tensor(rng.uniform(size=n) < orientations.p_any)[:, None, None], anyR, R_world)
    yaw = axis_rotation(1, rng.uniform(0, 2 * math.pi, n))
    roll = rng.normal(0, 3, n)
    pitch = rng.normal(0, 10, n)
    if orientations.p_high > 0:
        high = rng.uniform(size=n) < orientations.p_high
        pitch = np.where(high, rng.uniform(30, 80, n) * rng.choice([-1.0, 1.0], n), pitch)
    cam = axis_rotation(2, np.deg2rad(roll)) @ axis_rotation(0, np.deg2rad(pitch) + math.pi)
    R = cam @ yaw @ R_world
    go = roma.rotmat_to_rotvec(R)
    betas = torch.as_tensor(rng.normal(0, 0.6, (n, body_model.num_betas)), dtype=torch.float32)
    sizes = np.asarray([IMAGE_SIZES[i] for i in rng.integers(0, len(IMAGE_SIZES), n)], dtype=np.float32)
    diag = np.linalg.norm(sizes, axis=1)
    lo_f, hi_f = camera.focal_range
    f = diag * np.exp(rng.uniform(math.log(lo_f), math.log(hi_f), n))
    frac = rng.uniform(0.25, 0.9, n)
    z = _depth(f, frac, sizes[:, 1])
    u = sizes[:, 0] * rng.uniform(0.1, 0.9, n)
    v = sizes[:, 1] * rng.uniform(0.3, 0.7, n)
    if camera.p_closeup > 0:  # (drawn after the placement: the other people's placement is unchanged)
        close = rng.uniform(size=n) < camera.p_closeup
        big = rng.uniform(1.2, 2.2, n)
        head = rng.uniform(0.05, 0.35, n)
        frac = np.where(close, big, frac)
        z = _depth(f, frac, sizes[:, 1])
        shown = f * 1.7 / (z * sizes[:, 1])  # the body's height in frames (less where z was floored)
        v = np.where(close, sizes[:, 1] * (head + ROOT_BELOW_HEAD * shown), v)
    pp = sizes / 2
    root = np.stack([(u - pp[:, 0]) * z / f, (v - pp[:, 1]) * z / f, z], 1)
    focal = torch.as_tensor(np.stack([f, f], 1), dtype=torch.float32)
    truth = _pose_people(body_model, bp, betas, go, root, with_vertices, batch_size)
    kp3 = truth["keypoints_3d"]
    clean = project(torch.as_tensor(kp3), focal, torch.as_tensor(pp, dtype=torch.float32)).numpy()
    names = list(body_model.keypoint_convention.names)
    kp2d = _annotate(clean, kp3, sizes, names, noise, rng)
    vis = kp2d[..., 2] > 0
    xy = kp2d[..., :2]
    lo, hi = _extent(xy, vis)
    lo, hi = np.where(np.isfinite(lo), lo, 0), np.where(np.isfinite(hi), hi, 1)
    pad = KEYPOINT_BOX_PAD * (hi - lo)  # (as OpenPose people are boxed; the regressor reads this box)
    bbox = np.concatenate([lo - pad, hi - lo + 2 * pad], 1).astype(np.float32)
    given = focal.numpy() if camera.fitter_focal == "true" else np.stack([diag, diag], 1).astype(np.float32)
    return dict(
        keypoints_2d=kp2d, bbox=bbox, focal_length=given, focal_length_true=focal.numpy(),
        principal_point=pp.astype(np.float32), image_size=sizes, keypoint_names=np.asarray(names),
        keypoints_2d_clean=clean.astype(np.float32), global_orient=go.numpy(), body_pose=bp.numpy(),
        betas=betas.numpy(), joint_names=np.asarray(body_model.joint_names), pose_index=idx.astype(np.int64),
        model=np.str_(body_model.name), seed=np.int64(seed), **truth,
    )


def silhouette_boxes(people: dict) -> np.ndarray:
    """``(N, 4)`` ``x, y, w, h`` pixels: each person's box around their whole projected mesh, cut to the
    image, as COCO's annotators box a person (around the segmentation, hidden limbs' extent included,
    clothes and hair aside), where :func:`make_people` boxes the labelled keypoints.

    Args:
        people: :func:`make_people`'s arrays with ``vertices`` (``with_vertices=True``).
    Raises:
        KeyError: no ``vertices``.
    """
    v = people["vertices"].astype(np.float32) + people["joints_3d"][:, :1]  # (root-relative: back in the camera)
    f, pp = people["focal_length_true"][:, None], people["principal_point"][:, None]
    uv = v[..., :2] / np.clip(v[..., 2:], 1e-3, None) * f + pp
    size = people["image_size"][:, None]
    uv = np.clip(uv, 0, size)
    lo, hi = uv.min(1), uv.max(1)
    return np.concatenate([lo, hi - lo], 1).astype(np.float32)


def _extent(points: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lo (N, 2), hi (N, 2))``: the corners of the box around each person's points ``(N, K, 2)``
    where ``vis (N, K)``; ``inf`` / ``-inf`` for a person with none."""
    return np.where(vis[..., None], points, np.inf).min(1), np.where(vis[..., None], points, -np.inf).max(1)


def _pose_people(body_model, body_pose, betas, global_orient, root, with_vertices, batch_size) -> dict:
    """Pose and place the people so that their root joints sit at ``root`` (camera frame)."""
    dev = body_model.device
    outs = {k: [] for k in ("joints_3d", "keypoints_3d", "vertices", "transl")}
    with torch.no_grad():
        for s in range(0, len(body_pose), batch_size):
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
    return {k: torch.cat(v).numpy() for k, v in outs.items() if v}


def _annotate(clean: np.ndarray, keypoints_3d: np.ndarray, sizes: np.ndarray, names: list[str], noise: NoiseModel,
              rng: np.random.Generator) -> np.ndarray:
    """``(N, K, 3)`` annotated keypoints (x, y, confidence) from exact projections (see :class:`NoiseModel`):
    confidence 0 for unlabelled points, 1 (or a detector-like score in (0, 1)) for labelled ones."""
    n = len(clean)
    inside = ((clean[..., 0] >= 0) & (clean[..., 0] < sizes[:, :1]) & (clean[..., 1] >= 0)
              & (clean[..., 1] < sizes[:, 1:2]) & (keypoints_3d[..., 2] > 0.1))
    vis = inside.copy()
    kp = clean.copy()
    if noise.scale > 0:
        lo, hi = _extent(kp, vis)
        with np.errstate(invalid="ignore", over="ignore"):  # people with no keypoint in view: dropped below
            scale = np.sqrt(0.5 * np.clip((hi - lo).prod(-1), 1.0, None))  # sqrt(segment area)
            sig = np.asarray([KEYPOINT_SIGMAS.get(k, 0.07) for k in names], dtype=np.float32)
            sd = sig[None, :] * scale[:, None] / np.sqrt(2.0)
            if noise.floor > 0:
                sd = np.maximum(sd, noise.floor * np.linalg.norm(hi - lo, axis=-1)[:, None])
        kp += rng.normal(0, 1, kp.shape) * (noise.scale * sd)[..., None]
        vis &= rng.uniform(size=vis.shape) > noise.drop
        for i in np.nonzero(rng.uniform(size=n) < noise.occlude)[0]:
            group = LIMB_GROUPS[rng.integers(0, len(LIMB_GROUPS))]
            vis[i, [names.index(g) for g in group if g in names]] = False
        for i in np.nonzero(rng.uniform(size=n) < noise.swap)[0]:
            a, b = SWAP_PAIRS[rng.integers(0, len(SWAP_PAIRS))]
            if a in names and b in names:
                ia, ib = names.index(a), names.index(b)
                kp[i, [ia, ib]] = kp[i, [ib, ia]]
    conf = vis.astype(np.float32)
    if noise.scores == "detector":  # (drawn last: the labels variant's stream is unchanged)
        conf = np.where(vis, _detector_scores(kp, clean, vis, names, rng), 0.0)
    kp2d = np.concatenate([kp, conf[..., None]], -1).astype(np.float32)
    kp2d[~vis] = 0.0
    return kp2d


def _detector_scores(kp: np.ndarray, clean: np.ndarray, vis: np.ndarray, names: list[str],
                     rng: np.random.Generator) -> np.ndarray:
    """``(N, K)`` detector-like confidences of annotated points ``kp (N, K, 2)``: COCO's keypoint
    similarity ``exp(-d^2 / (2 s^2 k^2))`` to the exact ``clean`` points (``k = 2 sigma``, ``s^2`` the
    segment area taken as half the labelled points' box area) times ``U(0.35, 1)``, at least 0.05."""
    lo, hi = _extent(clean, vis)
    with np.errstate(invalid="ignore", over="ignore"):  # (people with no point in view: no labelled point)
        area = 0.5 * np.clip((hi - lo).prod(-1), 1.0, None)
    k = 2 * np.asarray([KEYPOINT_SIGMAS.get(n, 0.07) for n in names], dtype=np.float64)
    d2 = ((kp - clean) ** 2).sum(-1)
    similarity = np.exp(-d2 / (2 * np.nan_to_num(area, nan=1.0, posinf=1.0)[:, None] * k[None] ** 2))
    return np.clip(similarity * rng.uniform(0.35, 1.0, vis.shape), 0.05, 1.0).astype(np.float32)


def make_synthetic_benchmark(pose_set: dict, body_model, n: int = 500, seed: int = 0, split: str = "test",
                             noise: bool = True, with_vertices: bool = True, batch_size: int = 64) -> dict:
    """The earlier (v1) benchmark: poses of the trials held out by the old trial protocol
    (``split="test"``; ``"train"``: the other trials), :data:`CAMERA_V1`, :data:`NOISE_V1`
    (or exact keypoints when ``noise`` is False). Kept to compare with earlier numbers.

    Returns:
        as :func:`make_people`, plus ``trial (N,)``.
    Raises:
        KeyError: the pose set has no ``is_test_v1``.
        ValueError: the split has no poses or the pose set is for another model.
    """
    if str(pose_set.get("model", body_model.name)) != body_model.name:
        raise ValueError(f"pose set is for {pose_set['model']}, not {body_model.name}")
    held_out = np.asarray(pose_set["is_test_v1"], dtype=bool)
    sel = np.nonzero(held_out if split == "test" else ~held_out)[0]
    if len(sel) == 0:
        raise ValueError(f"no {split} poses in the pose set")
    out = make_people(pose_set["body_pose"][sel], pose_set["global_orient"][sel], body_model, n, seed=seed,
                      camera=CAMERA_V1, noise=NOISE_V1 if noise else NOISE_FREE, with_vertices=with_vertices,
                      batch_size=batch_size)
    out["pose_index"] = sel[out["pose_index"]]
    out["trial"] = pose_set["trial"][out["pose_index"]]
    out["focal_length_true"] = out["focal_length"]
    return out
