"""Fit a benchmark's 2D keypoints with any fitter and score the fits against its 3D truth."""

from __future__ import annotations

import time

import numpy as np
import torch

from fit3d.data.batching import PersonBatch
from fit3d.data.conventions import LIMBS12, KeypointConvention, convert
from fit3d.evaluation import metrics as M


def load_benchmark(path) -> dict[str, np.ndarray]:
    """A ``fit3d benchmark make`` ``.npz`` as a dict of arrays."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def benchmark_batch(bench: dict, idx: np.ndarray, convention: KeypointConvention, device="cpu") -> PersonBatch:
    """The benchmark people ``idx`` as a :class:`PersonBatch` in ``convention`` (mapped by keypoint name)."""
    src = KeypointConvention("benchmark", tuple(str(n) for n in bench["keypoint_names"]))
    kp = convert(bench["keypoints_2d"][idx], src, convention)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)  # noqa: E731
    return PersonBatch(t(kp), t(bench["bbox"][idx]), t(bench["focal_length"][idx]), t(bench["principal_point"][idx]),
                       t(bench["image_size"][idx]), convention)


def _by_name(points: np.ndarray, names, wanted) -> np.ndarray:
    names = [str(n) for n in names]
    return points[:, [names.index(w) for w in wanted]]


def score(bench: dict, idx: np.ndarray, pred_keypoints_3d: np.ndarray, pred_names, pred_2d: np.ndarray | None = None,
          pred_vertices: np.ndarray | None = None, pred_root: np.ndarray | None = None,
          joints: tuple[str, ...] = LIMBS12) -> dict[str, np.ndarray]:
    """Per-person metrics of predictions for benchmark people ``idx``.

    MPJPE / PA-MPJPE (mm) on ``joints`` (by name; root = mid-hips), 2D error (px)
    and PCK@0.05/0.1 against the benchmark's *clean* 2D keypoints on the labelled
    ones, PVE (mm) when vertices are given and the benchmark has them.
    """
    gt = torch.as_tensor(_by_name(bench["keypoints_3d"][idx], bench["keypoint_names"], joints))
    pr = torch.as_tensor(_by_name(pred_keypoints_3d, pred_names, joints))
    hips = (joints.index("left_hip"), joints.index("right_hip"))
    out = dict(mpjpe=M.mpjpe(pr, gt, hips).numpy(), pa_mpjpe=M.pa_mpjpe(pr, gt).numpy())
    if pred_2d is not None:
        names = [str(n) for n in bench["keypoint_names"]]
        common = [n for n in names if n in [str(p) for p in pred_names]]
        gt2 = bench["keypoints_2d_clean"][idx][:, [names.index(n) for n in common]]
        lab = bench["keypoints_2d"][idx][:, [names.index(n) for n in common], 2:]
        gt2 = torch.as_tensor(np.concatenate([gt2, lab], -1))
        p2 = torch.as_tensor(_by_name(pred_2d, pred_names, common))
        box = torch.as_tensor(bench["bbox"][idx])
        out.update(error_2d_px=M.reprojection_px(p2, gt2).numpy(), pck_05=M.pck(p2, gt2, box, 0.05).numpy(),
                   pck_10=M.pck(p2, gt2, box, 0.1).numpy())
    if pred_vertices is not None and "vertices" in bench and pred_root is not None:
        groot = torch.as_tensor(bench["joints_3d"][idx][:, 0])
        gv = torch.as_tensor(bench["vertices"][idx].astype(np.float32)) + groot[:, None]  # stored root-relative
        out["pve"] = M.pve(torch.as_tensor(pred_vertices), gv, torch.as_tensor(pred_root), groot).numpy()
    return out


def run_benchmark(bench: dict, fitter, body_model, batch_size: int = 64, limit: int | None = None,
                  with_pve: bool = True, progress: bool = False) -> dict:
    """Fit every benchmark person and score. Returns ``{"summary": {...}, "per_person": {...}}``
    with means over people, ``fits_per_s`` and ``seconds`` (fitting only)."""
    n = len(bench["keypoints_2d"]) if limit is None else min(limit, len(bench["keypoints_2d"]))
    conv = body_model.keypoint_convention
    rows: dict[str, list] = {}
    fit_time = 0.0
    it = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"benchmark {getattr(fitter, 'name', '')}", unit="batch")
    valid = []
    for s in it:
        idx = np.arange(s, min(s + batch_size, n))
        batch = benchmark_batch(bench, idx, conv, body_model.device)
        t0 = time.perf_counter()
        res = fitter(batch).cpu()
        fit_time += time.perf_counter() - t0
        verts = root = None
        same_model = str(bench.get("model", "")) == body_model.name
        if with_pve and same_model and "vertices" in bench:
            with torch.no_grad():
                o = body_model(*(t.to(body_model.device) for t in (res.global_orient, res.body_pose, res.betas,
                                                                 res.transl)), return_vertices=True)
            verts, root = o.vertices.cpu().numpy(), res.joints_3d[:, 0].numpy()
        sc = score(bench, idx, res.keypoints_3d.numpy(), conv.names, res.keypoints_2d_fit.numpy(), verts, root)
        for k, v in sc.items():
            rows.setdefault(k, []).append(v)
        valid.append(res.valid.numpy())
    per = {k: np.concatenate(v) for k, v in rows.items()}
    per["valid"] = np.concatenate(valid)
    summary = {k: float(np.nanmean(v)) for k, v in per.items() if k != "valid"}
    summary.update(count=n, share_valid=float(per["valid"].mean()), seconds=round(fit_time, 2),
                   fits_per_s=round(n / fit_time, 3) if fit_time > 0 else 0.0)
    return dict(summary=summary, per_person=per)
