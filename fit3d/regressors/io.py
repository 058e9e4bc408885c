"""Reading and writing the keypoint regressor's weights (``fit3d train-regressor`` and ``fit3d
setup-model`` files: the network's ``state()`` saved with ``torch.save``)."""

from __future__ import annotations

from fit3d.data.writers import write_torch
from fit3d.regressors.keypoint_regressor import KeypointRegressor


def save_regressor(model, path, training: dict | None = None) -> None:
    """Save ``model.state()`` atomically (a :class:`KeypointRegressor` or an
    :class:`~fit3d.regressors.ensemble.EnsembleRegressor` of them); ``training``: what made it
    (:func:`fit3d.training.provenance.training_record`), kept under ``"training"``."""
    state = model.state()
    if training is not None:
        state = dict(state, training=training)
    write_torch(path, state)


def load_regressor(path):
    """A regressor saved by :func:`save_regressor`: a :class:`KeypointRegressor`, or an
    :class:`~fit3d.regressors.ensemble.EnsembleRegressor` when the file holds several.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a fit3d regressor (another format, a prior's weights, cut
            short), in one line with the path.
    """
    from fit3d.data.writers import read_torch

    state = read_torch(path)
    try:
        if state.get("kind") == "ensemble":
            from fit3d.regressors.ensemble import EnsembleRegressor

            return EnsembleRegressor.from_state(state, KeypointRegressor)
        return KeypointRegressor.from_state(state)
    except (KeyError, TypeError, RuntimeError) as e:  # missing fields, wrong shapes
        raise ValueError(f"{path} is not a fit3d regressor ({type(e).__name__}: {str(e)[:200]})") from e
