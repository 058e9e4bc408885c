"""Rotation representations used inside the learned priors (roma for conversions)."""

from __future__ import annotations

import roma
import torch


def sixd_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """``(..., 6)`` -> ``(..., 3, 3)``: Gram-Schmidt on the two columns of a ``(3, 2)``
    matrix (Zhou et al., CVPR 2019; VPoser v2's ``ContinousRotReprDecoder`` layout)."""
    m = x.reshape(*x.shape[:-1], 3, 2)
    return roma.special_gramschmidt(m)


def rotvec_to_sixd(rotvec: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` axis-angle -> ``(..., 6)``: the first two columns, row-major as ``(3, 2)``."""
    return roma.rotvec_to_rotmat(rotvec)[..., :, :2].reshape(*rotvec.shape[:-1], 6)
