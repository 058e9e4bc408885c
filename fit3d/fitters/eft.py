"""Exemplar fine-tuning (EFT; Joo, Neverova, Vedaldi, 3DV 2021), batched.

EFT fits one person by fine-tuning a pretrained regressor's weights on that
person's 2D keypoints for a few steps, so the network acts as the pose prior,
then reads out its prediction; every person starts again from the pretrained
weights. Here B people are fine-tuned in one pass: the weights are stacked B
times and evaluated per person (:meth:`KeypointRegressor.forward_with` with the layers of
:mod:`fit3d.regressors.functional`; any other regressor module through
``torch.func.functional_call`` under ``torch.func.vmap``);
each copy has its own Adam state (Adam is element-wise), so the result equals
B separate runs (tested). The regressor has no BatchNorm
or dropout, so nothing needs freezing. ``finetune`` names the weights that get a
per-person copy (by name prefix; the rest stay shared and run as one ordinary
matrix product over the batch); fine-tuning fewer weights is cheaper per step
(README, "Throughput", has the measured speed of each choice; `docs/numbers-history.md`,
"Throughput", and `docs/experiments.md` their accuracy).

Loss per person: GMoF reprojection of the model's keypoints (confidence
weighted, normalised to the person's scale, as in SMPLify), EFT's shape
regulariser ``|betas|^2``, a term keeping the pose near the pretrained network's own
prediction (:data:`ANCHOR_WEIGHT`: without it the fit follows annotator noise away from
a good prediction), and optionally any prior of
``fit3d.priors``. A regressor with a prototype memory (PM-Net) keeps the prototype
its pretrained weights pick while it is fine-tuned. A regressor wrapped in
:class:`~fit3d.regressors.flip.FlipAveraged` (``build_eft``'s default) is fine-tuned through
its flip-averaged prediction: each person's weights see the person and its mirror image.
``follow`` (a :class:`~fit3d.fitters.follow.FollowConfig`) then moves the body model's own
parameters toward the keypoints, anchored at the EFT pose, and keeps that only where the
residual falls many times over (exact keypoints the network did not reach;
:mod:`fit3d.fitters.follow`). ``refine=True`` continues
with SMPLify's refinement stages from the EFT output (:meth:`SMPLify.fit_from`):
the output and its limb depth flips are refined side by side, the best kept.
"""

from __future__ import annotations

import copy
import numbers
from dataclasses import asdict, replace
from typing import NamedTuple

import numpy as np
import torch
from torch.func import functional_call, vmap

from fit3d.body_models.base import BodyModel
from fit3d.data.batching import PersonBatch, batch_for
import fit3d.fitters.losses as L
from fit3d.fitters.describe import describe_module
from fit3d.fitters.follow import FollowConfig, follow_keypoints
from fit3d.fitters.result import VALID_ERROR_FRACTION, FitResult, is_valid, refinement_pays, reprojection_error_px
from fit3d.fitters.smplify import SMPLify
from fit3d.fitters.stages import refinement_stages
from fit3d.geometry import project
from fit3d.priors.base import as_loss
from fit3d.regressors.base import crop_cam_to_transl, regressor_box
from fit3d.regressors.functional import fresh_grads, grads_in_place


def eft_refinement_stages() -> list:
    """EFT's refinement: SMPLify's clean branch (the pose follows exact keypoints; limb
    depth flips compete) and, for noisy keypoints, the EFT output as it is (the
    fine-tuned network is the better regulariser there; tuned on the tuning subjects)."""
    clean, noisy = refinement_stages()
    return [clean, replace(noisy, iterations=0)]


#: Weight of EFT's pose anchor ``|body_pose - body_pose_0|^2`` (axis-angle, summed over the
#: joints) per nominal px^2 of reprojection cost. Chosen on the two validation subjects with
#: weights trained without them (`docs/experiments.md`): with the regressor trained 192
#: rounds, fine-tuning at the earlier 0.1 followed annotator noise on ordinary poses (subject
#: 35: 36.1 mm before fine-tuning, 46.8 after); 10 is the best mean over both subjects with
#: realistic noise (80.2 -> 77.1 mm) and costs 1.0 mm noise-free.
ANCHOR_WEIGHT = 10.0

#: EFT keeps a person's fine-tuned output only when it reprojects more than this many times
#: closer to the keypoints than the pretrained network's own prediction (mean pixel error)
#: or when the prediction is not a valid fit (:func:`~fit3d.fitters.result.is_valid`);
#: otherwise the prediction stands. When the network already explains the keypoints about as
#: well as the fine-tuned copy, what fine-tuning gains is fitted annotator noise; when it
#: explains them much worse (a pose the network does not know), fine-tuning is kept. A
#: likelihood-ratio style model choice per person, for one extra body-model evaluation per
#: batch. Chosen on the two validation subjects with weights trained without them (`docs/experiments.md`;
#: mean PA-MPJPE-12 over subjects 01 and 35): always fine-tuned 77.1 / 57.8 / 94.2 mm (realistic
#: noise / noise-free / twice the noise); with the validity rule, 1.3: 75.7 / 57.8 / 87.4,
#: 1.4: 75.1 / 57.8 / 86.4, **1.5: 74.8 / 57.8 / 86.0**; without it 1.6: 75.7 / 58.0 / 87.9,
#: 2: 79.4 / 61.0 / 91.5.
ACCEPT_RATIO = 1.5

#: Values of EFT's ``FitResult.extras`` (without refinement) for people that were not fitted.
EXTRA_DEFAULTS = dict(prototype=np.int64(-1), finetuned=np.bool_(False))
#: ... and with ``follow``.
FOLLOW_DEFAULTS = dict(followed=np.bool_(False))


class FinetunePreset(NamedTuple):
    """A ``--finetune`` preset: which weights get a per-person copy and the rates that go with them.

    Attributes:
        names: name prefixes of :class:`KeypointRegressor`'s parameters (None: all of them).
        lr: EFT's Adam learning rate.
        accept_ratio: EFT's ``accept_ratio`` (:data:`ACCEPT_RATIO`).
    """

    names: tuple[str, ...] | None
    lr: float
    accept_ratio: float | None


#: ``--finetune`` presets. ``all`` (the default) fine-tunes every weight, as in the paper.
#: ``fast`` fine-tunes the input layer and IEF's last layer (14 % of the weights: about twice
#: the fits/s on a CPU). Its rate and ratio were chosen on the two validation subjects with
#: weights trained without them (mean PA-MPJPE-12 over subjects 01 and 35, realistic noise /
#: noise-free / twice the noise), by the rule: no subject and no noise level more than 1 mm
#: worse than ``all``'s 74.8 / 57.8 / 86.0 mm, then the best mean with noise: 1.3e-4 with 1.8
#: gives 72.8 / 54.5 / 85.0 (its earlier rate 4.5e-5 with 1.5: 77.9 / 60.8 / 88.2). A faster
#: rate lets fine-tuning reach unusual poses; the stricter ratio keeps it off ordinary ones.
#: On the held-out test subjects it is 0.7 mm worse than ``all`` with realistic noise and
#: 0.8 mm better noise-free (`docs/numbers-history.md`, "Throughput"), so ``all`` stays the default.
#: Again with the shipped regressor (2026-12-04): within 1 mm of ``all`` on every validation file
#: but 0.2-0.3 mm worse on their mean with noise; on the test subjects +1.0 mm [+0.3, +1.7] with
#: noise, -0.4 noise-free; ``all`` stays, as the main job takes the most accurate configuration
#: (`docs/experiments.md`, "Thirty-second session").
FINETUNE_PRESETS: dict[str, FinetunePreset] = {
    "all": FinetunePreset(None, 3e-5, ACCEPT_RATIO),
    "fast": FinetunePreset(("inp", "ief.4"), 1.3e-4, 1.8),
}


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether a parameter name is one of ``prefixes`` or lies under one (``ief.4`` matches
    ``ief.4.weight``, never ``ief.40.weight``)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _adam(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """torch's fused Adam where the device supports it, else the multi-tensor one."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


class EFT:
    """Batched exemplar fine-tuning.

    Args:
        body_model: the body model the regressor predicts.
        regressor: a pretrained :class:`~fit3d.regressors.base.Regressor`.
        steps: fine-tuning steps per person (EFT uses 20-50).
        lr: Adam learning rate on the weights.
        shape_weight: weight of ``|betas|^2``.
        anchor_weight: weight of ``|body_pose - body_pose_0|^2`` (axis-angle, summed over
            the joints; ``body_pose_0`` is the pretrained network's prediction), per
            nominal px^2 of reprojection cost.
        prior: optional pose prior ``(B, J, 3) -> (B,)`` and its weight ``prior_weight``
            (also the refinement's pose prior).
        refine: continue with ``refine_schedule`` (default: :func:`eft_refinement_stages`)
            from the EFT output, with limb depth-flip rows (see module docstring).
        refine_schedule: the refinement's stages.
        valid_fraction: as SMPLify's.
        finetune: names (or name prefixes ending at a dot boundary, e.g. ``"ief.4"``) of the
            regressor's parameters fine-tuned per person (``None``: all of them, as in the
            paper); the others are shared, unchanged.
        accept_ratio: keep a person's fine-tuned output only where the pretrained prediction's
            mean reprojection error (px) exceeds ``accept_ratio`` times the fine-tuned one's or
            the prediction is not valid (``valid_fraction``), else keep the prediction
            (:data:`ACCEPT_RATIO`; ``None``: always the fine-tuned output, as in the paper).
            Applied before ``follow`` and ``refine``.
        follow: a :class:`~fit3d.fitters.follow.FollowConfig`: follow the keypoints from the
            EFT output (:func:`~fit3d.fitters.follow.follow_keypoints`), before ``refine``;
            None: no.

    Raises:
        ValueError: ``finetune`` matches none of the regressor's parameters, ``steps`` is not a whole
            number >= 0, or ``lr`` is not > 0.
        TypeError: ``regressor`` or ``prior`` is not a module (e.g. None or a name).

    :func:`fit3d.fitters.build.build_eft` builds what the command line runs: the bundled
    regressor (:func:`fit3d.fitters.build.load_body_regressor`) flip-averaged
    (:class:`~fit3d.regressors.flip.FlipAveraged`); given a bare regressor, this class does not
    flip-average.

    Call: ``fitter(batch: PersonBatch) -> FitResult`` (same as :class:`SMPLify`); extras
    ``prototype`` (the regressor's prototype pick, -1 without prototypes), ``finetuned``
    (bool: the fine-tuned output was kept, see ``accept_ratio``) and, with
    ``refine``, ``depth_flip`` and ``noisy_keypoints`` (see :meth:`SMPLify.__call__`); with
    ``follow``, ``followed`` (bool: the refinement toward the keypoints was kept; there ``loss``
    is the refinement's objective, and ``iterations`` counts its steps wherever they ran).
    """

    name = "eft"
    #: People per call that the command line uses unless told otherwise (per-person weight
    #: copies grow with the batch; 128 was no faster than 64 on a 2-core CPU).
    default_batch_size = 64
    #: The same on a CUDA device (:func:`~fit3d.fitters.base.batch_size_for`): ~4.5 MiB of GPU memory
    #: per person with flip averaging (~9 GiB; H200, 2026-12-04).
    cuda_batch_size = 2048

    def __init__(self, body_model: BodyModel, regressor, steps: int = 30, lr: float = 3e-5, shape_weight: float = 1.0,
                 prior=None, prior_weight: float = 1.0, refine: bool = False, refine_schedule=None,
                 valid_fraction: float = VALID_ERROR_FRACTION, finetune: tuple[str, ...] | None = None,
                 anchor_weight: float = ANCHOR_WEIGHT, accept_ratio: float | None = ACCEPT_RATIO,
                 follow: FollowConfig | None = None) -> None:
        self.body_model = body_model
        if not isinstance(regressor, torch.nn.Module):
            raise TypeError(f"regressor must be a regressor module, not {regressor!r}: load the bundled one with "
                            "fit3d.fitters.build.load_body_regressor(body_model), or use fit3d.fitters.build.build_eft")
        if prior is not None and not isinstance(prior, torch.nn.Module):
            raise TypeError(f"prior must be a pose prior module, not {prior!r}: build one by name with "
                            "fit3d.priors.build_prior(name, body_model)")
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"steps must be a whole number >= 0 (0: the regressor's prediction), not {steps!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, not {lr!r}")
        if any(t.is_floating_point() and t.dtype != body_model.dtype for t in regressor.state_dict().values()):
            regressor = copy.deepcopy(regressor)  # a float64 model: a cast copy, the caller's network unchanged
        self.regressor = regressor.to(device=body_model.device, dtype=body_model.dtype).eval()
        self.steps, self.lr, self.shape_weight, self.anchor_weight = steps, lr, shape_weight, anchor_weight
        self.accept_ratio = accept_ratio
        self.prior, self.prior_weight = (None if prior is None else as_loss(prior, body_model.device)), prior_weight
        self.refine, self.follow = refine, follow
        self.valid_fraction = valid_fraction
        names = list(self._named_parameters())
        self.finetune = None if finetune is None else ((finetune,) if isinstance(finetune, str) else tuple(finetune))
        self._tuned = [k for k in names if self.finetune is None or _matches(k, self.finetune)]
        if not self._tuned:
            raise ValueError(f"finetune={finetune!r} matches none of the regressor's parameters ({', '.join(names)})")
        stages = list(refine_schedule) if refine_schedule is not None else eft_refinement_stages()
        self._refiner = SMPLify(body_model, prior=prior, schedule=stages, yaws=(0.0,)) if refine else None
        self.schedule = stages if refine else None
        #: Values of this fitter's ``FitResult.extras`` for people that were not fitted.
        self.extra_defaults = dict(EXTRA_DEFAULTS)
        if refine:
            self.extra_defaults.update(depth_flip=np.int64(-1), noisy_keypoints=np.bool_(False))
        if follow is not None:
            self.extra_defaults.update(FOLLOW_DEFAULTS)

    def settings(self) -> dict:
        """What decides this EFT's fits, JSON-able (:mod:`fit3d.fitters.describe`): the regressor
        (kind, e.g. ``FlipAveraged``, and its weights' fingerprint), steps, rate, loss weights, the
        weights fine-tuned, the per-person choice, the prior, ``follow`` and the refinement. A run
        folder fitted from Python records it (:func:`fit3d.pipeline.run`)."""
        return dict(regressor=describe_module(self.regressor), steps=self.steps, lr=self.lr,
                    shape_weight=self.shape_weight, anchor_weight=self.anchor_weight,
                    accept_ratio=self.accept_ratio, finetune=None if self.finetune is None else list(self.finetune),
                    prior=describe_module(self.prior), prior_weight=self.prior_weight,
                    follow=None if self.follow is None else asdict(self.follow),
                    refine=None if self.schedule is None else [asdict(st) for st in self.schedule],
                    valid_fraction=self.valid_fraction)

    def _named_parameters(self) -> dict[str, torch.Tensor]:
        """The regressor's parameters as it reads them per person (``fine_tuning_params`` when it has one)."""
        if hasattr(self.regressor, "fine_tuning_params"):
            return self.regressor.fine_tuning_params()
        return dict(self.regressor.named_parameters())

    def _predict(self, weights: dict, shared: dict, features: torch.Tensor,
                 prototype: torch.Tensor | None = None) -> dict:
        """The regressor's output per person: ``weights`` stacked ``(B, ...)``, ``shared`` as in the module."""
        if hasattr(self.regressor, "forward_with"):  # per-person layers (fit3d.regressors.functional)
            return self.regressor.forward_with({**shared, **weights}, features, prototype)
        if prototype is None:  # any other nn.Module regressor: one functional call per person
            def one(w, x):
                out = functional_call(self.regressor, (w, shared), (x[None],))
                return {k: v[0] for k, v in out.items()}

            return vmap(one, in_dims=(0, 0))(weights, features)

        def one_fixed(w, x, k):
            out = functional_call(self.regressor, (w, shared), (x[None], k[None]))
            return {k2: v[0] for k2, v in out.items()}

        return vmap(one_fixed, in_dims=(0, 0, 0))(weights, features, prototype)

    @torch.enable_grad()  # (called under torch.no_grad(), as inference often is: fine-tuning needs gradients)
    def __call__(self, batch: PersonBatch) -> FitResult:
        """Fine-tune one copy of the regressor per person; returns a :class:`FitResult`.

        Raises:
            ValueError: the batch is empty or its keypoint convention is not the model's
                (:meth:`~fit3d.data.batching.PersonBatch.for_model`).
            TypeError: ``batch`` is no PersonBatch (:func:`~fit3d.data.batching.batch_for`).
        """
        model = self.body_model
        batch = batch_for(batch, model)
        B = len(batch)
        feats = self.regressor.features(batch).detach()
        box = regressor_box(batch)  # (the crop the network reads the person in)
        named = self._named_parameters()
        weights = {k: named[k].detach().unsqueeze(0).repeat(B, *([1] * named[k].dim())).requires_grad_(True)
                   for k in self._tuned}
        shared = {k: v.detach() for k, v in named.items() if k not in weights}
        scale = L.person_scale(batch.keypoints_2d, batch.bbox)
        kp_weights = model.keypoint_weights()
        with torch.no_grad():
            init = self._predict(weights, shared, feats)
        init_pose, pick = init["body_pose"], init.get("prototype")
        # Adam is element-wise: one Adam over the stacked copies is B independent Adams
        # (every copy runs the same number of steps, so no per-row masking is needed).
        opt = _adam(list(weights.values()), self.lr)
        # per-person weight matrices of per-person layers get their gradient written where it is
        # kept, with no new (B, out, in) tensor per layer and step and no zeroing pass
        # (fit3d.regressors.functional); the generic path's come from autograd
        per_person = hasattr(self.regressor, "forward_with")
        in_place = [w for w in weights.values() if w.dim() == 3 and per_person]
        others = [w for w in weights.values() if not (w.dim() == 3 and per_person)]
        grads_in_place(in_place)

        def objective(out: dict):
            transl = crop_cam_to_transl(out["cam"], box, batch.focal_length, batch.principal_point)
            body = model(out["global_orient"], out["body_pose"], out["betas"], transl)
            proj = project(body.keypoints_3d, batch.focal_length, batch.principal_point)
            loss = L.reprojection(proj, batch.keypoints_2d, scale, mask=kp_weights)
            loss = loss + self.shape_weight * L.shape(out["betas"])
            loss = loss + self.anchor_weight * (out["body_pose"] - init_pose).pow(2).sum((1, 2))
            if self.prior is not None:
                loss = loss + self.prior_weight * self.prior.weight_scale * self.prior(out["body_pose"])
            return loss, out, transl, body, proj

        def evaluate():
            return objective(self._predict(weights, shared, feats, pick))

        for _ in range(self.steps):
            loss, *_ = evaluate()
            for w in others:
                w.grad = None
            with fresh_grads(in_place):
                loss.sum().backward()
            opt.step()
        with torch.no_grad():
            loss, out, transl, body, proj = evaluate()
            err = reprojection_error_px(proj, batch.keypoints_2d, kp_weights)
            finetuned = torch.full((B,), self.steps > 0, dtype=torch.bool, device=model.device)
            if self.accept_ratio is not None and self.steps > 0:
                loss0, out0, transl0, body0, proj0 = objective(init)
                err0 = reprojection_error_px(proj0, batch.keypoints_2d, kp_weights)
                finetuned = refinement_pays(err0, err, self.accept_ratio,
                                            is_valid(err0, batch.keypoints_2d, batch.bbox, self.valid_fraction))
                loss, out, transl, body, proj, err = _where(finetuned, (loss, out, transl, body, proj, err),
                                                            (loss0, out0, transl0, body0, proj0, err0))
        params = dict(global_orient=out["global_orient"], body_pose=out["body_pose"], betas=out["betas"], transl=transl)
        steps = torch.full((B,), self.steps, dtype=torch.long, device=model.device)
        picked = pick if pick is not None else torch.full((B,), -1, dtype=torch.long, device=model.device)
        extras = dict(prototype=picked, finetuned=finetuned)
        if self.follow is not None:
            followed = follow_keypoints(model, batch, params, self.follow)
            params, steps = followed.params, steps + followed.iterations  # (steps run, also where not kept)
            extras["followed"] = followed.kept
            loss = torch.where(followed.kept, followed.loss, loss)  # the refinement's objective where kept
            if bool(followed.kept.any()):  # the fields of the followed people
                with torch.no_grad():
                    body = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"])
                    proj = project(body.keypoints_3d, batch.focal_length, batch.principal_point)
                    err = reprojection_error_px(proj, batch.keypoints_2d, kp_weights)
        if self._refiner is not None:
            res = self._refiner.fit_from(batch, params)
            res.iterations = res.iterations + steps
            res.extras.update(extras)
            return res
        valid = is_valid(err, batch.keypoints_2d, batch.bbox, self.valid_fraction, params=params)
        return FitResult(**params, joints_3d=body.joints_3d, keypoints_3d=body.keypoints_3d, keypoints_2d_fit=proj,
                         reproj_error_px=err, valid=valid, loss=loss, iterations=steps,
                         convention=model.keypoint_convention, extras=extras)


def _where(mask: torch.Tensor, a, b):
    """Per person (``mask (B,)``), ``a`` where true else ``b``, through tensors, dicts, tuples and
    :class:`~fit3d.body_models.base.BodyOutput` (fields that are None stay None)."""
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)
    if isinstance(a, dict):
        return {k: _where(mask, a[k], b[k]) for k in a}
    if isinstance(a, tuple):
        return tuple(_where(mask, x, y) for x, y in zip(a, b))
    return replace(a, **{f: _where(mask, getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__})
