"""Any regressor as a plain module, for EFT's generic per-person path (``torch.func``)."""

from __future__ import annotations

import torch
from torch import nn

from fit3d.data.batching import PersonBatch
from fit3d.regressors.base import Regressor
from fit3d.regressors.ensemble import EnsembleRegressor


class PlainRegressor(nn.Module):
    """A regressor seen as a plain module, without ``forward_with``: EFT then evaluates its
    per-person copies with ``torch.func.functional_call`` under ``vmap``, its path for any
    regressor module. The reference that the per-person layers of
    :mod:`fit3d.regressors.functional` are tested and benchmarked against.

    Args:
        inner: the regressor (its parameters are named ``inner.<name>`` here).

    Raises:
        TypeError: ``inner`` is an :class:`~fit3d.regressors.ensemble.EnsembleRegressor`.
    """

    def __init__(self, inner: Regressor) -> None:
        super().__init__()
        if isinstance(inner, EnsembleRegressor):  # its correction must see the pretrained weights
            raise TypeError("an ensemble cannot be evaluated through functional_call; use it directly "
                            "(EFT fine-tunes its first member through forward_with)")
        self.inner = inner

    def features(self, batch: PersonBatch) -> torch.Tensor:
        """``inner.features(batch)``."""
        return self.inner.features(batch)

    def forward(self, features: torch.Tensor, prototype: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``inner(features, prototype)``."""
        return self.inner(features, prototype)
