"""A keypoint-conditioned 3D body regressor (2D-to-3D lifting with iterative error feedback).

Inputs, per person: the K keypoints normalised to the square box around the
person (``(p - c) / (b / 2)``, in [-1, 1]) times their labelled mask, the
mask (1 where the confidence is above 0, else 0), and CLIFF's box information ``((c - p) / f, b / f)`` so that the
full-frame camera is recoverable (Li et al., ECCV 2022). An MLP trunk
(residual blocks with LayerNorm, no BatchNorm, no dropout: EFT's per-sample
fine-tuning needs nothing frozen) feeds HMR's iterative error feedback
(Kanazawa et al., CVPR 2018): three refinements of ``[global orientation 6D,
body pose 6D per joint, betas, crop camera]`` from the mean parameters.
Rotations are 6D inside (Zhou et al. 2019), axis-angle outside.

The network sees whether a point is labelled, not how sure a detector was: it is
trained on annotations (confidence 0 or 1), and a detector's graded scores (~0.6 for
OpenPose) fed in as they are shrank every point toward the box centre, far outside
what it learned (validation people with detector-like scores: 71 mm PA-MPJPE alone
against 54 with labels; docs/experiments.md). Fitters weight their losses by the
confidence itself.
"""

from __future__ import annotations

import roma
import torch
from torch import nn

from fit3d.data.batching import PersonBatch
from fit3d.priors.rotations import rotvec_to_sixd, sixd_to_rotmat
from fit3d.regressors.base import Regressor, regressor_box
from fit3d.regressors.functional import layer_norm, linear


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, x):
        return x + self.net(x)


class KeypointRegressor(Regressor):
    """See module docstring.

    Args:
        num_keypoints: K (the body model's keypoint convention).
        num_joints: J of ``body_pose``. num_betas: S.
        width: trunk width. blocks: residual blocks. iterations: IEF steps.
        prototypes: optional ``(P, J, 3)`` prototype body poses (axis-angle) to start from.

    Raises:
        ValueError: ``prototypes`` not ``(P, num_joints, 3)``.
    """

    def __init__(self, num_keypoints: int, num_joints: int, num_betas: int, width: int = 192, blocks: int = 2,
                 iterations: int = 3, prototypes: torch.Tensor | None = None) -> None:
        super().__init__()
        self.num_keypoints, self.num_joints, self.num_betas = num_keypoints, num_joints, num_betas
        self.width, self.n_blocks, self.iterations = width, blocks, iterations
        n_in = num_keypoints * 3 + 3
        self.n_params = 6 + 6 * num_joints + num_betas + 3
        self.inp = nn.Linear(n_in, width)
        self.trunk = nn.Sequential(*[_Block(width) for _ in range(blocks)])
        self.ief = nn.Sequential(nn.Linear(width + self.n_params, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, self.n_params))
        nn.init.zeros_(self.ief[-1].weight)
        nn.init.zeros_(self.ief[-1].bias)
        eye6 = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])  # identity in the (3, 2) column layout
        # upright, facing the camera (OpenCV): R_x(pi) = diag(1, -1, -1)
        facing = torch.tensor([1.0, 0.0, 0.0, -1.0, 0.0, 0.0])
        init = torch.cat([facing, eye6.repeat(num_joints), torch.zeros(num_betas), torch.tensor([0.9, 0.0, 0.0])])
        self.register_buffer("init_params", init)
        self.num_prototypes = 0 if prototypes is None else len(prototypes)
        if self.num_prototypes:
            protos = torch.as_tensor(prototypes, dtype=torch.float32)
            if protos.shape[1:] != (num_joints, 3):
                raise ValueError(f"prototypes must be (P, {num_joints}, 3), not {tuple(protos.shape)}")
            self.register_buffer("prototypes", protos)
            self.register_buffer("prototype_sixd", rotvec_to_sixd(protos).flatten(1))  # (P, 6J)
            self.select = nn.Linear(width, self.num_prototypes)
            nn.init.zeros_(self.select.weight)
            nn.init.zeros_(self.select.bias)

    def features(self, batch: PersonBatch) -> torch.Tensor:
        """``(B, 3K + 3)`` normalised keypoints (zero where unlabelled), the labelled mask (confidence
        above 0) and CLIFF box features; see the module docstring."""
        kp = batch.keypoints_2d
        box = regressor_box(batch)
        b = box[:, 2:].max(-1).values.clamp(min=1.0)
        c = box[:, :2] + 0.5 * box[:, 2:]
        labelled = (kp[..., 2:] > 0).to(kp.dtype)
        xy = (kp[..., :2] - c[:, None]) / (b[:, None, None] / 2) * labelled
        f = batch.focal_length.mean(-1)
        cliff = torch.cat([(c - batch.principal_point) / f[:, None], (b / f)[:, None]], -1)
        return torch.cat([xy.flatten(1), labelled.flatten(1), cliff], -1)

    def forward(self, features: torch.Tensor, prototype: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``(B, F)`` -> ``global_orient (B, 3)``, ``body_pose (B, J, 3)``, ``betas (B, S)``, ``cam (B, 3)``;
        with prototypes also ``prototype_logits (B, P)`` and ``prototype (B,)``, the start used
        (``prototype`` given: that one, else the head's pick)."""
        return self.forward_with(self.fine_tuning_params(), features, prototype)

    def fine_tuning_params(self) -> dict[str, torch.Tensor]:
        """The parameters as :meth:`forward_with` reads them most cheaply per person: by
        ``named_parameters`` name, except IEF's first weight split by columns into
        ``ief.0.weight.h`` (the trunk features, the same at every IEF iteration, so its
        per-person gradient is one outer product instead of one per iteration) and
        ``ief.0.weight.p`` (the current parameters). Element-wise optimisers (Adam) give
        the same steps on the split as on the whole.

        Returns:
            name -> tensor; ``ief.0.weight.h`` is ``(width, width)`` and ``ief.0.weight.p``
            ``(width, n_params)``, views of the module's weight (not leaves: copy them before
            handing them to a ``torch.optim`` optimiser, as EFT does per person).
        """
        params = dict(self.named_parameters())
        w = params.pop("ief.0.weight")
        params["ief.0.weight.h"], params["ief.0.weight.p"] = w[:, : self.width], w[:, self.width :]
        return params

    def forward_with(self, params: dict[str, torch.Tensor], features: torch.Tensor,
                     prototype: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """:meth:`forward` with the given parameters (named as :meth:`fine_tuning_params` names
        them) instead of the module's. Each may be shared (its usual shape) or one copy per
        person (a leading ``B`` dimension): batched EFT fine-tunes the per-person ones (see
        :mod:`fit3d.regressors.functional`).

        Raises:
            KeyError: a parameter is missing from ``params``.
        """
        p, extra = self.regress_with(params, features, prototype)
        return {**self.decode(p), **extra}

    def regress_with(self, params: dict[str, torch.Tensor], features: torch.Tensor,
                     prototype: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The raw IEF output before :meth:`decode`: ``(..., n_params)`` = ``[global orientation 6D,
        body pose 6D per joint, betas, crop camera before its softplus]``, for ``features`` of
        ``(B, F)`` or ``(B, R, F)`` (``R`` rows per person through the same per-person weights),
        and the prototype extras (see :meth:`forward`).

        Raises:
            KeyError: a parameter is missing from ``params``.
        """
        def lin(name: str, x: torch.Tensor) -> torch.Tensor:
            return linear(x, params[name + ".weight"], params[name + ".bias"])

        h = lin("inp", features)
        for i in range(self.n_blocks):
            pre = f"trunk.{i}.net."
            y = layer_norm(h, params[pre + "0.weight"], params[pre + "0.bias"])
            h = h + lin(pre + "3", nn.functional.silu(lin(pre + "1", y)))
        p = self.init_params.expand(*features.shape[:-1], -1)
        extra = {}
        if self.num_prototypes:
            logits = lin("select", h)
            pick = logits.argmax(-1) if prototype is None else prototype
            J6 = 6 * self.num_joints
            p = torch.cat([p[..., :6], self.prototype_sixd[pick], p[..., 6 + J6:]], -1)
            extra = dict(prototype_logits=logits, prototype=pick)
        # IEF's first layer on [h, p] = h's columns (h is the same every iteration: once) + p's columns
        hz = linear(h, params["ief.0.weight.h"], params["ief.0.bias"])
        for _ in range(self.iterations):
            z = nn.functional.silu(hz + linear(p, params["ief.0.weight.p"]))
            p = p + lin("ief.4", nn.functional.silu(lin("ief.2", z)))
        return p, extra

    def decode(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`regress_with`'s ``(B, n_params)`` -> ``global_orient (B, 3)``, ``body_pose (B, J, 3)``
        axis-angle, ``betas (B, S)``, ``cam (B, 3)`` (positive scale)."""
        J, S = self.num_joints, self.num_betas
        rot = sixd_to_rotmat(p[:, : 6 + 6 * J].reshape(-1, J + 1, 6))
        aa = roma.rotmat_to_rotvec(rot)
        cam = p[:, -3:]
        cam = torch.cat([nn.functional.softplus(cam[:, :1] * 5) / 5 + 1e-3, cam[:, 1:]], -1)
        return dict(global_orient=aa[:, 0], body_pose=aa[:, 1:], betas=p[:, 6 + 6 * J : 6 + 6 * J + S], cam=cam)

    def mirror_map(self, joint_perm) -> tuple[torch.Tensor, torch.Tensor]:
        """The left-right mirror of the raw output as one gather and one sign: ``p[:, index] * sign``
        (both ``(n_params,)``, on this module's device) is the raw output of the mirrored person.
        Every rotation ``R`` (root and joints) becomes ``M R M`` with ``M = diag(-1, 1, 1)`` (in the
        6D layout, a sign per entry), ``body_pose`` joints swap sides by ``joint_perm`` (``(J,)``,
        e.g. :func:`fit3d.data.conventions.mirror_permutation` of the body joint names), the crop
        camera's ``tx`` changes sign; ``betas`` are kept (as in SPIN's flip augmentation).
        Computed once by :class:`~fit3d.regressors.flip.FlipAveraged`, not per step.

        Raises:
            ValueError: ``joint_perm`` does not have J entries.
        """
        J = self.num_joints
        perm = torch.as_tensor(joint_perm, dtype=torch.long).cpu()
        if perm.shape != (J,):
            raise ValueError(f"joint_perm must have {J} entries, not {tuple(perm.shape)}")
        s = torch.tensor([1.0, -1.0, -1.0])
        sign6 = (s[:, None] * s[None, :2]).reshape(6)  # M R M on the (3, 2) row-major columns
        order = torch.cat([perm.new_zeros(1), 1 + perm])  # the root stays first
        index = torch.cat([(order[:, None] * 6 + torch.arange(6)).reshape(-1), torch.arange(6 + 6 * J, self.n_params)])
        sign = torch.cat([sign6.repeat(J + 1), torch.ones(self.n_params - 6 - 6 * J)])
        sign[-2] = -1.0  # the crop camera is (s, tx, ty)
        dev = self.init_params.device
        return index.to(dev), sign.to(device=dev, dtype=self.init_params.dtype)

    def mirror_params(self, p: torch.Tensor, joint_perm) -> torch.Tensor:
        """The raw output ``(B, n_params)`` of the left-right mirrored people (:meth:`mirror_map`).

        Raises:
            ValueError: ``joint_perm`` does not have J entries.
        """
        index, sign = self.mirror_map(joint_perm)
        return p[:, index.to(p.device)] * sign.to(p)

    def blank(self) -> "KeypointRegressor":
        """A new network of this one's sizes and prototypes (on the CPU), its weights drawn as the
        constructor draws them, from torch's current random state: what training from scratch
        starts from (the LayerNorm gains at 1, the last IEF layer and the prototype choice at 0)."""
        protos = self.prototypes.detach().cpu() if self.num_prototypes else None
        return type(self)(self.num_keypoints, self.num_joints, self.num_betas, self.width, self.n_blocks,
                          self.iterations, prototypes=protos)

    def state(self) -> dict:
        """What :meth:`from_state` needs (sizes and weights)."""
        return dict(kind="keypoint_regressor", num_keypoints=self.num_keypoints, num_joints=self.num_joints,
                    num_betas=self.num_betas, width=self.width, blocks=self.n_blocks, iterations=self.iterations,
                    num_prototypes=self.num_prototypes, state_dict={k: v.cpu() for k, v in self.state_dict().items()})

    @classmethod
    def from_state(cls, state: dict) -> "KeypointRegressor":
        """A regressor from :meth:`state`."""
        protos = state["state_dict"].get("prototypes") if state.get("num_prototypes") else None
        m = cls(state["num_keypoints"], state["num_joints"], state["num_betas"], state["width"], state["blocks"],
                state["iterations"], prototypes=protos)
        m.load_state_dict(state["state_dict"])
        return m.eval()
