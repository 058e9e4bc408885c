"""Pretraining the keypoint regressor on synthetic people from the training mocap trials.

Each round draws fresh people with :func:`fit3d.training.synthetic.make_synthetic_benchmark`
(``split="train"``: random shapes, full-frame cameras, truncation, COCO-like 2D
noise, dropped keypoints and occasional left/right swaps) and trains on them:
losses on root-relative 3D keypoints, rotation matrices, shape, and the 2D
reprojection of the full-frame prediction (normalised by the box size).
Seeded; deterministic on CPU for a given thread count.
"""

from __future__ import annotations

import time

import numpy as np
import roma
import torch

from fit3d.data.batching import PersonBatch
from fit3d.training.synthetic import make_synthetic_benchmark
from fit3d.geometry import project
from fit3d.regressors.base import crop_cam_to_transl
from fit3d.regressors.keypoint_regressor import KeypointRegressor


def _to_batch(data: dict, idx, convention) -> tuple[PersonBatch, dict]:
    t = lambda k: torch.as_tensor(data[k][idx])  # noqa: E731
    batch = PersonBatch(t("keypoints_2d"), t("bbox"), t("focal_length"), t("principal_point"), t("image_size"),
                        convention)
    gt = {k: t(k) for k in ("global_orient", "body_pose", "betas", "keypoints_3d", "keypoints_2d_clean")}
    return batch, gt


def regressor_loss(model, body_model, batch: PersonBatch, gt: dict) -> tuple[torch.Tensor, dict]:
    """Training loss of a batch (mean over people) and its parts."""
    out = model.predict(batch)
    body = body_model(out["global_orient"], out["body_pose"], out["betas"], out["transl"])
    names = body_model.keypoint_convention.names
    hips = [names.index("left_hip"), names.index("right_hip")]
    kp = body.keypoints_3d
    rel = kp - kp[:, hips].mean(1, keepdim=True)
    gkp = gt["keypoints_3d"]
    grel = gkp - gkp[:, hips].mean(1, keepdim=True)
    l3d = (rel - grel).norm(dim=-1).mean()
    R = roma.rotvec_to_rotmat(torch.cat([out["global_orient"][:, None], out["body_pose"]], 1))
    Rg = roma.rotvec_to_rotmat(torch.cat([gt["global_orient"][:, None], gt["body_pose"]], 1))
    lrot = (R - Rg).pow(2).sum((-1, -2)).mean()
    lshape = (out["betas"] - gt["betas"]).pow(2).mean()
    b = batch.bbox[:, 2:].max(-1).values.clamp(min=1.0)
    proj = project(kp, batch.focal_length, batch.principal_point)
    l2d = ((proj - gt["keypoints_2d_clean"]).norm(dim=-1) / b[:, None]).clamp(max=1.0).mean()
    loss = 5.0 * l3d + lrot + 0.1 * lshape + 2.0 * l2d
    return loss, dict(l3d_m=l3d.item(), rot=lrot.item(), shape=lshape.item(), l2d=l2d.item())


def train_regressor(pose_set: dict, body_model, rounds: int = 12, people_per_round: int = 8192,
                    epochs_per_round: int = 2, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                    progress: bool = True) -> tuple[KeypointRegressor, dict]:
    """Train a :class:`KeypointRegressor` for ``body_model``. Returns ``(model, stats)``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    conv = body_model.keypoint_convention
    model = KeypointRegressor(len(conv), body_model.num_body_joints, body_model.num_betas)
    steps_per_round = epochs_per_round * (people_per_round // batch_size)
    total = rounds * steps_per_round
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.05)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="train regressor", unit="step")
    parts = {}
    for r in range(rounds):
        data = make_synthetic_benchmark(pose_set, body_model, n=people_per_round, seed=seed * 1000 + r, split="train",
                                        with_vertices=False, batch_size=256)
        model.train()
        for _ in range(epochs_per_round):
            perm = torch.randperm(people_per_round, generator=g)
            for s in range(0, people_per_round - batch_size + 1, batch_size):
                batch, gt = _to_batch(data, perm[s : s + batch_size].numpy(), conv)
                loss, parts = regressor_loss(model, body_model, batch, gt)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                sched.step()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(mm=f"{parts['l3d_m'] * 1000:.0f}", rot=f"{parts['rot']:.2f}")
    if bar is not None:
        bar.close()
    model.eval()
    return model, dict(steps=total, seconds=round(time.perf_counter() - t0, 1), final=parts)


def save_regressor(model: KeypointRegressor, path) -> None:
    """Save ``model.state()`` atomically."""
    import io

    from fit3d.data.writers import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(model.state(), buf)
    atomic_write_bytes(path, buf.getvalue())


def load_regressor(path) -> KeypointRegressor:
    """A regressor saved by :func:`save_regressor`."""
    return KeypointRegressor.from_state(torch.load(path, map_location="cpu", weights_only=True))
