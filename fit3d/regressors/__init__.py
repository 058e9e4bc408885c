"""Pretrained 3D body regressors (the starting point of EFT and NeuralAnnot).

Interface (:class:`~fit3d.regressors.base.Regressor`): ``features(batch) -> (B, F)``
inputs computed from a :class:`~fit3d.data.batching.PersonBatch` (``(B, R, F)``, R rows per
person, for :class:`~fit3d.regressors.flip.FlipAveraged`: the person and its mirror image), and
``forward(features) -> dict(global_orient, body_pose, betas, cam)``; EFT fine-tunes
``forward`` per sample (through ``forward_with`` and per-person layers when the
regressor has them, :mod:`fit3d.regressors.functional`; else with ``torch.func``). An
image-conditioned HMR/SPIN regressor (ResNet-50 + IEF) plugs in by computing
its features from image crops in ``features`` (give it the images) and
keeping the same ``forward`` outputs.
"""

from pathlib import Path


def bundled_regressor(model_name: str = "anny") -> Path:
    """Path of the pretrained keypoint regressor shipped for a body model (``fit3d train-regressor`` output;
    :func:`fit3d.body_models.weights.bundled_weights`). Only anny's ships: for another model the path
    does not exist (``fit3d setup-model`` trains one into the model's weights folder)."""
    from fit3d.body_models.weights import bundled_weights

    return bundled_weights("regressor", model_name)
