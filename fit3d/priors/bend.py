"""The elbow/knee bend prior (SMPLify, Bogo et al. ECCV 2016, Eq. 5, as a hinge).

SMPLify penalises elbows and knees bending the wrong way with
``exp(-theta)`` on their flexion angle. fit3d uses the body model's own flexion
axes (:meth:`BodyModel.hinge_axes`) and a squared hinge: zero cost for natural
flexion, ``theta^2`` for hyperextension (``theta < 0``), plus a cost on the
rotation about the other two axes, which a hinge joint does not have.
"""

from __future__ import annotations

import torch

from fit3d.priors.base import Prior


class BendPrior(Prior):
    """Hyperextension and off-axis rotation of elbows and knees.

    Args:
        body_model: gives ``joint_names`` and ``hinge_axes()``.
        off_axis_weight: weight of the squared off-axis rotation (rad^2).
    Raises:
        ValueError: the model reports no hinge axes.
    """

    name = "bend"

    def __init__(self, body_model, off_axis_weight: float = 0.1) -> None:
        super().__init__()
        axes = body_model.hinge_axes()
        if not axes:
            raise ValueError(f"body model {body_model.name!r} reports no hinge axes for the bend prior")
        names = list(body_model.joint_names[1:])
        self.register_buffer("index", torch.tensor([names.index(n) for n in axes]), persistent=False)
        self.register_buffer("axes", torch.stack([axes[n].float() for n in axes]), persistent=False)
        self.off_axis_weight = off_axis_weight
        self.num_joints = len(names)

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """``(B, J, 3)`` axis-angle -> ``(B,)`` cost (rad^2)."""
        rv = body_pose[:, self.index]
        flex = (rv * self.axes.to(rv)).sum(-1)
        off = rv - flex[..., None] * self.axes.to(rv)
        return (torch.relu(-flex).pow(2) + self.off_axis_weight * off.pow(2).sum(-1)).sum(-1)
