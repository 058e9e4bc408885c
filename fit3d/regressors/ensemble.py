"""A deep ensemble of keypoint regressors, fine-tunable by EFT at the cost of one.

Regressors trained alike from different seeds (different recombined pose pools,
synthetic people and batch orders) disagree most on poses unlike their training
data; averaging their predictions is the usual way to cut that variance ("deep
ensembles", Lakshminarayanan, Pritzel, Blundell, NeurIPS 2017). The members'
raw outputs (6D rotations, betas, crop camera before its softplus) are averaged
before decoding, as :mod:`fit3d.regressors.flip` averages a person with its mirror image.

EFT fine-tunes one network per person. Fine-tuning every member would multiply
its cost by their number, so here only the first member is fine-tuned and the
others enter as a fixed correction of its output::

    raw(params) = raw_0(params) + (mean_k raw_k(pretrained_k) - raw_0(pretrained_0))

With the pretrained weights this is the ensemble mean; fine-tuning moves it as it
would move member 0 alone (at the same rate, so EFT's learning rate keeps its
meaning). The correction is computed without gradient from shared weights (one
ordinary forward per member over the batch, small next to the per-person layers).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from fit3d.data.batching import PersonBatch
from fit3d.regressors.base import Regressor
from fit3d.regressors.keypoint_regressor import KeypointRegressor


class EnsembleRegressor(Regressor):
    """The mean of several :class:`~fit3d.regressors.keypoint_regressor.KeypointRegressor`
    (module docstring). Usable wherever one is: ``predict``, EFT (fine-tunes member 0),
    :class:`~fit3d.regressors.flip.FlipAveraged` (wraps the ensemble), NeuralAnnot (trains
    :attr:`first`: :class:`~fit3d.fitters.neuralannot.NeuralAnnot` takes it from an ensemble).
    Not through :class:`~fit3d.regressors.plain.PlainRegressor` (``torch.func.functional_call``
    would swap member 0's weights inside the correction too), which refuses it.

    Args:
        members: two or more regressors of one architecture and size (same keypoints,
            joints, betas, width, blocks, IEF iterations), without prototype heads.

    Raises:
        TypeError: a member is not a :class:`~fit3d.regressors.keypoint_regressor.KeypointRegressor`.
        ValueError: fewer than two members, members of different sizes, or a prototype head
            (each member would pick its own prototype: their outputs are not comparable).

    ``features(batch)`` is ``(B, F)`` (the members read the same inputs); ``forward`` returns
    ``global_orient (B, 3)``, ``body_pose (B, J, 3)``, ``betas (B, S)`` and ``cam (B, 3)``.
    """

    def __init__(self, members) -> None:
        super().__init__()
        members = list(members)
        strangers = sorted({type(m).__name__ for m in members if not isinstance(m, KeypointRegressor)})
        if strangers:
            raise TypeError(f"ensemble members must be KeypointRegressors, not {', '.join(strangers)}")
        if len(members) < 2:
            raise ValueError(f"an ensemble needs two or more regressors, not {len(members)}")
        sizes = {_size(m) for m in members}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members differ in size: {sorted(sizes)}")
        if any(m.num_prototypes for m in members):
            raise ValueError("ensemble members must not have a prototype head")
        self.members = nn.ModuleList(members)
        first = members[0]
        self.num_keypoints, self.num_joints, self.num_betas = first.num_keypoints, first.num_joints, first.num_betas
        self.num_prototypes = 0
        self._last = None  # (key, correction) of the last features seen (see correction)

    @property
    def first(self):
        """Member 0: the one EFT fine-tunes (and NeuralAnnot trains)."""
        return self.members[0]

    def features(self, batch: PersonBatch) -> torch.Tensor:
        """Member 0's ``features`` (every member reads the same)."""
        return self.first.features(batch)

    def fine_tuning_params(self) -> dict[str, torch.Tensor]:
        """Member 0's (see ``KeypointRegressor.fine_tuning_params``)."""
        return self.first.fine_tuning_params()

    def correction(self, features: torch.Tensor) -> torch.Tensor:
        """``mean_k raw_k - raw_0`` with the pretrained weights, without gradient: ``(B, n_params)``
        or ``(B, R, n_params)`` for ``features`` of ``(B, F)`` or ``(B, R, F)``.

        The last correction is reused for the same ``features`` tensor (EFT passes one tensor at
        every step of a batch) while it and the members' parameters and buffers are unmodified
        (their version counters; the tensor is held by a weak reference). Inference tensors
        (``torch.inference_mode``) carry no version counter and are always computed afresh.
        """
        key = None
        if not torch.is_inference(features):
            key = (features._version, tuple(t._version for t in (*self.parameters(), *self.buffers())))
            last = self._last
            if last is not None and last[0]() is features and last[1] == key:
                return last[2]
        with torch.no_grad():
            raws = self._raw_outputs(features)
            out = raws.mean(0) - raws[0]
        self._last = None if key is None else (weakref.ref(features), key, out)
        return out

    def regress_with(self, params: dict[str, torch.Tensor], features: torch.Tensor,
                     prototype: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Member 0's raw output with ``params`` (named as its ``fine_tuning_params``, shared or one
        copy per person) plus :meth:`correction`: ``(B, n_params)`` or ``(B, R, n_params)`` for
        ``features`` of ``(B, F)`` or ``(B, R, F)``, and no extras. Gradients reach ``params`` only.

        Raises:
            ValueError: a ``prototype`` is given (no member has a prototype head).
            KeyError: a parameter is missing from ``params``.
        """
        if prototype is not None:
            raise ValueError("an ensemble has no prototype head")
        p, _ = self.first.regress_with(params, features)
        return p + self.correction(features), {}

    def forward_with(self, params: dict[str, torch.Tensor], features: torch.Tensor,
                     prototype: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """:meth:`forward` with member 0's parameters replaced by ``params`` (see :meth:`regress_with`).

        Raises:
            ValueError, KeyError: as :meth:`regress_with`.
        """
        p, _ = self.regress_with(params, features, prototype)
        return self.decode(p)

    def forward(self, features: torch.Tensor, prototype: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``(B, F)`` -> the decoded mean of the members' raw outputs (``global_orient (B, 3)``,
        ``body_pose (B, J, 3)``, ``betas (B, S)``, ``cam (B, 3)``). Differentiable through every
        member, but the ensemble is not trained as one module: each member is trained alone
        (:func:`fit3d.training.regressor.train_ensemble`).

        Raises:
            ValueError: a ``prototype`` is given.
        """
        if prototype is not None:
            raise ValueError("an ensemble has no prototype head")
        return self.decode(self._raw_outputs(features).mean(0))

    def _raw_outputs(self, features: torch.Tensor) -> torch.Tensor:
        """``(members, ..., n_params)``: each member's raw output with its own weights."""
        return torch.stack([m.regress_with(m.fine_tuning_params(), features)[0] for m in self.members])

    def __getstate__(self) -> dict:
        """The module without the kept correction (a weak reference pickles not; a copy recomputes it)."""
        return {**self.__dict__, "_last": None}

    def decode(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """Member 0's ``decode`` (every member decodes alike)."""
        return self.first.decode(p)

    def mirror_map(self, joint_perm) -> tuple[torch.Tensor, torch.Tensor]:
        """Member 0's ``mirror_map`` (the raw outputs share one layout)."""
        return self.first.mirror_map(joint_perm)

    def state(self) -> dict:
        """What :meth:`from_state` needs: ``kind="ensemble"`` and each member's ``state()``."""
        return dict(kind="ensemble", members=[m.state() for m in self.members])

    @classmethod
    def from_state(cls, state: dict, member_cls) -> "EnsembleRegressor":
        """An ensemble from :meth:`state`, each member built by ``member_cls.from_state``.

        Raises:
            KeyError: ``state`` lacks ``members`` or a member's fields.
            ValueError, TypeError: as the constructor.
        """
        return cls([member_cls.from_state(s) for s in state["members"]]).eval()


def _size(m) -> tuple:
    """What must agree between members: their sizes."""
    return (m.num_keypoints, m.num_joints, m.num_betas, m.width, m.n_blocks, m.iterations)
