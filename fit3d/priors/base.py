"""The pose-prior interface: ``prior(body_pose) -> (B,)`` cost, differentiable."""

from __future__ import annotations

import torch


class Prior(torch.nn.Module):
    """A cost on the body pose; lower is more plausible.

    Subclasses implement :meth:`forward`. Priors that reparameterise the pose
    (a VAE) also implement ``encode(body_pose) -> (B, Z)`` and
    ``decode(latent) -> (B, J, 3)``.
    """

    name: str = "prior"
    #: Fitters multiply their ``pose_prior`` stage weights by this, so one schedule
    #: serves priors whose costs have different scales (tuned on the training-trial
    #: benchmark with ``benchmarks/tune_smplify.py``, whose configurations override it).
    weight_scale: float = 1.0

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """Args: ``body_pose`` ``(B, J, 3)`` axis-angle. Returns: ``(B,)`` cost."""
        raise NotImplementedError
