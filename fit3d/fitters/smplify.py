"""Batched SMPLify: a mean-pose body fitted to 2D keypoints by staged optimisation.

Follows SMPLify (Bogo et al., ECCV 2016) and SPIN's SMPLify (Kolotouros et
al., ICCV 2019) with a full-frame camera (CLIFF): GMoF reprojection weighted by
keypoint confidence, a pluggable pose prior, an elbow/knee bend prior, a shape
regulariser, and a camera stage on the torso with a depth term.

Beyond SMPLify-X's 180-degree flip test, every person is fitted from several
global-orientation hypotheses in the same batch (facing the camera, facing
away, both side views; each rolled to the 2D torso direction). After the
camera stage the ``keep_hypotheses`` best per person continue; the one with the
lowest final loss wins. Face keypoints are evidence: labelled nose/eyes mean
the face is seen, ears alone mean the back of the head is.

Everything is batched: B people x H hypotheses are one tensor pass, each with
its own Adam state and its own early stop (:class:`BatchedAdam`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from fit3d.body_models.base import BodyModel, BodyOutput
from fit3d.data.batching import PersonBatch
from fit3d.data.conventions import FACE, TORSO
from fit3d.fitters import losses as L
from fit3d.fitters.camera_init import estimate_depth, image_roll, orientation_hypotheses, root_pixel
from fit3d.fitters.optim import BatchedAdam
from fit3d.fitters.result import VALID_ERROR_FRACTION, FitResult, is_valid, reprojection_error_px
from fit3d.fitters.stages import Stage, default_smplify_schedule
from fit3d.geometry import project
from fit3d.priors import BendPrior, L2Prior, Prior

log = logging.getLogger(__name__)

#: Global-orientation hypotheses: yaw of the body about its own vertical axis, degrees.
DEFAULT_YAWS = (0.0, 90.0, 180.0, 270.0)


def face_evidence(keypoints_2d: torch.Tensor, convention) -> torch.Tensor:
    """``(B,)``: +1 when nose or an eye is labelled, -1 when only ears are, else 0."""
    names = convention.names
    vis = keypoints_2d[..., 2] > 0
    front = [names.index(n) for n in ("nose", "left_eye", "right_eye") if n in names]
    ears = [names.index(n) for n in ("left_ear", "right_ear") if n in names]
    ev = torch.zeros(keypoints_2d.shape[0], dtype=keypoints_2d.dtype, device=keypoints_2d.device)
    if not front or not ears:
        return ev
    seen_front = vis[:, front].any(1)
    seen_ear = vis[:, ears].any(1)
    ev = torch.where(seen_front, torch.ones_like(ev), ev)
    return torch.where(~seen_front & seen_ear, -torch.ones_like(ev), ev)


class SMPLify:
    """Batched, staged SMPLify with orientation hypotheses.

    Args:
        body_model: any :class:`~fit3d.body_models.base.BodyModel`.
        prior: pose prior ``(B, J, 3) -> (B,)``; default :class:`L2Prior`.
        schedule: list of :class:`Stage`; default :func:`default_smplify_schedule`.
        yaws: orientation hypotheses (degrees about the body's vertical axis).
        keep_hypotheses: how many hypotheses per person go on after the first stage.
        valid_fraction: validity threshold, see :data:`VALID_ERROR_FRACTION`.
        pose_space: ``"axis_angle"`` (optimise ``body_pose``) or ``"latent"`` (optimise a
            VAE prior's latent ``z``, ``body_pose = prior.decode(z)``, prior cost ``|z|^2``,
            as SMPLify-X does with VPoser).
    Raises:
        ValueError: no hypotheses, or ``pose_space="latent"`` with a prior that cannot decode.

    Call: ``fitter(batch: PersonBatch) -> FitResult`` (B people).
    """

    name = "smplify"
    #: Values of this fitter's ``FitResult.extras`` for people that were not fitted.
    extra_defaults = {"hypothesis_yaw": np.float32(np.nan), "init_method": np.str_("")}

    def __init__(
        self,
        body_model: BodyModel,
        prior: Prior | None = None,
        schedule: list[Stage] | None = None,
        yaws: tuple[float, ...] = DEFAULT_YAWS,
        keep_hypotheses: int = 2,
        valid_fraction: float = VALID_ERROR_FRACTION,
        pose_space: str = "axis_angle",
    ) -> None:
        self.body_model = body_model
        self.prior = (prior or L2Prior()).to(body_model.device).eval()
        if pose_space not in ("axis_angle", "latent"):
            raise ValueError(f"pose_space must be 'axis_angle' or 'latent', not {pose_space!r}")
        self.latent = pose_space == "latent"
        if self.latent and not hasattr(self.prior, "decode"):
            raise ValueError(f"pose_space='latent' needs a prior with decode() (vae), not {self.prior.name}")
        try:
            self.bend: Prior | None = BendPrior(body_model).to(body_model.device)
        except ValueError:
            self.bend = None
        self.schedule = list(schedule) if schedule is not None else default_smplify_schedule()
        if not yaws:
            raise ValueError("need at least one orientation hypothesis")
        self.yaws = tuple(yaws)
        self.keep = max(1, min(keep_hypotheses, len(self.yaws)))
        self.valid_fraction = valid_fraction
        conv = body_model.keypoint_convention
        self.torso_mask = torch.tensor([n in TORSO or n in FACE for n in conv.names], device=body_model.device)
        self._face_idx = None
        if all(n in conv.names for n in ("nose", "left_ear", "right_ear")):
            self._face_idx = (conv.index("nose"), (conv.index("left_ear"), conv.index("right_ear")))
        with torch.no_grad():
            p = body_model.neutral_params(1)
            rest = body_model.canonical(p["body_pose"], p["betas"])
        self.rest_root = rest.joints_3d[0, 0]
        self.rest_keypoints = rest.keypoints_3d[0]
        self.standing_height = float(rest.keypoints_3d[0, :, 1].max() - rest.keypoints_3d[0, :, 1].min()) + 0.1

    # ----------------------------------------------------------------- pieces
    def initial_params(self, batch: PersonBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Parameters for every person x hypothesis, rows person-major ``(B*H, ...)``.

        Returns:
            ``(params, init_depth (B*H,), init_method (B,))``.
        """
        model, conv = self.body_model, batch.convention
        B, H = len(batch), len(self.yaws)
        z, method = estimate_depth(
            batch.keypoints_2d, batch.bbox, batch.focal_length, conv, self.rest_keypoints, self.standing_height
        )
        uv = root_pixel(batch.keypoints_2d, batch.bbox, conv)
        xy = (uv - batch.principal_point) / batch.focal_length * z[:, None]
        root = torch.cat([xy, z[:, None]], -1)
        orient = orientation_hypotheses(image_roll(batch.keypoints_2d, conv), self.yaws)
        p = model.neutral_params(B * H, device=batch.keypoints_2d.device)
        p["global_orient"] = orient.reshape(B * H, 3)
        p["transl"] = (root - self.rest_root).repeat_interleave(H, 0)
        if self.latent:
            p["latent"] = torch.zeros(B * H, self.prior.latent_dim, device=p["transl"].device)
            with torch.no_grad():
                p["body_pose"] = self.prior.decode(p["latent"])
        return p, z.repeat_interleave(H, 0), method

    def losses(
        self, stage: Stage, body: BodyOutput, params: dict[str, torch.Tensor], batch: PersonBatch, ctx: dict
    ) -> torch.Tensor:
        """``(B,)`` weighted sum of the stage's loss terms."""
        w = stage.weights
        proj = project(body.keypoints_3d, batch.focal_length, batch.principal_point)
        mask = self.torso_mask if stage.keypoints == "torso" else None
        total = w.get("reprojection", 0.0) * L.reprojection(proj, batch.keypoints_2d, ctx["scale"], mask=mask)
        if w.get("pose_prior"):
            if self.latent:
                cost = getattr(self.prior, "latent_weight_scale", 1.0) * params["latent"].pow(2).sum(-1)
            else:
                cost = self.prior.weight_scale * self.prior(params["body_pose"])
            total = total + w["pose_prior"] * cost
        if w.get("bend") and self.bend is not None:
            total = total + w["bend"] * self.bend(params["body_pose"])
        if w.get("shape"):
            total = total + w["shape"] * L.shape(params["betas"])
        if w.get("depth"):
            total = total + w["depth"] * L.depth(body.joints_3d[:, 0, 2], ctx["init_depth"])
        if w.get("upright"):
            total = total + w["upright"] * L.upright(params["global_orient"])
        if w.get("face") and self._face_idx is not None:
            nose, ears = self._face_idx
            total = total + w["face"] * L.face_orientation(body.keypoints_3d, ctx["evidence"], nose, ears)
        return total

    def run_stage(
        self, stage: Stage, params: dict[str, torch.Tensor], batch: PersonBatch, ctx: dict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Optimise ``params`` in place for one stage.

        Returns:
            ``(final loss (B,), steps taken (B,))``.
        """
        model = self.body_model
        names = ["latent" if self.latent and n == "body_pose" else n for n in stage.params]
        moving = [params[n] for n in names]
        for t in params.values():
            t.requires_grad_(False)
        for t in moving:
            t.requires_grad_(True)
        n = len(batch)
        steps = torch.zeros(n, dtype=torch.long, device=batch.keypoints_2d.device)
        canon = None
        if not stage.moves_body:
            with torch.no_grad():
                canon = model.canonical(params["body_pose"], params["betas"])

        def evaluate():
            if self.latent and canon is None:
                params["body_pose"] = self.prior.decode(params["latent"])
            if canon is None:
                body = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"])
            else:
                body = model.place(canon, params["global_orient"], params["transl"])
            return self.losses(stage, body, params, batch, ctx)

        if stage.iterations == 0 or not moving:
            with torch.no_grad():
                return evaluate(), steps
        opt = BatchedAdam(moving, lr=stage.lr)
        active = torch.ones(n, dtype=torch.bool, device=steps.device)
        stall = torch.zeros(n, dtype=torch.long, device=steps.device)
        prev = None
        for _ in range(stage.iterations):
            loss = evaluate()
            loss.sum().backward()
            opt.step(active)
            steps += active.long()
            cur = loss.detach()
            if prev is not None:
                rel = (prev - cur).abs() / cur.abs().clamp(min=1e-8)
                stall = torch.where(rel < stage.tolerance, stall + 1, torch.zeros_like(stall))
                active &= stall < stage.patience
            prev = cur
            if not bool(active.any()):
                break
        for t in moving:
            t.requires_grad_(False)
        with torch.no_grad():
            final = evaluate()
        if self.latent:
            params["body_pose"] = params["body_pose"].detach()
        return final, steps

    # ----------------------------------------------------------------- call
    def __call__(self, batch: PersonBatch) -> FitResult:
        """Fit B people. Returns a :class:`FitResult` on the model's device.

        Raises:
            ValueError: the batch's keypoint convention is not the model's.
        """
        model = self.body_model
        if batch.convention != model.keypoint_convention:
            raise ValueError(
                f"batch keypoints are in {batch.convention.name!r}, the model needs "
                f"{model.keypoint_convention.name!r}: build the batch with the model's convention"
            )
        batch = batch.to(model.device)
        B, H = len(batch), len(self.yaws)
        params, init_depth, method = self.initial_params(batch)
        hyp = torch.arange(H, device=model.device).repeat(B)
        owner = torch.arange(B, device=model.device).repeat_interleave(H)
        sub = batch.repeat_interleave(H)
        ctx = dict(
            scale=L.person_scale(sub.keypoints_2d, sub.bbox),
            init_depth=init_depth,
            evidence=face_evidence(sub.keypoints_2d, sub.convention),
        )
        steps = torch.zeros(B * H, dtype=torch.long, device=model.device)
        loss = None
        for i, stage in enumerate(self.schedule):
            loss, s = self.run_stage(stage, params, sub, ctx)
            steps += s
            if i == 0 and self.keep < H:
                keep = loss.view(B, H).topk(self.keep, dim=1, largest=False).indices
                rows = (keep + torch.arange(B, device=keep.device)[:, None] * H).reshape(-1)
                params = {k: v[rows].detach().clone() for k, v in params.items()}
                sub = sub.index(rows)
                ctx = {k: v[rows] for k, v in ctx.items()}
                hyp, owner, steps, loss = hyp[rows], owner[rows], steps[rows], loss[rows]
        Hk = len(owner) // B
        best = loss.view(B, Hk).argmin(1) + torch.arange(B, device=loss.device) * Hk
        final = {k: v[best].detach() for k, v in params.items() if k != "latent"}
        fb = batch  # one row per person
        with torch.no_grad():
            body = model(final["global_orient"], final["body_pose"], final["betas"], final["transl"])
            proj = project(body.keypoints_3d, fb.focal_length, fb.principal_point)
        err = reprojection_error_px(proj, fb.keypoints_2d)
        valid = is_valid(err, fb.keypoints_2d, fb.bbox, self.valid_fraction, params=final)
        return FitResult(
            **final,
            joints_3d=body.joints_3d,
            keypoints_3d=body.keypoints_3d,
            keypoints_2d_fit=proj,
            reproj_error_px=err,
            valid=valid,
            loss=loss[best],
            iterations=steps[best],
            convention=model.keypoint_convention,
            extras=dict(hypothesis_yaw=torch.tensor(self.yaws, device=loss.device)[hyp[best]], init_method=method),
        )
