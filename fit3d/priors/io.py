"""Reading and writing the learned priors' weights (``fit3d train-prior`` and ``fit3d setup-model``
files: each prior's ``state()`` saved with ``torch.save``)."""

from __future__ import annotations

from pathlib import Path

from fit3d.priors.articulation import ArticulationPrior
from fit3d.priors.base import Prior
from fit3d.priors.gmm import GMMPrior
from fit3d.priors.prototypes import PoseMemory
from fit3d.priors.vae import VAEPrior


def save_prior(prior: Prior, path: str | Path, training: dict | None = None) -> None:
    """Save a learned prior's ``state()`` with ``torch.save``, atomically; ``training``: what made
    it (:func:`fit3d.training.provenance.training_record`), kept under ``"training"``."""
    from fit3d.data.writers import write_torch

    state = prior.state()
    if training is not None:
        state = dict(state, training=training)
    write_torch(path, state)


def load_prior(path: str | Path) -> Prior:
    """A prior saved by :func:`save_prior`.

    Raises:
        FileNotFoundError: missing file. ValueError: not a prior's weights (another format, an
            unknown kind, missing fields), in one line with the path.
    """
    from fit3d.data.writers import read_torch

    state = read_torch(path)
    kind = state.get("kind")
    cls = {"gmm": GMMPrior, "vae": VAEPrior, "articulation": ArticulationPrior, "prototypes": PoseMemory}.get(kind)
    if cls is None:
        what = f"unknown prior kind {kind!r}" if kind is not None else "no prior kind recorded: not a prior's weights"
        raise ValueError(f"{path}: {what} (fit3d's priors are files of fit3d train-prior or setup-model: "
                         "gmm, vae, articulation, prototypes; VPoser and SMPLify's gmm_08.pkl load by their own "
                         "formats)")
    try:
        return cls.from_state(state)
    except (KeyError, TypeError, RuntimeError) as e:  # missing fields, wrong shapes
        raise ValueError(f"{path} is not a fit3d {kind} prior ({type(e).__name__}: {str(e)[:200]})") from e
