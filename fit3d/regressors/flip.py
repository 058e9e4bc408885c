"""Flip test-time augmentation: a regressor's prediction averaged with its mirror image's.

Each person goes through the network twice, as seen and mirrored left-right
(image x negated, left and right keypoints swapped), and the mirrored
prediction, mirrored back, is averaged with the direct one in the network's raw
output space (6D rotations, betas, crop camera) before decoding. Flip averaging is
the usual test-time augmentation of HMR-style regressors (e.g. SPIN's and
HMR 2.0's evaluation code average flipped predictions). Both rows share the
person's weights, so EFT fine-tunes one network per person through the averaged
prediction (:mod:`fit3d.regressors.functional` runs the two rows per person).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import torch

from fit3d.body_models.base import BodyModel
from fit3d.data.batching import PersonBatch
from fit3d.data.conventions import mirror_permutation
from fit3d.regressors.base import Regressor


def mirror_batch(batch: PersonBatch, keypoint_perm) -> PersonBatch:
    """People mirrored left-right about the image's x = 0 line: keypoint, box and principal point
    x negated (the box keeps its top-left corner convention) and keypoints re-ordered by
    ``keypoint_perm`` (``(K,)`` array or tensor, :func:`~fit3d.data.conventions.mirror_permutation`),
    so a left wrist becomes the mirrored person's right wrist. The camera intrinsics are otherwise kept."""
    kp = batch.keypoints_2d[:, torch.as_tensor(keypoint_perm, device=batch.keypoints_2d.device)]
    kp = torch.cat([-kp[..., :1], kp[..., 1:]], -1)
    box = torch.cat([-(batch.bbox[:, :1] + batch.bbox[:, 2:3]), batch.bbox[:, 1:]], -1)
    pp = torch.cat([-batch.principal_point[:, :1], batch.principal_point[:, 1:]], -1)
    return replace(batch, keypoints_2d=kp, bbox=box, principal_point=pp)


class FlipAveraged(Regressor):
    """A :class:`~fit3d.regressors.keypoint_regressor.KeypointRegressor` with flip test-time
    augmentation (module docstring). Usable wherever the regressor is (EFT, ``predict``).

    Args:
        inner: the regressor (needs ``regress_with``, ``decode`` and ``mirror_map``; no
            prototype head: a prototype has no mirror image in the memory).
        body_model: gives the keypoint and joint names that define left and right.

    Raises:
        TypeError: ``inner`` lacks ``regress_with``, ``decode`` or ``mirror_map``.
        ValueError: ``inner`` has a prototype head, or a sided keypoint or joint name has no
            counterpart (:func:`~fit3d.data.conventions.mirror_permutation`).

    ``features(batch)`` is ``(B, 2, F)`` (the person, then its mirror image); ``forward`` and
    ``forward_with`` return what the inner regressor's do, without prototype extras.
    """

    def __init__(self, inner, body_model: BodyModel) -> None:
        super().__init__()
        missing = [m for m in ("regress_with", "decode", "mirror_map") if not hasattr(inner, m)]
        if missing:
            raise TypeError(f"flip averaging needs a regressor with {', '.join(missing)} "
                            f"(a KeypointRegressor); {type(inner).__name__} has none")
        if getattr(inner, "num_prototypes", 0):
            raise ValueError("flip averaging needs a regressor without a prototype head")
        self.inner = inner
        self.num_joints, self.num_betas = inner.num_joints, inner.num_betas
        # buffers, on the inner regressor's device: they follow .to(device), so nothing is built
        # or copied to the GPU per step
        dev = next((p.device for p in inner.parameters()), torch.device("cpu"))
        perm = torch.as_tensor(mirror_permutation(body_model.keypoint_convention.names))
        index, sign = inner.mirror_map(mirror_permutation(list(body_model.joint_names)[1:]))
        self.register_buffer("keypoint_perm", perm.to(dev))
        self.register_buffer("mirror_index", index.to(dev))
        self.register_buffer("mirror_sign", sign.to(dev))

    def features(self, batch: PersonBatch) -> torch.Tensor:
        """``(B, 2, F)``: the inner features of each person and of its mirror image."""
        return torch.stack([self.inner.features(batch), self.inner.features(mirror_batch(batch, self.keypoint_perm))], 1)

    def fine_tuning_params(self) -> dict[str, torch.Tensor]:
        """The inner regressor's (see ``KeypointRegressor.fine_tuning_params``)."""
        return self.inner.fine_tuning_params()

    def forward(self, features: torch.Tensor, prototype: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``(B, 2, F)`` features -> the averaged prediction (see ``KeypointRegressor.forward``)."""
        return self.forward_with(self.fine_tuning_params(), features, prototype)

    def forward_with(self, params: dict[str, torch.Tensor], features: torch.Tensor,
                     prototype: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The averaged prediction with the given (shared or per-person) parameters.

        Raises:
            ValueError: ``features`` is not ``(B, 2, F)`` or a ``prototype`` is given.
        """
        if features.dim() != 3 or features.shape[1] != 2:
            raise ValueError(f"flip-averaged features are (B, 2, F), not {tuple(features.shape)}")
        if prototype is not None:
            raise ValueError("flip averaging has no prototype head")
        p, _ = self.inner.regress_with(params, features)
        return self.inner.decode(0.5 * (p[:, 0] + p[:, 1, self.mirror_index] * self.mirror_sign))


def with_flip(regressor, body_model: BodyModel, flip: bool = True):
    """``regressor`` wrapped in :class:`FlipAveraged` when ``flip`` is asked for and it can be:
    a regressor with a prototype head has no mirror for its prototypes and is returned as it is,
    with a warning pointing at the caller of the function that called this one (e.g. of
    :func:`fit3d.fitters.build.build_eft`).

    Raises:
        TypeError, ValueError: as :class:`FlipAveraged` (a regressor without the needed methods,
            a sided name without its counterpart).
    """
    if not flip:
        return regressor
    if getattr(regressor, "num_prototypes", 0):
        warnings.warn("flip averaging skipped: the regressor has a prototype head (no mirror for its prototypes)",
                      stacklevel=3)
        return regressor
    return FlipAveraged(regressor, body_model)
