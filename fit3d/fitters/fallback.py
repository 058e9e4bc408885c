"""A fitter with a second opinion: a primary fitter's result, replaced per person by a
secondary fitter's where the secondary explains the keypoints much better.

Used as EFT with an SMPLify fallback (``fit3d eft --fallback``): EFT fine-tunes a
network that knows ordinary poses, and on clean keypoints of poses it does not know its
fine-tuning stops short of them (on the validation subjects' unusual poses, noise-free:
5.4 px median reprojection against SMPLify's 1.5, `docs/experiments.md`). SMPLify, started
from the rest pose and the prototype poses under several orientations, reaches them. On noisy
keypoints both explain the keypoints about as well and the primary stands. The rule is the
same kind as EFT's own choice between its fine-tuned output and its prediction
(:func:`~fit3d.fitters.result.refinement_pays`).
"""

from __future__ import annotations

import numpy as np
import torch

from fit3d.data.batching import PersonBatch
from fit3d.fitters.base import batch_size_for
from fit3d.fitters.describe import fitter_settings
from fit3d.fitters.result import FitResult

#: The secondary fit is kept where the primary's mean reprojection error is more than this
#: many times the secondary's (or not finite) and the secondary is valid (a primary that is not valid is no
#: reason by itself: with twice the noise that picked SMPLify fits of noise). Chosen on the
#: validation subjects (``docs/experiments.md``, "EFT with an SMPLify fallback").
FALLBACK_RATIO = 5.0
#: People with fewer labelled keypoints keep the primary fit: with few points SMPLify can
#: explain noisy keypoints exactly with a wrong pose (validation subjects, twice the noise).
FALLBACK_MIN_KEYPOINTS = 12


def fallback_batch_size(primary, secondary, device: str | torch.device) -> int:
    """People per call of a :class:`Fallback` of these fitters (instances or classes) on ``device``
    (:func:`~fit3d.fitters.base.batch_size_for` of each): on a CPU the larger (the operator count
    bounds it: on a 2-core CPU, 500 people, whole process, EFT + SMPLify ran at 5.2 fits/s with 256
    per batch, SMPLify's, and 4.1 with 64, EFT's), on a GPU the smaller (memory bounds it: EFT's
    per-person weights).

    Raises:
        RuntimeError: ``device`` is no device name.
    """
    sizes = batch_size_for(primary, device), batch_size_for(secondary, device)
    return min(sizes) if torch.device(device).type == "cuda" else max(sizes)


class Fallback:
    """``primary``'s fit, replaced per person by ``secondary``'s where that pays.

    Args:
        primary, secondary: fitters (``fitter(PersonBatch) -> FitResult``), e.g.
            :class:`~fit3d.fitters.EFT` and :class:`~fit3d.fitters.SMPLify` of one body model.
        ratio: :data:`FALLBACK_RATIO`.
        min_keypoints: :data:`FALLBACK_MIN_KEYPOINTS`; the secondary fitter runs only on people
            with at least this many usable keypoints (confidence > 0, finite coordinates, and a
            weight above 0 in the secondary's body model when it has one, as follow counts them).

    The result's extras are the primary's (describing the primary's own fit, also where the
    secondary's was kept) and ``fallback`` ``(B,)`` bool: the secondary's fit was kept.
    ``iterations`` count both fitters' steps where the secondary's fit was kept.
    """

    def __init__(self, primary, secondary, ratio: float = FALLBACK_RATIO,
                 min_keypoints: int = FALLBACK_MIN_KEYPOINTS) -> None:
        self.primary, self.secondary = primary, secondary
        self.ratio, self.min_keypoints = ratio, min_keypoints
        self.name = f"{getattr(primary, 'name', 'primary')}+{getattr(secondary, 'name', 'secondary')}"
        self.default_batch_size = fallback_batch_size(primary, secondary, "cpu")
        self.cuda_batch_size = fallback_batch_size(primary, secondary, "cuda")
        self.schedule = getattr(secondary, "schedule", None)
        self.extra_defaults = dict(getattr(primary, "extra_defaults", {}), fallback=np.bool_(False))

    def settings(self) -> dict:
        """What decides the fits (JSON-able): both fitters' ``settings()`` (None for a fitter
        without one), the ratio and the keypoint minimum."""
        return dict(primary=fitter_settings(self.primary), secondary=fitter_settings(self.secondary),
                    ratio=self.ratio, min_keypoints=self.min_keypoints)

    def __call__(self, batch: PersonBatch) -> FitResult:
        """Fit ``batch`` (B people) with the primary, then the people with enough keypoints with
        the secondary; returns B people."""
        res = self.primary(batch)
        res.extras["fallback"] = torch.zeros(len(batch), dtype=torch.bool, device=res.valid.device)
        kp = batch.keypoints_2d
        usable = (kp[..., 2] > 0) & torch.isfinite(kp[..., :2]).all(-1)  # (a review: NaN points were counted)
        model = getattr(self.secondary, "body_model", None)
        if model is not None:  # points the model does not fit (weight 0, e.g. SMPL's hips) do not count, by name
            weight = dict(zip(model.keypoint_convention.names, model.keypoint_weights().tolist()))
            fitted = torch.tensor([weight.get(n, 0.0) > 0 for n in batch.convention.names], device=kp.device)
            usable &= fitted
        idx = torch.nonzero(usable.sum(-1) >= self.min_keypoints).flatten()
        if len(idx) == 0:
            return res
        alt = self.secondary(batch.index(idx.to(batch.keypoints_2d.device)))
        mine = idx.to(res.valid.device)
        err = res.reproj_error_px[mine]  # NaN: the primary's fit is not finite, any valid fit beats it
        keep = ((err > self.ratio * alt.reproj_error_px.to(mine.device)) | ~torch.isfinite(err)) & \
            alt.valid.to(mine.device)
        rows = alt.index(keep)
        rows.extras = {"fallback": torch.ones(len(rows), dtype=torch.bool, device=rows.valid.device)}
        where = mine[keep]
        rows.iterations = rows.iterations + res.iterations[where].to(rows.iterations.device)
        return res.scatter(where, rows)
