"""Follow the keypoints: a short, anchored refinement of a regressor's fit, kept only where it pays.

A fine-tuned regressor (EFT, NeuralAnnot) knows which poses are plausible but does not reach
keypoints far from what it learned: on exact keypoints of unusual poses its fits stayed 10-25
px off at the wrists and ankles. :func:`follow_keypoints` moves the body model's own
parameters (``global_orient``, ``body_pose``, ``transl``; ``betas`` stay) toward the keypoints
with Adam on

    GMoF reprojection (as SMPLify's, nominal px^2) + anchor * |body_pose - body_pose_0|^2

(axis-angle, summed over joints): the anchor keeps what the keypoints do not decide (the depth
of each limb, hidden joints) where the network put it, in place of a generic pose prior (with
the L2 prior of EFT's ``--refine``, ordinary poses lost 11 mm on exact keypoints).

Which people keep it is a likelihood-ratio style choice, as EFT's ``accept_ratio``: following
exact keypoints cuts the RMS residual many times over, while on noisy keypoints what the
refinement gains is fitted noise and the residual falls by a small factor. A person keeps the
refinement where its RMS residual (:func:`~fit3d.fitters.losses.rms_residual`, over the
keypoints the model fits) falls more than ``ratio`` times; people whose residual has not fallen
``check_ratio`` times after ``check_after`` iterations stop there (they cannot reach ``ratio``),
so on noisy data most rows run ``check_after`` iterations only. Rows are independent (the loss
is a sum over rows and Adam is element-wise), so stopping some changes nothing for the others
(up to float rounding). People with fewer than ``min_keypoints`` labelled keypoints are not
refined: with few points the free orientation and translation explain noisy keypoints almost
exactly, and the ratio reads that as exact keypoints.

The weights were chosen on the validation subjects with weights trained without them
(``benchmarks/tune_smplify.py`` with ``"follow"`` configs; ``docs/experiments.md``, "Follow the
keypoints").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fit3d.body_models.base import BodyModel
from fit3d.data.batching import PersonBatch
import fit3d.fitters.losses as L
from fit3d.geometry import project

#: The parameters the refinement moves (``betas`` stay the network's).
MOVED = ("global_orient", "body_pose", "transl")
#: :attr:`FollowConfig.min_keypoints`. Chosen on the validation subjects with COCO's 17 keypoints
#: (anny's 23 without the feet): with noise, 0 kept the refinement for 4-10 % of the people and
#: cost up to 3.4 mm; 14 is the smallest count with no subject and noise level more than 1 mm
#: worse than EFT, and with all 23 keypoints it is as good as 0 (``docs/experiments.md``).
MIN_KEYPOINTS = 14


@dataclass(frozen=True)
class FollowConfig:
    """Settings of :func:`follow_keypoints`.

    Attributes:
        iterations: Adam iterations for the rows that pass the check.
        lr: Adam's learning rate (radians / metres per step scale).
        anchor: weight of ``|body_pose - body_pose_0|^2`` (axis-angle, summed over the joints)
            per nominal px^2 of reprojection cost.
        ratio: a person keeps the refinement where its RMS residual before / after > ``ratio``.
        check_after: iteration at which rows whose residual has not fallen ``check_ratio``
            times stop (0: no check).
        check_ratio: see ``check_after``.
        min_keypoints: people with fewer labelled keypoints (confidence > 0, of those the model
            fits) are not refined.
    """

    iterations: int = 100
    lr: float = 0.02
    anchor: float = 3.0
    ratio: float = 3.0
    check_after: int = 30
    check_ratio: float = 2.0
    min_keypoints: int = MIN_KEYPOINTS

    def __post_init__(self):
        if self.iterations < 0 or self.check_after < 0 or self.lr <= 0 or self.anchor < 0 or self.min_keypoints < 0:
            raise ValueError(f"invalid FollowConfig {self}: iterations, check_after, min_keypoints >= 0, lr > 0, "
                             "anchor >= 0")
        if self.ratio < 1 or self.check_ratio < 1:
            raise ValueError(f"invalid FollowConfig {self}: ratio and check_ratio >= 1")


@dataclass
class Followed:
    """What :func:`follow_keypoints` returns (B people, tensors on the model's device).

    Attributes:
        params: ``global_orient (B, 3)``, ``body_pose (B, J, 3)``, ``betas (B, S)``,
            ``transl (B, 3)``: the refined parameters where ``kept``, the given ones elsewhere
            (detached).
        kept: ``(B,)`` bool, the refinement was kept.
        iterations: ``(B,)`` long, iterations each row ran (``check_after`` for rows stopped at
            the check, 0 for people with too few keypoints; also counted where not kept).
        rms_before, rms_after: ``(B,)`` RMS residuals (nominal px) of the given and the
            returned parameters.
        loss: ``(B,)`` the refinement's objective (nominal px^2) at the returned parameters
            where ``kept``, NaN elsewhere.
    """

    params: dict[str, torch.Tensor]
    kept: torch.Tensor
    iterations: torch.Tensor
    rms_before: torch.Tensor
    rms_after: torch.Tensor
    loss: torch.Tensor


class _Rows:
    """The people still being refined: their batch, scale, starting pose, shape, leaves and Adam."""

    def __init__(self, batch: PersonBatch, scale, start: dict, rows: torch.Tensor, lr: float):
        self.rows, self.batch, self.scale = rows, batch.index(rows), scale[rows]
        self.pose0, self.betas = start["body_pose"][rows], start["betas"][rows]
        self.leaves = {k: start[k][rows].clone().requires_grad_(True) for k in MOVED}
        self.opt = torch.optim.Adam(list(self.leaves.values()), lr=lr)

    def params(self) -> dict:
        return dict({k: v.detach() for k, v in self.leaves.items()}, betas=self.betas)

    def keep(self, idx: torch.Tensor, lr: float) -> None:
        """Go on with the rows ``idx`` (of the current ones) only; Adam's state carries over."""
        new = {k: v.detach()[idx].requires_grad_(True) for k, v in self.leaves.items()}
        opt = torch.optim.Adam(list(new.values()), lr=lr)
        for k, v in self.leaves.items():
            state = self.opt.state.get(v)
            if state:
                opt.state[new[k]] = {s: (x[idx] if x.dim() > 0 else x.clone()) for s, x in state.items()}
        self.rows, self.batch, self.scale = self.rows[idx], self.batch.index(idx), self.scale[idx]
        self.pose0, self.betas, self.leaves, self.opt = self.pose0[idx], self.betas[idx], new, opt


def _objective(model: BodyModel, p: dict, r: _Rows, mask, anchor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``((R,) objective, (R, K, 2) projected keypoints)`` of the rows ``r`` at parameters ``p``."""
    body = model(p["global_orient"], p["body_pose"], p["betas"], p["transl"])
    proj = project(body.keypoints_3d, r.batch.focal_length, r.batch.principal_point)
    return (L.reprojection(proj, r.batch.keypoints_2d, r.scale, mask=mask)
            + anchor * (p["body_pose"] - r.pose0).pow(2).sum((1, 2))), proj


def _residual(model: BodyModel, p: dict, batch: PersonBatch, scale: torch.Tensor, mask) -> torch.Tensor:
    with torch.no_grad():
        kp = model(p["global_orient"], p["body_pose"], p["betas"], p["transl"]).keypoints_3d
        return L.rms_residual(project(kp, batch.focal_length, batch.principal_point), batch.keypoints_2d, scale,
                              mask=mask)


@torch.enable_grad()  # (called under torch.no_grad(): following needs gradients)
def follow_keypoints(model: BodyModel, batch: PersonBatch, params: dict[str, torch.Tensor],
                     config: FollowConfig = FollowConfig()) -> Followed:
    """Refine ``params`` toward ``batch``'s keypoints, anchored at their pose (module docstring).

    Args:
        model: the body model of ``params``. batch: B people in ``model``'s keypoint
            convention (``PersonBatch.for_model``). params: ``global_orient (B, 3)``,
            ``body_pose (B, J, 3)``, ``betas (B, S)``, ``transl (B, 3)`` (camera frame, metres).
        config: :class:`FollowConfig`.
    Returns:
        :class:`Followed`.
    Raises:
        ValueError: ``params`` and ``batch`` disagree on B.
    """
    start = {k: params[k].detach() for k in ("global_orient", "body_pose", "betas", "transl")}
    B = len(batch)
    if any(v.shape[0] != B for v in start.values()):
        raise ValueError(f"follow_keypoints: {B} people in the batch, parameters for "
                         f"{[tuple(v.shape) for v in start.values()]}")
    dev = start["transl"].device
    kept = torch.zeros(B, dtype=torch.bool, device=dev)
    iterations = torch.zeros(B, dtype=torch.long, device=dev)
    loss = torch.full((B,), float("nan"), device=dev, dtype=start["transl"].dtype)
    out = {k: v.clone() for k, v in start.items()}
    if B == 0:
        return Followed(out, kept, iterations, loss.clone(), loss.clone(), loss)
    scale = L.person_scale(batch.keypoints_2d, batch.bbox)
    mask = model.keypoint_weights()
    before = _residual(model, start, batch, scale, mask)
    labelled = ((batch.keypoints_2d[..., 2] > 0) & (mask.to(dev) > 0)).sum(-1)
    r = _Rows(batch, scale, start, torch.nonzero(labelled >= config.min_keypoints)[:, 0], config.lr)
    for it in range(config.iterations if len(r.rows) else 0):
        if it == config.check_after and it > 0:
            mid = _residual(model, r.params(), r.batch, r.scale, mask)
            go_on = before[r.rows] > config.check_ratio * mid
            if not bool(go_on.all()):
                r.keep(torch.nonzero(go_on)[:, 0], config.lr)
            if len(r.rows) == 0:
                break
        step, _ = _objective(model, dict(r.leaves, betas=r.betas), r, mask, config.anchor)
        r.opt.zero_grad(set_to_none=True)
        step.sum().backward()
        r.opt.step()
        iterations[r.rows] += 1
    after = before.clone()
    if len(r.rows) and config.iterations:
        refined = r.params()
        with torch.no_grad():  # one forward: the residual that decides and the objective of the kept
            objective, proj = _objective(model, refined, r, mask, config.anchor)
            res = L.rms_residual(proj, r.batch.keypoints_2d, r.scale, mask=mask)
        keep = before[r.rows] > config.ratio * res
        rows = r.rows[keep]
        for k in MOVED:
            out[k][rows] = refined[k][keep]
        loss[rows], after[rows], kept[rows] = objective[keep], res[keep], True
    return Followed(out, kept, iterations, before, after, loss)
