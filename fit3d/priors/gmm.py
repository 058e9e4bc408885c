"""Gaussian-mixture pose prior with SMPLify's max-mixture cost (Bogo et al., ECCV 2016).

``cost(x) = min_k [ 0.5 (x - mu_k)^T Sigma_k^-1 (x - mu_k) - log(w_k / sqrt((2 pi)^D |Sigma_k|)) ]``,
the negative log of the largest weighted component, on the flattened body
pose ``x`` (``J * 3`` axis-angle values), less the smallest of the components' constants
``min_k -log(w_k / sqrt((2 pi)^D |Sigma_k|))``: never negative, 0 at the mean of the component
of that constant. A constant changes no gradient and no ranking of rows, but SMPLify's per-person
early stop compares relative changes of the loss, which an arbitrary offset skewed (the shipped
prior's costs were -60 to -130: noisy-branch rows stopped up to ~60x sooner than the tolerance
says; on the validation subjects' benchmarks the fits were the same within 0.1 mm). Fitted with
scikit-learn's ``GaussianMixture``; SMPLify's own ``gmm_08.pkl`` (``means``, ``covars``,
``weights``) loads too.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import torch

from fit3d.priors.base import Prior


class GMMPrior(Prior):
    """Max-mixture GMM prior.

    Args:
        means: ``(K, D)``; covars: ``(K, D, D)``; weights: ``(K,)``.
    Raises:
        ValueError: inconsistent shapes.
    """

    name = "gmm"
    weight_scale = 0.3  # tuned on the training-trial benchmark (benchmarks/tune_smplify.py)

    def __init__(self, means, covars, weights) -> None:
        super().__init__()
        means = torch.as_tensor(np.asarray(means), dtype=torch.float64)
        covars = torch.as_tensor(np.asarray(covars), dtype=torch.float64)
        weights = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
        K, D = means.shape
        if covars.shape != (K, D, D) or weights.shape != (K,):
            raise ValueError(f"GMM shapes do not match: means {tuple(means.shape)}, covars {tuple(covars.shape)}, "
                             f"weights {tuple(weights.shape)}")
        precisions = torch.linalg.inv(covars)
        logdet = torch.linalg.slogdet(covars)[1]
        const = -torch.log(weights) + 0.5 * logdet + 0.5 * D * math.log(2 * math.pi)
        const = const - const.min()  # (see the module docstring)
        self.register_buffer("means", means.float())
        self.register_buffer("covars", covars.float())
        self.register_buffer("weights", weights.float())
        self.register_buffer("precisions", precisions.float())
        self.register_buffer("const", const.float())

    @property
    def dim(self) -> int:
        """D, the pose vector's size (3 J axis-angle values)."""
        return self.means.shape[1]

    def accepted_joints(self) -> set[int]:
        """Every J with ``3 J <= D`` (the leading dimensions: the marginal, see :meth:`forward`)."""
        return set(range(1, self.dim // 3 + 1))

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """``(B, J, 3)`` -> ``(B,)``, >= 0 (module docstring). When the mixture has more dimensions than ``J * 3``
        (SMPL's 69 for a 63-d SMPL-X body), the leading ``J * 3`` are used (the marginal).

        Raises:
            ValueError: the pose has more values than the mixture models."""
        x = body_pose.flatten(1)
        D = x.shape[1]
        if D > self.dim:
            raise ValueError(f"pose has {D} values, the GMM models {self.dim}")
        mu = self.means[:, :D]
        P = self.precisions if D == self.dim else torch.linalg.inv(self.covars[:, :D, :D])
        const = self.const
        if D != self.dim:
            logdet = torch.linalg.slogdet(self.covars[:, :D, :D])[1]
            const = -torch.log(self.weights) + 0.5 * logdet + 0.5 * D * math.log(2 * math.pi)
            const = const - const.min()
        diff = x[None] - mu[:, None]  # (K, B, D)
        maha = ((diff @ P) * diff).sum(-1)  # (K, B); faster, with its backward, than the einsum
        return (0.5 * maha + const[:, None]).min(dim=0).values

    @classmethod
    def fit(cls, body_pose: np.ndarray, n_components: int = 8, seed: int = 0, reg_covar: float = 1e-4) -> "GMMPrior":
        """Fit with ``sklearn.mixture.GaussianMixture`` (full covariances) on ``(N, J, 3)`` poses."""
        from sklearn.mixture import GaussianMixture

        X = np.asarray(body_pose, dtype=np.float64).reshape(len(body_pose), -1)
        g = GaussianMixture(n_components, covariance_type="full", reg_covar=reg_covar, random_state=seed, max_iter=500)
        g.fit(X)
        return cls(g.means_, g.covariances_, g.weights_)

    @classmethod
    def load_smplify_pkl(cls, path: str | Path) -> "GMMPrior":
        """SMPLify's ``gmm_08.pkl`` (a dict with ``means``, ``covars``, ``weights``; Python 2 pickles read as latin1).

        Raises:
            FileNotFoundError, KeyError: missing file or keys.
        """
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        return cls(d["means"], d["covars"], d["weights"])

    def state(self) -> dict:
        """What :meth:`from_state` needs (means, covars, weights)."""
        return dict(kind="gmm", means=self.means.cpu(), covars=self.covars.cpu(), weights=self.weights.cpu())

    @classmethod
    def from_state(cls, state: dict) -> "GMMPrior":
        """A prior from :meth:`state`'s dict (``means``, ``covars``, ``weights``)."""
        return cls(state["means"].double(), state["covars"].double(), state["weights"].double())
