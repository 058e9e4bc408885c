"""Pose priors: one class per prior, all ``prior(body_pose) -> (B,)``.

Learned priors for anny ship in ``fit3d/priors/weights/anny_<kind>.pt``
(reproduce with ``fit3d train-prior``); SMPL-family users load their own
(SMPLify's ``gmm_08.pkl``, a VPoser v2 checkpoint) with ``path``.
"""

from __future__ import annotations

from pathlib import Path

from fit3d.names import PRIORS
from fit3d.priors.articulation import ArticulationPrior
from fit3d.priors.base import Prior
from fit3d.priors.bend import BendPrior
from fit3d.priors.gmm import GMMPrior
from fit3d.priors.l2 import L2Prior
from fit3d.priors.vae import VAEPrior


def shipped_weights(kind: str, model_name: str = "anny") -> Path:
    """Path of the bundled weights of a learned prior (``gmm``, ``vae``, ``articulation``, ``prototypes``)
    for a body model (:func:`fit3d.body_models.weights.bundled_weights`); only anny's ship, so for another
    model the path does not exist (``fit3d setup-model`` makes its weights elsewhere).

    Raises:
        KeyError: an unknown kind (``l2`` has no weights).
    """
    from fit3d.body_models.weights import bundled_weights

    return bundled_weights(kind, model_name)


def build_prior(name: str, body_model=None, path: str | Path | None = None) -> Prior:
    """A pose prior by name.

    Args:
        name: ``l2``, ``gmm``, ``vae`` or ``articulation``.
        body_model: the model the prior is for (its weights: bundled for anny, from
            ``fit3d setup-model`` for the SMPL family; :mod:`fit3d.body_models.weights`);
            None: anny's bundled weights.
        path: weights to load instead: a ``fit3d train-prior`` file, SMPLify's
            ``gmm_08.pkl`` (gmm) or a VPoser v2 checkpoint (vae).
    Raises:
        KeyError: unknown name. FileNotFoundError: no weights for this model
        (the message says how to get them). ValueError: the prior does not
        match the model's number of joints, or ``path`` is given for ``l2`` (which has none).
    """
    from fit3d.priors.io import load_prior

    if name not in PRIORS:
        raise KeyError(f"unknown prior {name!r}; available: {list(PRIORS)}")
    if name == "l2":
        if path is not None:  # (it was ignored: a user meaning --prior gmm got L2 without a word)
            raise ValueError(f"the l2 prior has no weights, so --prior-path {path} (path= in Python) means another "
                             "prior: give its --prior (gmm, vae or articulation)")
        return L2Prior()
    model_name = getattr(body_model, "name", "anny")
    if path is None:
        from fit3d.body_models.weights import existing_weights

        other = ("SMPLify's gmm_08.pkl" if name == "gmm" else "a VPoser v2 checkpoint" if name == "vae"
                 else "a 'fit3d train-prior --kind articulation' file")
        path = (existing_weights(body_model, name, f", or pass --prior-path ({other}; path= in Python)") if body_model is not None
                else shipped_weights(name, "anny"))
    path = Path(path)
    if name == "gmm" and path.suffix == ".pkl":
        prior = GMMPrior.load_smplify_pkl(path)
    elif name == "vae" and path.suffix == ".ckpt":
        prior = VAEPrior.load_vposer_v2(path)
    else:
        prior = load_prior(path)
    if prior.name != name:
        raise ValueError(f"{path} holds a {prior.name} prior, not {name}")
    J = getattr(body_model, "num_body_joints", None)
    n = getattr(prior, "num_joints", None)
    accepted = prior.accepted_joints()
    if J is not None and isinstance(prior, VAEPrior) and J == n + 2:
        prior.for_body(J)  # VPoser's 21 joints on SMPL's 23: hands left out (VAEPrior.for_body)
    elif J is not None and accepted is not None and J not in accepted:  # (a GMM: any J up to its size)
        size = n if n is not None else max(accepted)
        raise ValueError(f"{path}: a {size}-joint prior cannot score the {J} joints of {model_name}")
    elif J is not None and isinstance(prior, GMMPrior) and J != max(accepted) and (max(accepted), J) != (23, 21):
        # the leading-joint marginal is right only where the joints are the same ones: SMPL's 23 for the 21
        # of SMPL-H / SMPL-X bodies; anny's 19 joints are other joints, from the tenth on (found by a review)
        raise ValueError(f"{path}: a GMM of {max(accepted)} joints cannot score the {J} joints of {model_name} (its "
                         "marginal fits only SMPL-H / SMPL-X bodies, 21 joints, with SMPL's 23-joint GMM): train one "
                         "for this model (fit3d setup-model, or fit3d train-prior --kind gmm)")
    return prior.to(body_model.device) if body_model is not None else prior


__all__ = ["Prior", "ArticulationPrior", "BendPrior", "GMMPrior", "L2Prior", "VAEPrior", "PRIORS", "build_prior"]
