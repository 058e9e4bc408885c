"""Anatomically impossible versions of real poses, to check that priors reject them."""

from __future__ import annotations

import numpy as np
import torch


def implausible_poses(body_model, body_pose: torch.Tensor) -> dict[str, torch.Tensor]:
    """Corrupted copies of ``(N, J, 3)`` real poses, one joint broken in each:

    * knee hyperextension: left knee bent 46 degrees the wrong way;
    * elbow bent backwards: right elbow 69 degrees the wrong way;
    * head twisted: head turned 126 degrees about the vertical;
    * hip abducted: left leg raised 143 degrees sideways;
    * random joint flip: a random joint's rotation replaced by a random one of 100-180 degrees.
    """
    names = list(body_model.joint_names[1:])
    axes = body_model.hinge_axes()
    out = {}

    def broken(joint, value):
        p = body_pose.clone()
        p[:, names.index(joint)] = value
        return p

    out["knee hyperextension"] = broken("left_knee", -0.8 * axes["left_knee"])
    out["elbow bent backwards"] = broken("right_elbow", -1.2 * axes["right_elbow"])
    out["head twisted"] = broken("head", torch.tensor([0.0, 2.2, 0.0], device=body_pose.device))
    out["hip abducted"] = broken("left_hip", torch.tensor([0.0, 0.0, 2.5], device=body_pose.device))
    g = torch.Generator().manual_seed(0)  # (drawn on the CPU, the same corruptions on any device)
    p = body_pose.clone()
    n = len(p)
    j = torch.randint(0, len(names), (n,), generator=g)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    angle = torch.deg2rad(100 + 80 * torch.rand(n, 1, generator=g))
    p[torch.arange(n), j] = (axis * angle).to(p)
    out["random joint flip"] = p
    return out


def auroc(real_cost: torch.Tensor, bad_cost: torch.Tensor) -> float:
    """Probability that a corrupted pose scores worse than a real one (ties count half)."""
    a, b = np.asarray(real_cost, dtype=np.float64), np.asarray(bad_cost, dtype=np.float64)
    gt = (b[:, None] > a[None, :]).mean()
    eq = (b[:, None] == a[None, :]).mean()
    return float(gt + 0.5 * eq)
