"""A guard for training loops: weights that are no longer finite are never saved or returned."""

from __future__ import annotations

import torch
from torch import nn


def require_finite(module: nn.Module, what: str, hint: str = "lower the learning rate") -> None:
    """Check that every parameter of ``module`` is finite (one device sync).

    Called after an epoch or round and before anything is saved: a NaN or infinite loss
    turns the weights non-finite at the next step (gradient clipping does not stop it), and
    every later step keeps them so.

    Args:
        what: names the training and where it stopped, for the message (e.g.
            ``"the regressor's training, round 12"``).
        hint: what the user can do.
    Raises:
        ValueError: a parameter holds NaN or infinity: ``"<what> diverged ...: <hint>"``.
    """
    params = [p.detach() for p in module.parameters()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        raise ValueError(f"{what} diverged (its weights are no longer finite; nothing saved): {hint}")
