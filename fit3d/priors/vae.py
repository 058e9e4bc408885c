"""VPoser-style variational pose prior (Pavlakos et al., CVPR 2019; VPoser v2 layout).

Encoder: flatten -> BatchNorm -> Linear(3J, H) -> LeakyReLU -> BatchNorm -> Dropout
-> Linear(H, H) -> Linear(H, H) -> Normal(mu = Linear(H, Z), sigma = softplus(Linear(H, Z))).
Decoder: Linear(Z, H) -> LeakyReLU -> Dropout -> Linear(H, H) -> LeakyReLU ->
Linear(H, 6J) -> 6D rotations -> axis-angle. With ``J = 21, H = 512, Z = 32``
the module names and shapes are VPoser v2's, so its checkpoints load with
:meth:`VAEPrior.load_vposer_v2`.

Two uses:
* a cost on a pose: ``|mu(pose)|^2 + recon_weight * |decode(mu(pose)) - R(pose)|^2``
  (the latent norm plus the squared chordal distance to the learned manifold);
* a reparameterisation: optimise ``z`` and use ``decode(z)`` as ``body_pose``,
  with ``|z|^2`` as the prior (SMPLify-X's use of VPoser).
"""

from __future__ import annotations

from pathlib import Path

import roma
import torch
from torch import nn

from fit3d.priors.base import Prior
from fit3d.priors.rotations import sixd_to_rotmat


class _NormalHead(nn.Module):
    def __init__(self, n_in: int, n_latent: int) -> None:
        super().__init__()
        self.mu = nn.Linear(n_in, n_latent)
        self.logvar = nn.Linear(n_in, n_latent)

    def forward(self, x):
        return self.mu(x), nn.functional.softplus(self.logvar(x))


class _SixD(nn.Module):
    def forward(self, x):
        return sixd_to_rotmat(x.reshape(x.shape[0], x.shape[1] // 6, 6))  # (B may be 0)


class VAEPrior(Prior):
    """VPoser-style VAE over ``(B, J, 3)`` body poses.

    Args:
        num_joints: J. hidden: H. latent: Z.
        recon_weight: weight of the manifold distance in the pose cost.
    """

    name = "vae"
    weight_scale = 0.3  # tuned on the training-trial benchmark (benchmarks/tune_smplify.py)

    def __init__(self, num_joints: int = 19, hidden: int = 512, latent: int = 32, recon_weight: float = 10.0) -> None:
        super().__init__()
        self.num_joints, self.latent_dim, self.hidden = num_joints, latent, hidden
        self.recon_weight = recon_weight
        #: J of the poses :meth:`decode` returns: ``num_joints``, or ``num_joints + 2`` for a
        #: 21-joint VAE (VPoser) on SMPL, whose two extra joints (the hands) come back at rest
        #: (see :meth:`for_body`).
        self.output_joints = num_joints
        n = num_joints * 3
        self.encoder_net = nn.Sequential(
            nn.Flatten(), nn.BatchNorm1d(n), nn.Linear(n, hidden), nn.LeakyReLU(), nn.BatchNorm1d(hidden),
            nn.Dropout(0.1), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), _NormalHead(hidden, latent),
        )  # fmt: skip
        self.decoder_net = nn.Sequential(
            nn.Linear(latent, hidden), nn.LeakyReLU(), nn.Dropout(0.1), nn.Linear(hidden, hidden), nn.LeakyReLU(),
            nn.Linear(hidden, num_joints * 6), _SixD(),
        )  # fmt: skip

    def for_body(self, num_body_joints: int) -> "VAEPrior":
        """Use this VAE for a body with ``num_body_joints`` rotations: its own number, or two
        more (SMPL's 23 with a 21-joint SMPL-H / SMPL-X body VAE such as VPoser: SMPL's first 21
        joints are the same joints, the last two are the hands, scored by nothing here).

        Raises:
            ValueError: any other number.
        """
        if num_body_joints not in (self.num_joints, self.num_joints + 2):
            raise ValueError(f"a {self.num_joints}-joint VAE cannot score {num_body_joints} body joints")
        self.output_joints = num_body_joints
        return self

    def _own(self, body_pose: torch.Tensor) -> torch.Tensor:
        return body_pose[:, : self.num_joints]

    def encode(self, body_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, J, 3)`` -> ``(mu (B, Z), sigma (B, Z))``."""
        return self.encoder_net(self._own(body_pose))

    def decode_rotmat(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, Z)`` -> ``(B, J, 3, 3)``."""
        return self.decoder_net(latent)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, Z)`` -> ``(B, output_joints, 3)`` axis-angle (extra joints at rest)."""
        pose = roma.rotmat_to_rotvec(self.decode_rotmat(latent))
        extra = self.output_joints - self.num_joints
        return torch.cat([pose, pose.new_zeros(pose.shape[0], extra, 3)], 1) if extra else pose

    def accepted_joints(self) -> set[int]:
        """Its own joints, and the body's when :meth:`for_body` widened them (the extra ones unscored)."""
        return {self.num_joints, self.output_joints}

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """``(B, J, 3)`` -> ``(B,)``: latent norm plus weighted squared chordal distance to the decoded pose."""
        body_pose = self._own(body_pose)
        mu, _ = self.encode(body_pose)
        rec = self.decode_rotmat(mu)
        R = roma.rotvec_to_rotmat(body_pose)
        return mu.pow(2).sum(-1) + self.recon_weight * (rec - R).pow(2).sum((-1, -2, -3))

    # ---------------------------------------------------------------- io
    def state(self) -> dict:
        """What :meth:`from_state` needs (sizes and weights, on the CPU)."""
        return dict(kind="vae", num_joints=self.num_joints, hidden=self.hidden, latent=self.latent_dim,
                    recon_weight=self.recon_weight, state_dict={k: v.cpu() for k, v in self.state_dict().items()})

    @classmethod
    def from_state(cls, state: dict) -> "VAEPrior":
        """A prior from :meth:`state`'s dict."""
        m = cls(state["num_joints"], state["hidden"], state["latent"], state.get("recon_weight", 10.0))
        m.load_state_dict(state["state_dict"])
        return m.eval()

    @classmethod
    def load_vposer_v2(cls, path_or_state: str | Path | dict, recon_weight: float = 10.0) -> "VAEPrior":
        """A VPoser v2 checkpoint (21 joints, SMPL-X body) as a :class:`VAEPrior`.

        Accepts a ``.ckpt``/``.pt`` path or a state dict, with or without a
        ``state_dict`` wrapper and ``vp_model.`` / ``model.`` / ``module.`` prefixes. In a
        checkpoint of human_body_prior's trainer (the released ``V02_05`` files) only the
        ``vp_model.`` weights are VPoser's: the rest (its training body model's buffers,
        ``bm_train.*``) is left out, as human_body_prior's own loader leaves it.

        Raises:
            KeyError / RuntimeError: the keys or shapes are not VPoser v2's.
        """
        sd = path_or_state
        if not isinstance(sd, dict):
            sd = torch.load(path_or_state, map_location="cpu", weights_only=False)
        if "state_dict" in sd:
            sd = sd["state_dict"]
        if any(k.startswith("vp_model.") for k in sd):  # a trainer's checkpoint: VPoser is its vp_model
            sd = {k: v for k, v in sd.items() if k.startswith("vp_model.")}
        clean = {}
        for k, v in sd.items():
            for prefix in ("vp_model.", "model.", "module."):
                if k.startswith(prefix):
                    k = k[len(prefix):]
            clean[k] = v
        hidden, n = clean["encoder_net.2.weight"].shape
        latent = clean["encoder_net.8.mu.weight"].shape[0]
        m = cls(num_joints=n // 3, hidden=hidden, latent=latent, recon_weight=recon_weight)
        m.load_state_dict(clean, strict=True)
        return m.eval()
