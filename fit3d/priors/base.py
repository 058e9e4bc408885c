"""The pose-prior interface: ``prior(body_pose) -> (B,)`` cost, differentiable."""

from __future__ import annotations

import itertools

import torch


class Prior(torch.nn.Module):
    """A cost on the body pose; lower is more plausible.

    Subclasses implement :meth:`forward`. Priors that reparameterise the pose
    (a VAE) also implement ``encode(body_pose) -> (mu (B, Z), sigma (B, Z))`` (the posterior's mean
    and spread; latent fitting starts from ``mu``) and ``decode(latent (B, Z)) -> (B, J, 3)``.
    """

    name: str = "prior"
    #: Fitters multiply their ``pose_prior`` stage weights by this, so one schedule
    #: serves priors whose costs have different scales (tuned on the training-trial
    #: benchmark with ``benchmarks/tune_smplify.py``, whose configurations override it).
    weight_scale: float = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.register_forward_pre_hook(_check_pose)

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """Args: ``body_pose`` ``(B, J, 3)`` axis-angle. Returns: ``(B,)`` cost.

        Raises (on every call, before ``forward``, which gets the pose in the prior's dtype):
            ValueError: ``body_pose`` is not ``(B, J, 3)``, or J is not one the prior scores
                (:meth:`accepted_joints`).
        """
        raise NotImplementedError

    def accepted_joints(self) -> set[int] | None:
        """The J this prior scores (None: any): its ``num_joints`` when it has one."""
        n = getattr(self, "num_joints", None)
        return None if n is None else {int(n)}


def as_loss(prior: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """``prior`` made a fitting loss, in place (and returned): on ``device``, in eval mode, and its
    weights taking no gradient. Fitting moves the pose through the prior, never the prior itself;
    a VAE's or a flow's weights otherwise got a gradient at every iteration (SMPLify with the VAE
    prior 15 % and with the articulation prior 27 % slower, the same fits; 2026-12-04). A prior
    that is to be trained afterwards needs ``requires_grad_(True)`` again."""
    return prior.requires_grad_(False).to(device).eval()


def _check_pose(prior: Prior, args: tuple) -> tuple | None:
    """Forward pre-hook of every :class:`Prior`: a body pose of the shape it scores, or a
    ValueError (an unbatched ``(J, 3)`` pose or another model's joints were scored silently); a
    pose of another floating dtype than the prior's weights (float64) is cast to theirs (it raised
    a dtype error from inside torch), so the cost comes in the weights' dtype."""
    pose = args[0] if args else None
    shape = tuple(pose.shape) if isinstance(pose, torch.Tensor) else type(pose).__name__
    if not isinstance(pose, torch.Tensor) or pose.dim() != 3 or pose.shape[-1] != 3:
        raise ValueError(f"{type(prior).__name__} scores body poses of shape (B, J, 3) (axis-angle), got {shape}")
    allowed = prior.accepted_joints()
    if allowed is not None and pose.shape[1] not in allowed:
        counts = sorted(allowed)  # (a range was listed number by number: "[1, 2, 3, ..., 19] joints")
        said = (f"1 to {counts[-1]}" if counts == list(range(1, len(counts) + 1)) and len(counts) > 2
                else " or ".join(map(str, counts)))
        raise ValueError(f"{type(prior).__name__} scores poses of {said} joints, got {shape}")
    dtype = next((t.dtype for t in itertools.chain(prior.parameters(), prior.buffers()) if t.is_floating_point()), None)
    if dtype is not None and pose.dtype != dtype:  # a float64 pose scored by float32 weights: cast (differentiably)
        return (pose.to(dtype), *args[1:])
    return None
