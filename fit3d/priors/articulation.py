"""A learned articulation prior: one normalizing flow per joint over its rotation.

Each joint's axis-angle rotation gets a density ``p_j`` from a RealNVP flow
(Dinh et al., ICLR 2017) with affine coupling layers conditioned on a learned
joint embedding (one network shared by all joints). The cost is the negative
log-likelihood beyond each joint's learned range:
``cost = sum_j softplus(-log p_j(theta_j) - tau_j)``, ``tau_j`` being the
``RANGE_QUANTILE`` quantile of joint j's NLL over the training poses. Inside
the range real articulations cost almost nothing (the flat part leaves depth
ambiguity to the other terms); outside it the cost grows with the NLL, so
anatomically impossible bends (knee hyperextension, elbows bent backwards,
heads or limbs twisted beyond their range) score far worse than real poses,
joint by joint, without the whole-body correlations a GMM or VAE needs. Learned
joint limits, in short; ``nll()`` gives the plain summed NLL.
"""

from __future__ import annotations

import torch
from torch import nn

from fit3d.priors.base import Prior

_LOG_2PI = 1.8378770664093453
#: Per-joint NLL quantile of the training poses where the cost starts to rise.
RANGE_QUANTILE = 0.98


class _Coupling(nn.Module):
    """Affine coupling on 3-vectors: the unmasked components are scaled and shifted
    by an MLP of the masked ones and the joint embedding."""

    def __init__(self, mask: tuple[int, int, int], embed: int, hidden: int, max_scale: float = 3.0) -> None:
        super().__init__()
        self.register_buffer("mask", torch.tensor(mask, dtype=torch.float32))
        self.max_scale = max_scale
        self.net = nn.Sequential(
            nn.Linear(3 + embed, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 6)
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.mask
        s, t = self.net(torch.cat([x * m, e], -1)).chunk(2, -1)
        s = self.max_scale * torch.tanh(s / self.max_scale) * (1 - m)
        t = t * (1 - m)
        return x * m + (1 - m) * (x * torch.exp(s) + t), s.sum(-1)


class ArticulationPrior(Prior):
    """Per-joint RealNVP flows; ``prior(body_pose) -> (B,)`` negative log-likelihood.

    Args:
        num_joints: J.
        embed: joint embedding size. hidden: coupling MLP width. layers: coupling layers.
        mean, std: ``(J, 3)`` per-joint standardisation (set by training).
    """

    name = "articulation"
    weight_scale = 10.0  # tuned on the training-trial benchmark (benchmarks/tune_smplify.py)
    _MASKS = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1))

    def __init__(self, num_joints: int = 19, embed: int = 8, hidden: int = 64, layers: int = 8,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.num_joints, self.embed_dim, self.hidden, self.n_layers = num_joints, embed, hidden, layers
        self.embedding = nn.Embedding(num_joints, embed)
        self.layers = nn.ModuleList(_Coupling(self._MASKS[i % len(self._MASKS)], embed, hidden) for i in range(layers))
        self.register_buffer("mean", torch.zeros(num_joints, 3) if mean is None else torch.as_tensor(mean).float())
        self.register_buffer("std", torch.ones(num_joints, 3) if std is None else torch.as_tensor(std).float())
        self.register_buffer("threshold", torch.full((num_joints,), float("inf")))

    def log_prob_joints(self, body_pose: torch.Tensor) -> torch.Tensor:
        """``(B, J, 3)`` -> ``(B, J)`` log-density of each joint's rotation (axis-angle, rad)."""
        B, J, _ = body_pose.shape
        x = ((body_pose - self.mean) / self.std).reshape(B * J, 3)
        e = self.embedding.weight.repeat(B, 1)
        logdet = torch.zeros(B * J, dtype=x.dtype, device=x.device)
        for layer in self.layers:
            x, ld = layer(x, e)
            logdet = logdet + ld
        logp = -0.5 * (x.pow(2).sum(-1) + 3 * _LOG_2PI) + logdet
        return logp.view(B, J) - torch.log(self.std).sum(-1)

    def nll(self, body_pose: torch.Tensor) -> torch.Tensor:
        """``(B, J, 3)`` -> ``(B,)`` negative log-likelihood summed over joints."""
        return -self.log_prob_joints(body_pose).sum(-1)

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """``(B, J, 3)`` -> ``(B,)``: NLL beyond each joint's learned range, summed (see module doc).
        Before :meth:`set_range` (a joint without a finite range) it is the plain NLL. Chosen per
        joint on the device, without a test of the range in Python: that waited for the GPU at
        every call of a fit's iterations."""
        nll = -self.log_prob_joints(body_pose)
        ranged = torch.isfinite(self.threshold)
        return torch.where(ranged, torch.nn.functional.softplus(nll - self.threshold), nll).sum(-1)

    @torch.no_grad()
    def set_range(self, body_pose: torch.Tensor, quantile: float = RANGE_QUANTILE) -> None:
        """Set ``tau_j`` to the ``quantile`` of each joint's NLL over ``(N, J, 3)`` poses."""
        nll = torch.cat([-self.log_prob_joints(body_pose[s : s + 4096]) for s in range(0, len(body_pose), 4096)])
        self.threshold.copy_(torch.quantile(nll, quantile, dim=0))

    def state(self) -> dict:
        """What :meth:`from_state` needs (sizes and weights, on the CPU)."""
        return dict(kind="articulation", num_joints=self.num_joints, embed=self.embed_dim, hidden=self.hidden,
                    layers=self.n_layers, state_dict={k: v.cpu() for k, v in self.state_dict().items()})

    @classmethod
    def from_state(cls, state: dict) -> "ArticulationPrior":
        """A prior from :meth:`state`'s dict."""
        m = cls(state["num_joints"], state["embed"], state["hidden"], state["layers"])
        m.load_state_dict(state["state_dict"])
        return m.eval()
