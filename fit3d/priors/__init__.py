"""Pose priors: one class per prior, all ``prior(body_pose) -> (B,)``."""

from fit3d.priors.base import Prior
from fit3d.priors.bend import BendPrior
from fit3d.priors.l2 import L2Prior

PRIORS = {"l2": L2Prior}


def build_prior(name: str, body_model=None) -> Prior:
    """A pose prior by name (``"l2"``). Raises ``KeyError`` for unknown names."""
    try:
        cls = PRIORS[name]
    except KeyError:
        raise KeyError(f"unknown prior {name!r}; available: {sorted(PRIORS)}") from None
    return cls()


__all__ = ["Prior", "BendPrior", "L2Prior", "PRIORS", "build_prior"]
