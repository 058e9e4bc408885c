"""Batched SMPLify: a mean-pose body fitted to 2D keypoints by staged optimisation.

Follows SMPLify (Bogo et al., ECCV 2016) and SPIN's SMPLify (Kolotouros et
al., ICCV 2019) with a full-frame camera (CLIFF): GMoF reprojection weighted by
keypoint confidence, a pluggable pose prior, an elbow/knee bend prior, a shape
regulariser, and a camera stage on the torso with a depth term.

Beyond SMPLify-X's 180-degree flip test, every person is fitted from several
starting points in the same batch:

* global-orientation hypotheses (facing the camera, facing away, both side views;
  each rolled to the 2D torso direction), each from the rest pose and from every
  prototype of a pose memory (PM-Net, :mod:`fit3d.priors.prototypes`). After the
  camera stage the ``keep_hypotheses`` best rest-pose rows (by the torso fit) and
  the ``prototype_starts`` best prototype rows (by the next stage's loss on every
  keypoint) go on;
* after the first stage that moves the body, the best row's limbs flipped in depth
  one at a time (:func:`fit3d.fitters.hypotheses.limb_depth_flips`: the same 2D
  projection, the other depth) are added as rows.

The row with the lowest final loss wins. Face keypoints are evidence: labelled
nose/eyes mean the face is seen, ears alone mean the back of the head is.

Everything is batched: all rows of all people are one tensor pass, each with its
own Adam state and its own early stop (:class:`BatchedAdam`), except the shape: a
person's rows share one (each stage's body model call takes one shape per person,
``rows_per_shape``), optimised with the mean of its rows' gradients and its own Adam state.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace

import numpy as np
import torch

from fit3d.body_models.base import BodyModel, BodyOutput
from fit3d.data.batching import PersonBatch, batch_for
from fit3d.data.conventions import FACE, TORSO, KeypointConvention
import fit3d.fitters.losses as L
from fit3d.fitters.camera_init import estimate_depth, image_roll, orientation_hypotheses, root_pixel
from fit3d.fitters.describe import describe_module, fingerprint
from fit3d.fitters.hypotheses import kinematic_parents, limb_depth_flips
from fit3d.optim import BatchedAdam
from fit3d.fitters.result import VALID_ERROR_FRACTION, FitResult, is_valid, reprojection_error_px
from fit3d.fitters.stages import Stage, default_smplify_schedule
from fit3d.geometry import project
from fit3d.priors import BendPrior, L2Prior, Prior
from fit3d.priors.base import as_loss

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


def _face_indices(convention, device) -> torch.Tensor | None:
    """``(3,)`` positions of nose, left and right ear in ``convention``, None when one is missing."""
    if not all(n in convention.names for n in ("nose", "left_ear", "right_ear")):
        return None
    return torch.tensor(convention.indices(("nose", "left_ear", "right_ear")), device=device)


def _best_rows(loss: torch.Tensor, B: int, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Index of each person's lowest-``loss`` row (among ``allowed`` rows when given; a row whose
    loss is not finite, a diverged row, is never lower than a finite one: ``argmin`` takes NaN as
    the minimum, and -inf is); rows are person-major with the same number per person."""
    loss = torch.where(torch.isfinite(loss), loss, torch.full_like(loss, torch.finfo(loss.dtype).max))
    if allowed is not None:  # (a diverged allowed row still beats every row not allowed)
        loss = torch.where(allowed, loss, torch.full_like(loss, torch.inf))
    per = len(loss) // B
    return loss.view(B, per).argmin(1) + torch.arange(B, device=loss.device) * per


def _people_of_rows(owner: torch.Tensor | None, betas: torch.Tensor) -> int | None:
    """The number of people when the rows are person-major, the same number per person, and
    each person's rows have one shape (``betas (N, S)``, ``owner (N,)``); else None (one row,
    one shape)."""
    if owner is None or len(owner) == 0:
        return None
    people = int(owner[-1]) + 1
    if len(owner) % people:
        return None
    G = len(owner) // people
    ok = torch.equal(owner, torch.arange(people, device=owner.device).repeat_interleave(G))
    return people if ok and torch.equal(betas, betas[::G].repeat_interleave(G, 0)) else None


def _take(rows: torch.Tensor, params: dict, sub: PersonBatch, ctx: dict, tags: dict) -> tuple[dict, PersonBatch,
                                                                                               dict, dict]:
    """The given rows of every per-row state (parameters detached and copied)."""
    return ({k: v[rows].detach().clone() for k, v in params.items()}, sub.index(rows),
            {k: v[rows] for k, v in ctx.items()}, {k: v[rows] for k, v in tags.items()})


class SMPLify:
    """Batched, staged SMPLify with orientation hypotheses.

    Args:
        body_model: any :class:`~fit3d.body_models.base.BodyModel`.
        prior: pose prior ``(B, J, 3) -> (B,)``; default :class:`L2Prior`.
        schedule: list of :class:`Stage`; default :func:`default_smplify_schedule`.
        yaws: orientation hypotheses (degrees about the body's vertical axis).
        keep_hypotheses: how many hypotheses per person go on after the first stage (>= 1; at
            most ``len(yaws)`` are kept).
        valid_fraction: validity threshold, see :data:`VALID_ERROR_FRACTION`.
        pose_space: ``"axis_angle"`` (optimise ``body_pose``) or ``"latent"`` (optimise a
            VAE prior's latent ``z``, ``body_pose = prior.decode(z)``, prior cost ``|z|^2``,
            as SMPLify-X does with VPoser).
        prototypes: a :class:`~fit3d.priors.prototypes.PoseMemory` whose prototypes are
            extra starting poses (None: the rest pose only).
        prototype_starts: prototype rows per person kept after the camera stage (3: on the
            validation subjects' benchmarks better than 2 on all 12 files over three k-means
            memories, -1.2 mm PA-MPJPE-12 on their mean, and as good as 4 at half its cost;
            ``docs/experiments.md``, thirty-fifth session).
        depth_flips: add the limb depth-flip rows after the first body stage (not with
            ``pose_space="latent"``: a flipped pose, encoded, decodes to another pose).
        noise_threshold: RMS reprojection residual (nominal pixels, see
            :mod:`fit3d.fitters.losses`) of the clean branch's best fit above which a
            person's keypoints count as noisy (see :class:`Stage` ``branch``).
    Raises:
        ValueError: an empty schedule, no hypotheses, ``keep_hypotheses`` < 1, ``pose_space="latent"`` with a prior that cannot decode,
            or prototypes of another joint count.
        TypeError: ``prior`` is not a module (e.g. a name: use :func:`fit3d.priors.build_prior`).

    :func:`fit3d.fitters.build.build_smplify` builds what the command line runs (the GMM prior
    and the bundled prototype memory); these defaults are plainer (L2 prior, no prototypes).

    Call: ``fitter(batch: PersonBatch) -> FitResult`` (B people).
    """

    name = "smplify"
    #: People per call that the command line uses unless told otherwise: SMPLify's many small
    #: tensor operations per iteration pay off over more rows (on a 2-core CPU, 500 people:
    #: 10.4 fits/s at 64, 12.8 at 256, 12.0 at 512; benchmarks/bench_process.py).
    default_batch_size = 256
    #: The same on a CUDA device (:func:`~fit3d.fitters.base.batch_size_for`): the default prior and
    #: prototypes grew the CPU's peak memory by ~1.1 MiB per person, so 4,096 people take at most ~4.5 GiB
    #: (the plain L2 SMPLify peaked at 0.17 MiB per person on an H200).
    cuda_batch_size = 4096
    #: Values of this fitter's ``FitResult.extras`` for people that were not fitted.
    extra_defaults = {"hypothesis_yaw": np.float32(np.nan), "init_method": np.str_(""), "prototype": np.int64(-1),
                      "depth_flip": np.int64(-1), "noisy_keypoints": np.bool_(False)}

    def __init__(
        self,
        body_model: BodyModel,
        prior: Prior | None = None,
        schedule: list[Stage] | None = None,
        yaws: tuple[float, ...] = DEFAULT_YAWS,
        keep_hypotheses: int = 2,
        valid_fraction: float = VALID_ERROR_FRACTION,
        pose_space: str = "axis_angle",
        prototypes=None,
        prototype_starts: int = 3,
        depth_flips: bool = True,
        noise_threshold: float = 1.4,
    ) -> None:
        self.body_model = body_model
        if prior is not None and not isinstance(prior, torch.nn.Module):
            raise TypeError(f"prior must be a pose prior module, not {prior!r}: build one by name with "
                            "fit3d.priors.build_prior(name, body_model), or use fit3d.fitters.build.build_smplify")
        self.prior = as_loss(prior or L2Prior(), body_model.device)
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
        if not self.schedule:
            raise ValueError("SMPLify needs a schedule of at least one stage")
        if not yaws:
            raise ValueError("need at least one orientation hypothesis")
        self.yaws = tuple(yaws)
        if keep_hypotheses < 1:  # (it was clamped to 1 in silence)
            raise ValueError(f"keep_hypotheses must be at least 1, not {keep_hypotheses}")
        self.keep = min(keep_hypotheses, len(self.yaws))
        self.valid_fraction = valid_fraction
        conv = body_model.keypoint_convention
        self.torso_mask = torch.tensor([n in TORSO or n in FACE for n in conv.names], device=body_model.device)
        self.keypoint_weights = body_model.keypoint_weights()  # 0 for points the model does not have (hips)
        self._face_idx = _face_indices(conv, body_model.device)
        # The torso stage's rows see only the torso and face keypoints (see run_stage).
        self._torso_points = torch.nonzero(self.torso_mask).squeeze(1)
        self._torso_convention = KeypointConvention(f"{conv.name}/torso",
                                                    tuple(conv.names[i] for i in self._torso_points.tolist()))
        self._torso_face_idx = _face_indices(self._torso_convention, body_model.device)
        with torch.no_grad():
            p = body_model.neutral_params(1)
            rest = body_model.canonical(p["body_pose"], p["betas"])
        self.rest_root = rest.joints_3d[0, 0]
        self.rest_keypoints = rest.keypoints_3d[0]
        self.prototypes = None
        if prototypes is not None and len(prototypes) > 0:
            if prototypes.num_joints != body_model.num_body_joints:
                raise ValueError(f"prototypes have {prototypes.num_joints} joints, the model {body_model.num_body_joints}")
            self.prototypes = prototypes.to(body_model.device)
        self.prototype_starts = max(0, prototype_starts)
        # (in the latent pose space a flipped pose, encoded, decodes to another pose: no flip; found by a review)
        self.depth_flips = depth_flips and not self.latent
        self.noise_threshold = noise_threshold
        self.parents = kinematic_parents(body_model) if self.depth_flips else None
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
        self, stage: Stage, body: BodyOutput, params: dict[str, torch.Tensor], batch: PersonBatch, ctx: dict,
        torso_only: bool = False,
    ) -> torch.Tensor:
        """``(B,)`` weighted sum of the stage's loss terms.

        ``torso_only``: ``body`` and ``batch`` hold only the torso and face keypoints
        (:meth:`_torso_view`), so every keypoint counts.
        """
        w = stage.weights
        proj = project(body.keypoints_3d, batch.focal_length, batch.principal_point)
        if torso_only:
            mask, face_idx = None, self._torso_face_idx
        else:
            mask = self.torso_mask if stage.keypoints == "torso" else self.keypoint_weights
            face_idx = self._face_idx
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
        if w.get("face") and face_idx is not None:  # the three points gathered once: one cheap backward
            face = body.keypoints_3d.index_select(1, face_idx)
            total = total + w["face"] * L.face_orientation(face, ctx["evidence"], 0, (1, 2))
        return total

    def run_stage(
        self, stage: Stage, params: dict[str, torch.Tensor], batch: PersonBatch, ctx: dict,
        canon: BodyOutput | None = None, owner: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Optimise ``params`` for one stage (the dict's tensors are updated or replaced).

        Args:
            canon: the canonical bodies of ``params`` (a stage that does not move the
                body reuses them; computed here when None).
            owner: ``(N,)`` each row's person, for the stage's ``keep_rows`` and the shared
                shape (None: every row is its own person, so nothing is dropped and each row
                has its own shape). When the rows are person-major with as many per person
                and each person's rows start from one shape (:func:`_people_of_rows`), a
                person's rows share one shape throughout the stage (frozen and stopped rows
                included: the person's final shape is theirs), moved by the mean of its
                rows' gradients; a person whose shape gradient is not finite (a diverged
                row) keeps its shape at that step, and the diverged row stops and goes back to
                its values at the stage's start, so the person's shape moves on from the next
                step (one diverged row does not spoil the person's other rows; a row already
                non-finite when the stage begins, which only a caller's parameters can be, holds
                its person's shape for the whole stage). Otherwise every row has its own shape.
        Returns:
            ``(final loss (B,), steps taken (B,))``.
        """
        model = self.body_model
        names = ["latent" if self.latent and n == "body_pose" else n for n in stage.params]
        for t in params.values():
            t.requires_grad_(False)
        n = len(batch)
        steps = torch.zeros(n, dtype=torch.long, device=batch.keypoints_2d.device)
        if stage.moves_body:
            canon = None
        elif canon is None:
            with torch.no_grad():
                canon = model.canonical(params["body_pose"], params["betas"])
        torso_only = canon is not None and stage.keypoints == "torso"
        if torso_only:
            canon, batch = self._torso_view(canon, batch)
        # A person's rows share one shape (they differ in orientation and pose): it is optimised,
        # and its rest skeleton computed, once per person.
        people = _people_of_rows(owner, params["betas"]) if canon is None else None
        shape = None if people is None else params["betas"][::n // people].clone()
        shape_moves = shape is not None and "betas" in names
        if shape_moves:
            names.remove("betas")

        def evaluate(p, b, c, cn):
            if self.latent and cn is None:
                p["body_pose"] = self.prior.decode(p["latent"])
            if cn is None and shape is not None:
                G = len(p["body_pose"]) // len(shape)
                p["betas"] = shape.repeat_interleave(G, 0) if shape_moves else p["betas"]  # (for the shape term)
                body = model(p["global_orient"], p["body_pose"], shape, p["transl"], rows_per_shape=G)
            elif cn is None:
                body = model(p["global_orient"], p["body_pose"], p["betas"], p["transl"])
            else:
                body = model.place(cn, p["global_orient"], p["transl"])
            return self.losses(stage, body, p, b, c, torso_only)

        if stage.iterations == 0 or not (names or shape_moves):
            with torch.no_grad():
                return evaluate(params, batch, ctx, canon), steps
        rows = None  # the rows still optimising (None: all)
        p, b, c, cn = params, batch, ctx, canon
        for t in (p[k] for k in names):
            t.requires_grad_(True)
        opt = BatchedAdam([p[k] for k in names], lr=stage.lr) if names else None
        if shape_moves:
            shape.requires_grad_(True)
            shape_opt = BatchedAdam([shape], lr=stage.lr)
        active = torch.ones(n, dtype=torch.bool, device=steps.device)
        stall = torch.zeros(n, dtype=torch.long, device=steps.device)
        prev = None
        begun = {k: p[k].detach().clone() for k in names}  # where a row that diverges goes back to
        for it in range(stage.iterations):
            loss = evaluate(p, b, c, cn)
            if stage.keep_rows and owner is not None and it == stage.keep_after and rows is None:
                rows = self._lowest_rows(loss.detach(), stage.keep_rows, owner)
                if rows is not None:  # go on with those rows only
                    params.update({k: v.detach() for k, v in p.items()})
                    p = {k: v[rows].clone() for k, v in params.items()}
                    b, c = batch.index(rows), {k: v[rows] for k, v in ctx.items()}
                    cn = None if canon is None else BodyOutput(None, canon.joints_3d[rows], canon.keypoints_3d[rows])
                    for k in names:
                        p[k].requires_grad_(True)
                    opt = opt.subset([p[k] for k in names], rows) if opt is not None else None
                    active, stall = active[rows], stall[rows]
                    prev = None if prev is None else prev[rows]
                    begun = {k: v[rows] for k, v in begun.items()}
                    loss = evaluate(p, b, c, cn)
            cur = loss.detach()
            diverged = ~torch.isfinite(cur)  # stops, and goes back to where the stage began (below)
            active &= ~diverged
            loss.sum().backward()
            if opt is not None:
                opt.step(active)
            if shape_moves:  # a person's shape moves while any of its rows does, by their mean gradient
                shape.grad /= len(p["body_pose"]) // len(shape)
                finite = torch.isfinite(shape.grad).all(1)  # (a diverged row: the person's shape stays)
                shape_opt.step(active.view(len(shape), -1).any(1) & finite)
            with torch.no_grad():  # a diverged row: its stage's starting values, finite again, so that the
                for k in names:  # person's shared shape moves on from the next step (no sync: a where)
                    p[k].copy_(torch.where(diverged.view(-1, *([1] * (p[k].dim() - 1))), begun[k], p[k]))
            if rows is None:
                steps += active.long()
            else:
                steps.index_add_(0, rows, active.long())
            if prev is not None:
                rel = (prev - cur).abs() / cur.abs().clamp(min=1e-8)
                stall = torch.where(rel < stage.tolerance, stall + 1, torch.zeros_like(stall))
                active &= stall < stage.patience
            prev = cur
            if not bool(active.any()):
                break
        if rows is not None:  # the optimised rows back among the frozen ones
            for k, v in p.items():
                params[k] = params[k].index_copy(0, rows, v.detach())
        if shape_moves:  # (the frozen rows too: a person has one shape)
            params["betas"] = shape.detach().repeat_interleave(n // len(shape), 0)
        if self.latent:  # decoded from the latent with its graph: not a leaf
            params["body_pose"] = params["body_pose"].detach()
        for t in params.values():
            t.requires_grad_(False)
        with torch.no_grad():
            final = evaluate(params, batch, ctx, canon)
        return final, steps

    @staticmethod
    def _lowest_rows(loss: torch.Tensor, keep: int, owner: torch.Tensor) -> torch.Tensor | None:
        """Sorted indices of each person's ``keep`` lowest-``loss`` rows (``owner (N,)``: each
        row's person, 0..B-1); None when that is every row."""
        order = torch.argsort(loss, stable=True)
        order = order[torch.argsort(owner[order], stable=True)]  # by person, then by loss
        counts = torch.bincount(owner)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(loss), device=loss.device) - first[owner[order]]
        kept = order[rank < keep]
        return None if len(kept) == len(loss) else kept.sort().values

    def _torso_view(self, canon: BodyOutput, batch: PersonBatch) -> tuple[BodyOutput, PersonBatch]:
        """Canonical bodies and keypoints reduced to what a torso stage that does not move the
        body reads: the torso and face keypoints and the root joint (the pivot and the depth
        term). The camera stage has the most rows (every hypothesis x start), so moving only
        these points (10 for anny instead of 20 joints and 23 keypoints) and projecting 9
        instead of 23 matters; the losses are the same (tested)."""
        idx = self._torso_points
        body = BodyOutput(None, canon.joints_3d[:, :1], canon.keypoints_3d.index_select(1, idx))
        return body, replace(batch, keypoints_2d=batch.keypoints_2d.index_select(1, idx),
                             convention=self._torso_convention)

    # ----------------------------------------------------------------- rows
    def _starting_rows(self, batch: PersonBatch) -> tuple[dict, PersonBatch, dict, dict, torch.Tensor, BodyOutput]:
        """Every person x orientation hypothesis x starting pose (rest, then prototypes).

        Returns:
            ``(params, sub, ctx, tags, init_method (B,), canonical bodies of the rows)``;
            ``tags`` holds per-row ``owner``, ``yaw``, ``start`` (0 rest, k prototype k-1),
            ``flip`` (-1) and ``steps``.
        """
        B, H = len(batch), len(self.yaws)
        params, init_depth, method = self.initial_params(batch)
        dev = batch.keypoints_2d.device
        starts = torch.zeros(1, self.body_model.num_body_joints, 3, device=dev)
        if self.prototypes is not None:
            starts = torch.cat([starts, self.prototypes.prototypes.to(dev)])
        S = len(starts)
        latents = None
        if self.latent:  # the starts as the latent space holds them: the camera stage poses what the body stages move
            with torch.no_grad():
                latents = self.prior.encode(starts)[0] if S > 1 else params["latent"][:1]
                starts = self.prior.decode(latents)
        with torch.no_grad():
            canon = self.body_model.canonical(starts, torch.zeros(S, self.body_model.num_betas, device=dev))
        rows = B * H * S
        params = {k: v.repeat_interleave(S, 0) for k, v in params.items()}
        params["body_pose"] = starts.repeat(B * H, 1, 1)
        if latents is not None:
            params["latent"] = latents.repeat(B * H, 1)
        sub = batch.repeat_interleave(H * S)
        ctx = dict(scale=L.person_scale(sub.keypoints_2d, sub.bbox), init_depth=init_depth.repeat_interleave(S, 0),
                   evidence=face_evidence(sub.keypoints_2d, sub.convention))
        ar = torch.arange(rows, device=dev)
        tags = dict(owner=ar // (H * S), yaw=(ar // S) % H, start=ar % S, flip=torch.full((rows,), -1, device=dev),
                    steps=torch.zeros(rows, dtype=torch.long, device=dev))
        idx = ar % S
        canon_rows = BodyOutput(None, canon.joints_3d[idx], canon.keypoints_3d[idx])
        return params, sub, ctx, tags, method, canon_rows

    def _keep_after_camera(self, loss: torch.Tensor, params: dict, sub: PersonBatch, ctx: dict, tags: dict,
                           canon: BodyOutput) -> torch.Tensor:
        """Row indices that go on: per person the ``keep`` best rest-pose rows by the camera
        loss and the ``prototype_starts`` best prototype rows by the next body stage's loss."""
        B = int(tags["owner"].max()) + 1
        per = len(loss) // B
        big = torch.finfo(loss.dtype).max
        rest = tags["start"] == 0
        keep = [torch.where(rest, loss, torch.full_like(loss, big)).view(B, per)
                .topk(min(self.keep, int(rest.sum()) // B), dim=1, largest=False).indices]
        if self.prototype_starts and bool((~rest).any()):
            nxt = next((st for st in self.schedule[1:] if st.moves_body), self.schedule[0])
            with torch.no_grad():
                body = self.body_model.place(canon, params["global_orient"], params["transl"])
                score = self.losses(nxt, body, params, sub, ctx)
            score = torch.where(rest, torch.full_like(score, big), score).view(B, per)
            keep.append(score.topk(min(self.prototype_starts, int((~rest).sum()) // B), dim=1, largest=False).indices)
        keep = torch.cat(keep, 1)
        return (keep + torch.arange(B, device=keep.device)[:, None] * per).reshape(-1)

    def _with_flip_rows(self, loss: torch.Tensor, params: dict, sub: PersonBatch, ctx: dict,
                        tags: dict) -> tuple[dict, PersonBatch, dict, dict, torch.Tensor]:
        """Append, per person, its best row with each limb flipped in depth (:data:`FLIP_NAMES`)."""
        B = int(tags["owner"].max()) + 1
        per = len(loss) // B
        best = _best_rows(loss, B)
        bp = {k: v[best] for k, v in params.items()}
        with torch.no_grad():
            body = self.body_model(bp["global_orient"], bp["body_pose"], bp["betas"], bp["transl"])
            alts = limb_depth_flips(bp["body_pose"], bp["global_orient"], body.joints_3d,
                                    list(self.body_model.joint_names), self.parents)  # (A, B, J, 3)
        A = len(alts)
        new = {k: v.unsqueeze(1).expand(B, A, *v.shape[1:]).reshape(B * A, *v.shape[1:]) for k, v in bp.items()}
        new["body_pose"] = alts.transpose(0, 1).reshape(B * A, *alts.shape[2:])
        if self.latent:
            with torch.no_grad():
                new["latent"] = self.prior.encode(new["body_pose"])[0]
        src = best.repeat_interleave(A)
        order = torch.cat([torch.arange(B * per, device=loss.device).view(B, per),
                           B * per + torch.arange(B * A, device=loss.device).view(B, A)], 1).reshape(-1)
        params = {k: torch.cat([params[k], new[k]])[order].detach().clone() for k in params}
        rows = torch.cat([torch.arange(B * per, device=loss.device), src])[order]
        sub = sub.index(rows)
        ctx = {k: v[rows] for k, v in ctx.items()}
        flip_id = torch.arange(A, device=loss.device).repeat(B)
        tags = {k: v[rows] for k, v in tags.items()}
        tags["flip"] = torch.cat([torch.full((B * per,), -1, device=loss.device), flip_id])[order]
        loss = torch.cat([loss, loss[src]])[order]
        return params, sub, ctx, tags, loss

    def _with_noisy_branch(self, loss: torch.Tensor, params: dict, sub: PersonBatch, ctx: dict,
                           tags: dict) -> tuple[dict, PersonBatch, dict, dict, torch.Tensor]:
        """Append a copy of each person's best row (by ``loss``; without a loss yet, its
        unflipped row) as its noisy-branch row (``tags["branch"] == 1``)."""
        if loss is None:
            loss = (tags["flip"] >= 0).float()
        B = int(tags["owner"].max()) + 1
        per = len(loss) // B
        dev = loss.device
        best = _best_rows(loss, B)
        order = torch.cat([torch.arange(B * per, device=dev).view(B, per), B * per + torch.arange(B, device=dev)[:, None]],
                          1).reshape(-1)
        rows = torch.cat([torch.arange(B * per, device=dev), best])[order]
        params, sub, ctx, tags = _take(rows, params, sub, ctx, tags)
        tags["branch"] = torch.cat([torch.zeros(B * per, dtype=torch.long, device=dev),
                                    torch.ones(B, dtype=torch.long, device=dev)])[order]
        return params, sub, ctx, tags, loss[rows]

    def _pick(self, loss: torch.Tensor, params: dict, sub: PersonBatch, ctx: dict, tags: dict,
              B: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each person's final row: the lowest loss of the clean branch (all rows when the
        schedule has no branches), or of the noisy branch when the clean fit's RMS residual
        exceeds :attr:`noise_threshold`. Returns ``(row index (B,), noisy (B,) bool)``."""
        branch = tags["branch"]
        clean = _best_rows(loss, B, branch == 0)
        noisy = torch.zeros(B, dtype=torch.bool, device=loss.device)
        if not bool((branch == 1).any()):
            return clean, noisy
        p = {k: params[k][clean] for k in ("global_orient", "body_pose", "betas", "transl")}
        with torch.no_grad():
            body = self.body_model(p["global_orient"], p["body_pose"], p["betas"], p["transl"])
            s = sub.index(clean)
            r = L.rms_residual(project(body.keypoints_3d, s.focal_length, s.principal_point), s.keypoints_2d,
                               ctx["scale"][clean], mask=self.keypoint_weights)  # (the points the fit fits)
        noisy = ~(r <= self.noise_threshold)  # (a clean branch that diverged, NaN: the noisy branch's row)
        return torch.where(noisy, _best_rows(loss, B, branch == 1), clean), noisy

    # ----------------------------------------------------------------- call
    @torch.enable_grad()  # (called under torch.no_grad(), as inference often is: fitting needs gradients)
    def __call__(self, batch: PersonBatch) -> FitResult:
        """Fit B people. Returns a :class:`FitResult` on the model's device, with extras
        ``hypothesis_yaw`` (deg), ``init_method``, ``prototype`` (-1: the rest pose),
        ``depth_flip`` (-1: none, else an index into :data:`~fit3d.fitters.hypotheses.FLIP_NAMES`)
        and ``noisy_keypoints`` (the refinement branch for noisy keypoints won).

        Raises:
            ValueError: the batch is empty or in another keypoint convention (``PersonBatch.for_model``);
                depth flips with a schedule whose first body stage is a refinement branch.
            TypeError: ``batch`` is no PersonBatch (:func:`~fit3d.data.batching.batch_for`).
        """
        batch = self._check(batch)
        first = next((st for st in self.schedule if st.moves_body), None)
        if self.depth_flips and first is not None and first.branch:
            raise ValueError(f"SMPLify's depth-flip rows are added after the first body stage, and this schedule's "
                             f"({first.name!r}) is a {first.branch!r} branch: put a plain body stage before the "
                             "branches, or fit with depth_flips=False")
        params, sub, ctx, tags, method, canon = self._starting_rows(batch)
        return self._fit_rows(batch, params, sub, ctx, tags, canon, method)

    def fit_from(self, batch: PersonBatch, params: dict[str, torch.Tensor]) -> FitResult:
        """Run the schedule from given parameters (one row per person: ``global_orient (B, 3)``,
        ``body_pose (B, J, 3)``, ``betas``, ``transl``), e.g. a regressor's or EFT's output;
        no orientation hypotheses or prototypes, depth-flip rows as configured.

        Raises:
            ValueError: the batch is empty or in another keypoint convention (``PersonBatch.for_model``).
            TypeError: ``batch`` is no PersonBatch (:func:`~fit3d.data.batching.batch_for`).
        """
        batch = self._check(batch)
        B, dev = len(batch), batch.keypoints_2d.device
        params = {k: params[k].detach().clone().to(dev) for k in ("global_orient", "body_pose", "betas", "transl")}
        if self.latent:  # the given pose as the latent space holds it, so root_z and every stage see one pose
            with torch.no_grad():
                params["latent"] = self.prior.encode(params["body_pose"])[0]
                params["body_pose"] = self.prior.decode(params["latent"])
        with torch.no_grad():
            root_z = self.body_model(params["global_orient"], params["body_pose"], params["betas"],
                                     params["transl"]).joints_3d[:, 0, 2]
        ctx = dict(scale=L.person_scale(batch.keypoints_2d, batch.bbox), init_depth=root_z,
                   evidence=face_evidence(batch.keypoints_2d, batch.convention))
        zeros = torch.zeros(B, dtype=torch.long, device=dev)
        tags = dict(owner=torch.arange(B, device=dev), yaw=zeros, start=zeros, flip=zeros - 1, steps=zeros.clone())
        sub = batch
        if self.depth_flips:  # the flipped alternatives of the given pose go through the whole schedule too
            params, sub, ctx, tags, _ = self._with_flip_rows(torch.zeros(B, device=dev), params, sub, ctx, tags)
        return self._fit_rows(batch, params, sub, ctx, tags, None, None, flips_added=True)

    def settings(self) -> dict:
        """What decides this SMPLify's fits, JSON-able (:mod:`fit3d.fitters.describe`): the prior
        (kind, weights' fingerprint, weight scale), the schedule, the hypotheses and starts, the
        depth flips, the noise threshold, the pose space and the validity threshold. A run folder
        fitted from Python records it (:func:`fit3d.pipeline.run`)."""
        return dict(prior=describe_module(self.prior), schedule=[asdict(st) for st in self.schedule],
                    yaws=list(self.yaws), keep_hypotheses=self.keep, prototypes=fingerprint(self.prototypes),
                    prototype_starts=self.prototype_starts, depth_flips=self.depth_flips,
                    noise_threshold=self.noise_threshold, pose_space="latent" if self.latent else "axis_angle",
                    valid_fraction=self.valid_fraction)

    def _check(self, batch: PersonBatch) -> PersonBatch:
        return batch_for(batch, self.body_model)

    def _fit_rows(self, batch: PersonBatch, params: dict, sub: PersonBatch, ctx: dict, tags: dict,
                  canon: BodyOutput | None, method: torch.Tensor | None, flips_added: bool = False) -> FitResult:
        """Run the schedule over rows (several per person), then keep each person's best.
        ``canon`` given: the rows are starting rows and the first stage selects among them;
        depth-flip rows are added after the first body stage unless ``flips_added``."""
        model = self.body_model
        B = len(batch)
        first_body = next((i for i, st in enumerate(self.schedule) if st.moves_body), None)
        tags["branch"] = torch.zeros_like(tags["owner"])
        branched = False
        loss = None
        for i, stage in enumerate(self.schedule):
            if stage.branch and not branched:
                params, sub, ctx, tags, loss = self._with_noisy_branch(loss, params, sub, ctx, tags)
                branched = True
            rows = None if not stage.branch else torch.nonzero(tags["branch"] == int(stage.branch == "noisy"))[:, 0]
            if rows is None:
                loss, s = self.run_stage(stage, params, sub, ctx, canon=canon if i == 0 else None, owner=tags["owner"])
            else:
                part = {k: v[rows].detach().clone() for k, v in params.items()}
                part_loss, s_part = self.run_stage(stage, part, sub.index(rows), {k: v[rows] for k, v in ctx.items()},
                                                   owner=tags["owner"][rows])
                params = {k: v.detach().index_copy(0, rows, part[k].detach()) for k, v in params.items()}
                loss = loss.index_copy(0, rows, part_loss)
                s = torch.zeros_like(tags["steps"]).index_copy(0, rows, s_part)
            tags["steps"] += s
            if i == 0 and canon is not None and not stage.moves_body:
                rows = self._keep_after_camera(loss, params, sub, ctx, tags, canon)
                params, sub, ctx, tags = _take(rows, params, sub, ctx, tags)
                loss = loss[rows]
            if i == first_body and self.depth_flips and not flips_added:
                params, sub, ctx, tags, loss = self._with_flip_rows(loss, params, sub, ctx, tags)
                if i == len(self.schedule) - 1:  # no later stage: score the new rows as they are
                    loss, _ = self.run_stage(replace(stage, iterations=0), params, sub, ctx)
        best, noisy = self._pick(loss, params, sub, ctx, tags, B)
        final = {k: v[best].detach() for k, v in params.items() if k != "latent"}
        with torch.no_grad():
            body = model(final["global_orient"], final["body_pose"], final["betas"], final["transl"])
            proj = project(body.keypoints_3d, batch.focal_length, batch.principal_point)
        err = reprojection_error_px(proj, batch.keypoints_2d, self.keypoint_weights)
        valid = is_valid(err, batch.keypoints_2d, batch.bbox, self.valid_fraction, params=final)
        yaws = torch.tensor(self.yaws, device=loss.device)
        return FitResult(
            **final,
            joints_3d=body.joints_3d,
            keypoints_3d=body.keypoints_3d,
            keypoints_2d_fit=proj,
            reproj_error_px=err,
            valid=valid,
            loss=loss[best],
            iterations=tags["steps"][best],
            convention=model.keypoint_convention,
            extras=dict(hypothesis_yaw=yaws[tags["yaw"][best]], init_method=method, prototype=tags["start"][best] - 1,
                        depth_flip=tags["flip"][best], noisy_keypoints=noisy) if method is not None
            else dict(depth_flip=tags["flip"][best], noisy_keypoints=noisy),
        )
