"""The field's metrics, batched, in millimetres and pixels.

* MPJPE: mean joint error after aligning the roots (a given root joint, or the mean of given
  joints such as the two hips; the labelled ones among them with a ``valid`` mask) — Ionescu
  et al., Human3.6M (TPAMI 2014).
* PA-MPJPE: after a similarity Procrustes alignment (rotation, translation,
  scale; ``roma.rigid_points_registration``) — as in HMR/SPIN.
* PVE: mean vertex error after root alignment.
* torso direction error: the angle between the torso axes (hips to shoulders), unaligned.
* PCK@a: share of labelled keypoints within ``a`` times the box size
  (``max(w, h)``) of the ground truth.
Always PA-MPJPE <= MPJPE-with-the-same-points (a similarity alignment can
only reduce the error that a translation alone leaves).
"""

from __future__ import annotations

import roma
import torch


def _tensors(*xs):
    """Each of ``xs`` as a tensor (numpy arrays and lists as float tensors; None stays None)."""
    return tuple(x if x is None or isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float32)
                 for x in xs)


def _check_points(pred: torch.Tensor, gt: torch.Tensor, valid=None) -> None:
    """Raise ValueError unless ``pred`` and ``gt`` are ``(B, J, 3)`` alike and ``valid`` ``(B, J)``."""
    if pred.ndim != 3 or pred.shape[-1] != 3 or pred.shape != gt.shape:
        raise ValueError(f"expected pred and gt of one shape (B, J, 3), got {tuple(pred.shape)} and {tuple(gt.shape)}")
    if valid is not None and tuple(valid.shape) != tuple(pred.shape[:2]):
        raise ValueError(f"expected valid of shape (B, J) = {tuple(pred.shape[:2])}, got {tuple(valid.shape)}")


def _root(points: torch.Tensor, root: int | tuple[int, ...], valid=None) -> torch.Tensor:
    """``(B, 1, 3)``: the mean of the root joints (of the labelled ones with ``valid``; NaN
    where none of them is labelled)."""
    idx = [root] if isinstance(root, int) else list(root)
    if not idx or not all(-points.shape[1] <= i < points.shape[1] for i in idx):
        raise ValueError(f"root {root!r} is not a joint index of {points.shape[1]} joints")
    pts = points[:, idx]
    if valid is None:
        return pts.mean(1, keepdim=True)
    v = valid[:, idx].to(pts)[..., None]
    n = v.sum(1, keepdim=True)
    mean = torch.where(v > 0, pts, torch.zeros_like(pts)).sum(1, keepdim=True) / n.clamp(min=1)
    return torch.where(n > 0, mean, torch.full_like(mean, float("nan")))


def mpjpe(pred: torch.Tensor, gt: torch.Tensor, root: int | tuple[int, ...] = 0, valid=None) -> torch.Tensor:
    """``(B,)`` mm: mean joint error after subtracting each side's root.

    Args:
        pred, gt: ``(B, J, 3)`` metres. root: joint index, or indices averaged (e.g. the two hips);
            the default 0 is the first joint of the layout (pass the hips for COCO-ordered joints).
        valid: optional ``(B, J)`` bool mask of joints that count; the root is then the mean of
            its labelled joints, and a person none of whose root joints is labelled, or with no
            valid joint, scores NaN. Masked-out joints may hold NaN.
    Raises:
        ValueError: shapes other than the above, or a ``root`` that is no joint index.
    """
    pred, gt, valid = _tensors(pred, gt, valid)
    _check_points(pred, gt, valid)
    d = ((pred - _root(pred, root, valid)) - (gt - _root(gt, root, valid))).norm(dim=-1)
    return _masked_mean(d, valid) * 1000.0


def torso_angle_deg(pred: torch.Tensor, gt: torch.Tensor, hips: tuple[int, int], shoulders: tuple[int, int]) -> torch.Tensor:
    """``(B,)`` degrees between the predicted and true torso directions (mid-hips to mid-shoulders),
    in the camera frame without any alignment: a body fitted lying where the person stands (a
    global orientation error, which PA-MPJPE aligns away) shows here.

    Args:
        pred, gt: ``(B, J, 3)``. hips, shoulders: indices of the left and right joints.
    Raises:
        ValueError: ``pred`` and ``gt`` not ``(B, J, 3)`` alike.
    """
    pred, gt = _tensors(pred, gt)
    _check_points(pred, gt)

    def axis(p):
        return p[:, list(shoulders)].mean(1) - p[:, list(hips)].mean(1)

    cos = torch.nn.functional.cosine_similarity(axis(pred), axis(gt), dim=-1)
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def procrustes_align(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``pred`` ``(B, J, 3)`` moved onto ``gt`` by the best similarity transform (Umeyama, with
    scale; roma's registration). A collapsed prediction (all points at one place) has no rotation
    to fit: its best similarity maps it to ``gt``'s centroid (scale 0), not to NaN, so it scores
    as the failure it is."""
    R, t, s = roma.rigid_points_registration(pred, gt, compute_scaling=True)
    out = s[:, None, None] * pred @ R.transpose(-1, -2) + t[:, None, :]
    finite = torch.isfinite(pred).all(-1).all(-1)
    spread = (pred - pred.mean(1, keepdim=True)).abs().amax(dim=(1, 2))
    scale = 1.0 + pred.abs().amax(dim=(1, 2)).nan_to_num(0.0, 0.0, 0.0)
    # (in float32 identical points leave a spread of ~1e-7 after the mean: relative tolerance, and any
    # finite prediction the registration turned non-finite)
    collapsed = finite & ((spread <= 1e-6 * scale) | ~torch.isfinite(out).all(-1).all(-1))
    return torch.where(collapsed[:, None, None], gt.mean(1, keepdim=True).expand_as(gt), out)


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor, valid=None) -> torch.Tensor:
    """``(B,)`` mm after similarity Procrustes alignment (on the valid joints when given; NaN for
    a person with fewer than 3 valid joints, which fix no similarity transform).

    Args:
        pred, gt: ``(B, J, 3)`` metres. valid: optional ``(B, J)`` bool mask.
    Raises:
        ValueError: shapes other than the above.
    """
    pred, gt, valid = _tensors(pred, gt, valid)
    _check_points(pred, gt, valid)
    if valid is not None and not bool(valid.all()):
        out = []
        for i in range(pred.shape[0]):
            m = valid[i].bool()
            if int(m.sum()) < 3:
                out.append(torch.tensor(float("nan"), dtype=pred.dtype, device=pred.device))
                continue
            out.append(pa_mpjpe(pred[i : i + 1, m], gt[i : i + 1, m])[0])
        return torch.stack(out)
    d = (procrustes_align(pred, gt) - gt).norm(dim=-1)
    return d.mean(-1) * 1000.0


def pve(pred_vertices: torch.Tensor, gt_vertices: torch.Tensor, pred_root: torch.Tensor, gt_root: torch.Tensor) -> torch.Tensor:
    """``(B,)`` mm: mean vertex error after aligning the given roots (as MPJPE does its joints).

    Args:
        pred_vertices, gt_vertices: ``(B, V, 3)`` metres, the same mesh topology.
        pred_root, gt_root: ``(B, 3)`` metres (e.g. each side's pelvis).
    Raises:
        ValueError: shapes other than the above (a batch of 1 no longer broadcasts against B).
    """
    pred_vertices, gt_vertices, pred_root, gt_root = _tensors(pred_vertices, gt_vertices, pred_root, gt_root)
    _check_points(pred_vertices, gt_vertices)
    if tuple(pred_root.shape) != (pred_vertices.shape[0], 3) or pred_root.shape != gt_root.shape:
        raise ValueError(f"expected roots of shape (B, 3) = ({pred_vertices.shape[0]}, 3), got "
                         f"{tuple(pred_root.shape)} and {tuple(gt_root.shape)}")
    d = ((pred_vertices - pred_root[:, None]) - (gt_vertices - gt_root[:, None])).norm(dim=-1)
    return d.mean(-1) * 1000.0


def _check_2d(pred_2d: torch.Tensor, gt_2d: torch.Tensor, bbox=None) -> None:
    """Raise ValueError unless ``pred_2d`` is ``(B, K, 2 or 3)``, ``gt_2d`` ``(B, K, 3)`` (with the
    confidence that says which keypoints are labelled) and ``bbox`` ``(B, 4)``."""
    if gt_2d.ndim != 3 or gt_2d.shape[-1] != 3:
        raise ValueError(f"expected gt_2d of shape (B, K, 3): x, y and a confidence, got {tuple(gt_2d.shape)}")
    if pred_2d.ndim != 3 or pred_2d.shape[:2] != gt_2d.shape[:2] or pred_2d.shape[-1] not in (2, 3):
        raise ValueError(f"expected pred_2d of shape (B, K, 2) with gt_2d's B, K = {tuple(gt_2d.shape[:2])}, "
                         f"got {tuple(pred_2d.shape)}")
    if bbox is not None and tuple(bbox.shape) != (gt_2d.shape[0], 4):
        raise ValueError(f"expected bbox of shape (B, 4) = ({gt_2d.shape[0]}, 4), got {tuple(bbox.shape)}")


def reprojection_px(pred_2d: torch.Tensor, gt_2d: torch.Tensor) -> torch.Tensor:
    """``(B,)`` mean pixel distance over keypoints with confidence > 0 in ``gt_2d`` ``(B, K, 3)``
    (``pred_2d`` ``(B, K, 2)``; NaN for a person with none labelled).

    Raises:
        ValueError: shapes other than these.
    """
    pred_2d, gt_2d = _tensors(pred_2d, gt_2d)
    _check_2d(pred_2d, gt_2d)
    d = (pred_2d[..., :2] - gt_2d[..., :2]).norm(dim=-1)
    return _masked_mean(d, gt_2d[..., 2] > 0)


def pck(pred_2d: torch.Tensor, gt_2d: torch.Tensor, bbox: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(B,)`` share of labelled keypoints within ``alpha * max(w, h)`` of the truth.

    Args:
        pred_2d: ``(B, K, 2)`` px. gt_2d: ``(B, K, 3)`` px and confidence (> 0: labelled).
        bbox: ``(B, 4)`` ``x, y, w, h`` px. alpha: the share of the box size (0.05, 0.1...).
    Raises:
        ValueError: shapes other than these.
    """
    pred_2d, gt_2d, bbox = _tensors(pred_2d, gt_2d, bbox)
    _check_2d(pred_2d, gt_2d, bbox)
    d = (pred_2d[..., :2] - gt_2d[..., :2]).norm(dim=-1)
    thr = alpha * bbox[:, 2:].max(-1).values
    return _masked_mean((d <= thr[:, None]).float(), gt_2d[..., 2] > 0)


def _masked_mean(x: torch.Tensor, valid) -> torch.Tensor:
    if valid is None:
        return x.mean(-1)
    v = valid.to(x)
    n = v.sum(-1)
    total = torch.where(v > 0, x, torch.zeros_like(x)).sum(-1)  # (a masked-out NaN must not count: NaN * 0 is NaN)
    return torch.where(n > 0, total / n.clamp(min=1), torch.full_like(n, float("nan")))
