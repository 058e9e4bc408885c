"""A memory of 3D pose prototypes (PM-Net: Rong, Liu, Loy, "Chasing the Tail in Monocular
3D Human Reconstruction with Prototype Memory", IEEE TIP 2022).

A single starting pose (the mean pose of SMPLify and HMR) is far from rare poses, so
fits and regressions that start there land in the wrong basin. PM-Net stores several
prototypes, each covering a local part of the pose distribution, common or rare, and
starts from the nearest. Here the prototypes are learned by
:func:`fit3d.training.prototypes.learn_prototypes` (k-means on skeletons, weighted so
that sparse, rare regions get their own prototypes) and used (a) by SMPLify as extra
starting points in the same batch as the orientation hypotheses and (b) by the
keypoint regressor, which picks one and regresses the residual from it.
"""

from __future__ import annotations

import torch

from fit3d.priors.base import Prior


class PoseMemory(Prior):
    """``K`` prototype body poses of one body model.

    Args:
        prototypes: ``(K, J, 3)`` axis-angle body poses.
        counts: ``(K,)`` training poses assigned to each prototype (for reports).
    Raises:
        ValueError: ``prototypes`` is not ``(K, J, 3)``.
    """

    name = "prototypes"

    def __init__(self, prototypes: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        super().__init__()
        prototypes = torch.as_tensor(prototypes, dtype=torch.float32)
        if prototypes.dim() != 3 or prototypes.shape[-1] != 3:
            raise ValueError(f"prototypes must be (K, J, 3), not {tuple(prototypes.shape)}")
        self.register_buffer("prototypes", prototypes)
        self.register_buffer("counts", torch.zeros(len(prototypes)) if counts is None else torch.as_tensor(counts).float())

    @property
    def num_joints(self) -> int:
        """J, the body joints of each prototype pose."""
        return self.prototypes.shape[1]

    def __len__(self) -> int:
        return self.prototypes.shape[0]

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """``(B, J, 3)`` -> ``(B,)`` squared axis-angle distance to the nearest prototype (rad^2)."""
        d = (body_pose[:, None] - self.prototypes[None]).pow(2).sum((-1, -2))
        return d.min(1).values

    def state(self) -> dict:
        """What :meth:`from_state` needs."""
        return dict(kind="prototypes", prototypes=self.prototypes.cpu(), counts=self.counts.cpu())

    @classmethod
    def from_state(cls, state: dict) -> "PoseMemory":
        """A memory from :meth:`state`'s dict (``prototypes``, optional ``counts``)."""
        return cls(state["prototypes"], state.get("counts"))
