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
refinement where its RMS residual (:func:`~fit3d.fitters.losses.rms_residual`) falls more than
``ratio`` times; people whose residual has not fallen ``check_ratio`` times after
``check_after`` iterations stop there (they cannot reach ``ratio``), so on noisy data most rows
run ``check_after`` iterations only. Rows are independent (the loss is a sum over rows and Adam
is element-wise), so stopping some changes nothing for the others.

The weights were chosen on the validation subjects with weights trained without them
(``benchmarks/tune_follow.py``; ``docs/experiments.md``, "Follow the keypoints").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fit3d.body_models.base import BodyModel
from fit3d.data.batching import PersonBatch
from fit3d.fitters import losses as L
from fit3d.geometry import project

#: The parameters the refinement moves (``betas`` stay the network's).
MOVED = ("global_orient", "body_pose", "transl")


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
    """

    iterations: int = 100
    lr: float = 0.02
    anchor: float = 3.0
    ratio: float = 3.0
    check_after: int = 30
    check_ratio: float = 2.0

    def __post_init__(self):
        if self.iterations < 0 or self.check_after < 0 or self.lr <= 0 or self.anchor < 0:
            raise ValueError(f"invalid FollowConfig {self}: iterations and check_after >= 0, lr > 0, anchor >= 0")
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
        iterations: ``(B,)`` long, iterations each row ran (``check_after`` for stopped rows).
        rms_before, rms_after: ``(B,)`` RMS residuals (nominal px) of the given and the
            returned parameters.
    """

    params: dict[str, torch.Tensor]
    kept: torch.Tensor
    iterations: torch.Tensor
    rms_before: torch.Tensor
    rms_after: torch.Tensor


def _residual(model: BodyModel, p: dict, batch: PersonBatch, scale: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        kp = model(p["global_orient"], p["body_pose"], p["betas"], p["transl"]).keypoints_3d
        return L.rms_residual(project(kp, batch.focal_length, batch.principal_point), batch.keypoints_2d, scale)


def _keep_rows(opt: torch.optim.Adam, leaves: dict, rows: torch.Tensor, lr: float):
    """The optimisation restricted to ``rows``: new leaves and an Adam carrying their state."""
    new = {k: v.detach()[rows].requires_grad_(True) for k, v in leaves.items()}
    new_opt = torch.optim.Adam(list(new.values()), lr=lr)
    for k, v in leaves.items():
        state = opt.state.get(v)
        if state:
            new_opt.state[new[k]] = {s: (x[rows] if x.dim() > 0 else x.clone()) for s, x in state.items()}
    return new, new_opt


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
    scale = L.person_scale(batch.keypoints_2d, batch.bbox)
    mask = model.keypoint_weights()
    before = _residual(model, start, batch, scale)
    rows = torch.arange(B, device=before.device)
    leaves = {k: start[k].clone().requires_grad_(True) for k in MOVED}
    opt = torch.optim.Adam(list(leaves.values()), lr=config.lr)
    sub, sub_scale, pose0, betas = batch, scale, start["body_pose"], start["betas"]
    iterations = torch.zeros(B, dtype=torch.long, device=before.device)
    for it in range(config.iterations):
        if it == config.check_after and it > 0:
            mid = _residual(model, dict(leaves, betas=betas), sub, sub_scale)
            go_on = before[rows] > config.check_ratio * mid
            if not bool(go_on.all()):
                idx = torch.nonzero(go_on)[:, 0]
                rows, sub, sub_scale, pose0, betas = rows[idx], sub.index(idx), sub_scale[idx], pose0[idx], betas[idx]
                leaves, opt = _keep_rows(opt, leaves, idx, config.lr)
            if len(rows) == 0:
                break
        body = model(leaves["global_orient"], leaves["body_pose"], betas, leaves["transl"])
        proj = project(body.keypoints_3d, sub.focal_length, sub.principal_point)
        loss = L.reprojection(proj, sub.keypoints_2d, sub_scale, mask=mask)
        loss = loss + config.anchor * (leaves["body_pose"] - pose0).pow(2).sum((1, 2))
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        iterations[rows] += 1
    out = {k: v.clone() for k, v in start.items()}
    after = before.clone()
    if len(rows):
        refined = dict({k: v.detach() for k, v in leaves.items()}, betas=betas)
        r = _residual(model, refined, sub, sub_scale)
        keep = before[rows] > config.ratio * r
        rows, r = rows[keep], r[keep]
        for k in MOVED:
            out[k][rows] = refined[k][keep]
        after[rows] = r
    kept = torch.zeros(B, dtype=torch.bool, device=before.device)
    kept[rows] = True
    return Followed(out, kept, iterations, before, after)
