"""The L2 pose prior: squared norm of the axis-angle body pose (SPIN/EFT's baseline)."""

from __future__ import annotations

import torch

from fit3d.priors.base import Prior


class L2Prior(Prior):
    """``sum_j |body_pose_j|^2``: pulls every joint towards the rest pose.

    Args:
        joint_weights: optional ``(J,)`` per-joint weights (default all 1).
    """

    name = "l2"

    def __init__(self, joint_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.joint_weights = None if joint_weights is None else torch.as_tensor(joint_weights)

    def accepted_joints(self) -> set[int] | None:
        """Any J, or that of ``joint_weights``."""
        return None if self.joint_weights is None else {len(self.joint_weights)}

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """``(B, J, 3)`` axis-angle -> ``(B,)`` cost in rad^2."""
        sq = body_pose.pow(2).sum(-1)
        if self.joint_weights is not None:
            sq = sq * self.joint_weights.to(sq)
        return sq.sum(-1)
