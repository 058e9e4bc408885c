"""What every fitter returns."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch

from fit3d.data.conventions import KeypointConvention
from fit3d.data.keypoints import degenerate_keypoints
from fit3d.fitters.losses import person_scale

#: A fit is valid when its mean reprojection error is below this share of the person scale
#: (the larger of box and keypoint-box diagonals).
VALID_ERROR_FRACTION = 0.05


@dataclass
class FitResult:
    """B fitted people (all tensors on CPU after :meth:`cpu`).

    Attributes:
        global_orient: ``(B, 3)`` axis-angle.
        body_pose: ``(B, J, 3)`` axis-angle.
        betas: ``(B, S)`` the model's shape vector.
        transl: ``(B, 3)`` metres.
        joints_3d: ``(B, J+1, 3)`` skeleton joints, camera frame, metres.
        keypoints_3d: ``(B, K, 3)`` model keypoints in ``convention``, camera frame, metres.
        keypoints_2d_fit: ``(B, K, 2)`` reprojected keypoints, pixels.
        reproj_error_px: ``(B,)`` mean pixel distance over the labelled keypoints the model has and
            fits, weighted by their confidence (:func:`reprojection_error_px`; not SMPL's hips).
        valid: ``(B,)`` bool, see :func:`is_valid`.
        loss: ``(B,)`` final loss.
        iterations: ``(B,)`` optimisation steps taken (fine-tuning steps for EFT).
        convention: keypoint convention of ``keypoints_3d`` / ``keypoints_2d_fit``.
        extras: fitter-specific ``(B, ...)`` arrays (e.g. the winning orientation hypothesis).
    """

    global_orient: torch.Tensor
    body_pose: torch.Tensor
    betas: torch.Tensor
    transl: torch.Tensor
    joints_3d: torch.Tensor
    keypoints_3d: torch.Tensor
    keypoints_2d_fit: torch.Tensor
    reproj_error_px: torch.Tensor
    valid: torch.Tensor
    loss: torch.Tensor
    iterations: torch.Tensor
    convention: KeypointConvention
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __repr__(self) -> str:
        """Shapes, not values (a notebook prints this): ``FitResult(B=12, body_pose=(12, 19, 3), ...)``."""
        def shape(v):
            return tuple(v.shape) if isinstance(v, torch.Tensor) else v

        fields = [f"{f}={shape(getattr(self, f))}" for f in self.__dataclass_fields__
                  if f not in ("convention", "extras")]
        extras = ", ".join(f"{k}={shape(v)}" for k, v in self.extras.items())
        return (f"FitResult(B={len(self)}, {', '.join(fields)}, convention={self.convention.name!r}, "
                f"extras={{{extras}}})")

    def __len__(self) -> int:
        return self.global_orient.shape[0]

    def cpu(self) -> "FitResult":
        """A copy with detached CPU tensors."""
        kw = {
            f.name: getattr(self, f.name).detach().cpu()
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        extras = {k: v.detach().cpu() for k, v in self.extras.items()}
        return FitResult(**kw, convention=self.convention, extras=extras)

    def where(self, mask: torch.Tensor, other: "FitResult") -> "FitResult":
        """Per person, this result where ``mask (B,)`` is true, else ``other``'s (same B,
        same convention). Extras: this result's keys, each taken from ``other`` where
        ``mask`` is false.

        Raises:
            KeyError: ``other`` lacks one of this result's extras.
            ValueError: the results differ in length or convention, or ``mask`` is not ``(B,)``.
        """
        if len(other) != len(self) or other.convention != self.convention or mask.shape != (len(self),):
            raise ValueError(f"where: {len(self)} people ({self.convention.name}) and {len(other)} "
                             f"({other.convention.name}), mask {tuple(mask.shape)}")
        m = mask.to(device=self.global_orient.device, dtype=torch.bool)

        def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.where(m.view(-1, *([1] * (a.dim() - 1))), a, b.to(device=a.device))

        kw = {f.name: pick(getattr(self, f.name), getattr(other, f.name))
              for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}
        extras = {k: pick(v, other.extras[k]) for k, v in self.extras.items()}
        return FitResult(**kw, convention=self.convention, extras=extras)

    def index(self, index: torch.Tensor) -> "FitResult":
        """The people ``index`` (``(N,)`` long or ``(B,)`` bool), with their extras."""
        idx = index.to(self.global_orient.device)
        kw = {f.name: getattr(self, f.name)[idx] for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}
        return FitResult(**kw, convention=self.convention, extras={k: v[idx] for k, v in self.extras.items()})

    def scatter(self, index: torch.Tensor, rows: "FitResult") -> "FitResult":
        """A copy of this result with people ``index`` (``(N,)`` long) replaced by ``rows`` (N
        people, same convention). Extras: this result's keys, each replaced where ``rows`` has it.

        Raises:
            ValueError: ``rows`` has another length than ``index``, or another convention.
        """
        if len(rows) != len(index) or rows.convention != self.convention:
            raise ValueError(f"scatter: {len(index)} indices, {len(rows)} rows ({rows.convention.name} into "
                             f"{self.convention.name})")
        idx = index.to(device=self.global_orient.device, dtype=torch.long)

        def put(a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
            if b is None:
                return a.clone()
            out = a.clone()
            out[idx] = b.to(device=a.device, dtype=a.dtype)
            return out

        kw = {f.name: put(getattr(self, f.name), getattr(rows, f.name))
              for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}
        extras = {k: put(v, rows.extras.get(k)) for k, v in self.extras.items()}
        return FitResult(**kw, convention=self.convention, extras=extras)

    def numpy(self, i: int) -> dict[str, np.ndarray]:
        """Person ``i`` as a dict of numpy arrays (tensor fields and extras)."""
        out = {
            f.name: getattr(self, f.name)[i].detach().cpu().numpy()
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        out.update({k: v[i].detach().cpu().numpy() for k, v in self.extras.items()})
        return out


def reprojection_error_px(projected: torch.Tensor, keypoints_2d: torch.Tensor,
                          weights: torch.Tensor | None = None) -> torch.Tensor:
    """``(B,)`` mean pixel distance over keypoints with confidence > 0, weighted by their confidence
    (NaN when none): annotations' 0/1 give the plain mean; a detector's scores count each point as
    much as the fit's loss does, so a point the detector barely saw, which the fit rightly does not
    follow, does not make a fit invalid.

    Args:
        projected: ``(B, K, 2)`` the fit's keypoints, pixels. keypoints_2d: ``(B, K, 3)`` the
            labelled ones (x, y, confidence).
        weights: ``(K,)`` the body model's keypoint weights
            (:meth:`~fit3d.body_models.base.BodyModel.keypoint_weights`): keypoints of weight 0,
            which no fit is asked to reach (SMPL's hip joints, another point than COCO's hips),
            are left out, so that their fixed gap does not count as a fit's error (in the
            validity rule and the comparisons of EFT, NeuralAnnot and ``--fallback``).
    """
    conf = keypoints_2d[..., 2]
    vis = torch.where(conf > 0, conf, torch.zeros_like(conf)).to(projected)  # (NaN confidences: not labelled)
    if weights is not None:
        vis = vis * (weights > 0).to(vis)
    d = (projected - keypoints_2d[..., :2]).norm(dim=-1)
    n = vis.sum(-1)
    return torch.where(n > 0, (d * vis).sum(-1) / torch.where(n > 0, n, torch.ones_like(n)),
                       torch.full_like(n, float("nan")))


def refinement_pays(base_error_px: torch.Tensor, refined_error_px: torch.Tensor, ratio: float,
                    base_valid: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: keep a refined fit (EFT's fine-tuning, NeuralAnnot's annotation) over
    the base one (the pretrained network's prediction) where the base's mean reprojection
    error ``(B,)`` px is more than ``ratio`` times the refined one's, or the base is not
    valid (``base_valid (B,)``); elsewhere the base stands. What the refinement gains below
    that ratio is taken for fitted annotation noise (``docs/experiments.md``, "Keep the
    fine-tuning only where it pays"). A refined fit whose error is not finite (it diverged) is never
    kept over a base whose error is: where both are invalid, the base's finite parameters are the
    more useful record."""
    keep = (base_error_px > ratio * refined_error_px) | ~base_valid
    return keep & (torch.isfinite(refined_error_px) | ~torch.isfinite(base_error_px))


def is_valid(reproj_error_px: torch.Tensor, keypoints_2d: torch.Tensor, bbox: torch.Tensor,
             fraction: float = VALID_ERROR_FRACTION, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The validity rule of every fitter: ``(B,)`` bool.

    A fit is valid when its reprojection error is finite and at most ``fraction`` of
    the person scale (:func:`~fit3d.fitters.losses.person_scale` of ``keypoints_2d``
    ``(B, K, 3)`` and ``bbox`` ``(B, 4)``), its labelled keypoints are not all on one point or
    line (:func:`fit3d.data.keypoints.degenerate_keypoints`: such a fit reprojects exactly at any
    depth; the batch runs skip those people, a fitter called directly fits them), and, when
    ``params`` (name -> ``(B, ...)`` tensor) are given, all of them are finite. It is a 2D test: a
    person with only a few labelled keypoints (3 or more, not on one line) fits them exactly and is
    valid (the batch runs skip people with fewer than
    :data:`fit3d.pipeline.skips.MIN_VISIBLE_KEYPOINTS`; a fitter called directly does not).
    """
    scale = person_scale(keypoints_2d, bbox)
    flat = degenerate_keypoints(keypoints_2d.detach().float().cpu().numpy())
    spread = ~torch.as_tensor(flat, device=keypoints_2d.device)
    valid = torch.isfinite(reproj_error_px) & (reproj_error_px <= fraction * scale) & spread
    for v in (params or {}).values():
        valid &= torch.isfinite(v).flatten(1).all(1)
    return valid
