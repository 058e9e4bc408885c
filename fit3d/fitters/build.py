"""Fitters built by name from the bundled (or given) weights: what the command line
and the benchmarks need, in one place.

Errors are raised as ``ValueError`` / ``FileNotFoundError`` with a message that
says what to do (an unknown prior name: ``KeyError``, as :func:`fit3d.priors.build_prior`
raises it); the command line turns them into clean errors.
"""

from __future__ import annotations

from pathlib import Path

from fit3d.body_models.base import BodyModel
from fit3d.fitters.eft import EFT, FINETUNE_PRESETS
from fit3d.fitters.fallback import Fallback
from fit3d.fitters.follow import FollowConfig
from fit3d.fitters.neuralannot import RECIPES, NeuralAnnot, TrainConfig
from fit3d.fitters.smplify import SMPLify
from fit3d.fitters.stages import load_schedule
from fit3d.regressors.flip import with_flip
from fit3d.priors import build_prior

#: SMPLify's default pose prior (the best on the synthetic held-out benchmark, see README).
DEFAULT_PRIOR = "gmm"
#: EFT steps per person after NeuralAnnot's prediction when ``refine`` is asked for.
NEURALANNOT_REFINE_STEPS = 30


def load_prototypes(body: BodyModel, path: str | Path | None = None):
    """The prototype memory (PM-Net starts) for ``body``: ``path``, else the bundled one, else None
    (no memory is bundled for this model).

    Raises:
        FileNotFoundError: ``path`` is given and is no file (it gave no prototypes, silently).
        ValueError: the file is not a prototype memory for ``body``.
    """
    from fit3d.body_models.weights import weights_path
    from fit3d.priors.io import load_prior

    if path and not Path(path).is_file():
        raise FileNotFoundError(f"prototype memory {path}: no such file")
    path = Path(path) if path else weights_path(body, "prototypes")
    if not path.is_file():
        return None
    memory = load_prior(path)
    if memory.name != "prototypes" or memory.num_joints != body.num_body_joints:
        raise ValueError(f"{path} is not a prototype memory for the {body.name} model")
    return memory


def _require_body(body) -> None:
    """Raise TypeError unless ``body`` is a built body model (a name is not one)."""
    if not isinstance(body, BodyModel):
        raise TypeError(f"body must be a body model, not {body!r}: build one with "
                        "fit3d.body_models.build_body_model('anny') (or 'smpl', ... with its model_path)")


def build_smplify(body: BodyModel, prior: str | None = None, prior_path: str | Path | None = None,
                  schedule: str | Path | None = None, pose_space: str = "axis_angle", hypotheses: int = 2,
                  prototypes: bool | str | Path = True, depth_flips: bool = True) -> SMPLify:
    """SMPLify with a pose prior by name, the prototype memory and an optional stage schedule file.

    Args:
        body: the body model.
        prior: ``l2``, ``gmm``, ``vae`` or ``articulation``; default :data:`DEFAULT_PRIOR`
            (bundled for anny; SMPL-family models need ``fit3d setup-model`` or ``prior_path``).
        prior_path: prior weights (see :func:`fit3d.priors.build_prior`).
        schedule: JSON/YAML stage list (see :func:`fit3d.fitters.stages.load_schedule`).
        pose_space: ``axis_angle`` or ``latent`` (VAE prior).
        hypotheses: orientation hypotheses kept per person after the camera stage.
        prototypes: True: the model's prototype memory (when there is one);
            a path: that memory; False: starts from the rest pose only.
        depth_flips: fit the limb depth-flip alternatives too.
    Raises:
        KeyError: unknown prior name. FileNotFoundError: no weights for the prior. ValueError:
        the prior or the prototypes do not fit the model, or the schedule is not valid. TypeError:
        ``body`` is no body model (e.g. its name).
    """
    _require_body(body)
    if prior is None:  # bundled for anny; from 'fit3d setup-model' for the SMPL family
        prior = DEFAULT_PRIOR
    pose_prior = build_prior(prior, body, prior_path)
    stages = load_schedule(schedule) if schedule else None
    memory = load_prototypes(body, None if prototypes is True else prototypes) if prototypes else None
    return SMPLify(body, prior=pose_prior, schedule=stages, keep_hypotheses=hypotheses, pose_space=pose_space,
                   prototypes=memory, depth_flips=depth_flips)


def load_body_regressor(body: BodyModel, regressor_path: str | Path | None = None,
                        option: str | None = "--regressor (regressor_path= in Python)"):
    """The pretrained keypoint regressor for ``body``: ``regressor_path`` or the bundled one.
    ``option``: the caller's option that names a regressor file, for the message when there is
    none (None: the caller has no such option).

    Raises:
        FileNotFoundError: no such file (none is bundled for this model).
        ValueError: the regressor was trained for another body model.
    """
    from fit3d.body_models.weights import existing_weights
    from fit3d.regressors.io import load_regressor

    path = regressor_path or existing_weights(body, "regressor", f" (or pass {option})" if option else "")
    reg = load_regressor(path)
    if reg.num_keypoints != len(body.keypoint_convention) or reg.num_joints != body.num_body_joints:
        raise ValueError(f"{path} was trained for another body model")
    return reg


def check_prior_path(prior: str | None, prior_path) -> None:
    """EFT's extra prior: weights given without the prior's name (they were ignored: EFT ran
    without the prior the user meant).

    Raises:
        ValueError: ``prior_path`` without ``prior``.
    """
    if prior_path is not None and not prior:
        raise ValueError(f"--prior-path {prior_path} (prior_path= in Python) is given without --prior (prior=): say "
                         "which prior it holds (gmm, vae or articulation)")


def build_eft(body: BodyModel, regressor_path: str | Path | None = None, steps: int | None = None,
              lr: float | None = None, prior: str | None = None, prior_path: str | Path | None = None,
              refine: bool = False, finetune: str = "all", flip: bool = True,
              fallback: bool = False, follow: bool = False) -> EFT | Fallback:
    """EFT on the pretrained regressor (:func:`load_body_regressor`), with EFT's own defaults
    for ``steps`` and ``lr`` when they are None and an optional extra pose prior.

    ``flip``: flip test-time augmentation (:class:`~fit3d.regressors.flip.FlipAveraged`: each
    person's prediction averaged with its mirror image's, fine-tuned through the average); a
    regressor with a prototype head has no mirror for its prototypes and runs without it (with
    a warning).

    ``fallback``: also fit SMPLify (:func:`build_smplify`'s defaults) and keep its fit per person
    where it reprojects much closer (:class:`~fit3d.fitters.fallback.Fallback`; returns that
    :class:`Fallback` instead of the :class:`EFT`).

    ``follow``: follow the keypoints from EFT's output where that pays
    (:mod:`fit3d.fitters.follow`, its default :class:`~fit3d.fitters.follow.FollowConfig`).

    ``finetune``: a preset of :data:`fit3d.fitters.eft.FINETUNE_PRESETS` (which weights are
    fine-tuned per person, EFT's ``accept_ratio``, and the learning rate used when ``lr`` is None).

    Raises:
        FileNotFoundError, ValueError, KeyError: see :func:`load_body_regressor` and
        :func:`fit3d.priors.build_prior`. ValueError: ``prior_path`` without ``prior``, ``steps`` < 0,
        ``lr`` <= 0, an unknown
        ``finetune`` preset; with ``flip``, a
        sided keypoint or joint name of ``body`` without its counterpart
        (:func:`~fit3d.data.conventions.mirror_permutation`). TypeError: ``body`` is no body
        model (e.g. its name).
    """
    _require_body(body)
    if finetune not in FINETUNE_PRESETS:
        raise ValueError(f"unknown finetune preset {finetune!r}; known: {', '.join(FINETUNE_PRESETS)}")
    preset = FINETUNE_PRESETS[finetune]
    reg = load_body_regressor(body, regressor_path)
    reg = with_flip(reg, body, flip)
    check_prior_path(prior, prior_path)
    pose_prior = build_prior(prior, body, prior_path) if prior else None
    kw = {k: v for k, v in dict(steps=steps).items() if v is not None}
    eft = EFT(body, reg, prior=pose_prior, refine=refine, lr=preset.lr if lr is None else lr, finetune=preset.names,
              accept_ratio=preset.accept_ratio, follow=FollowConfig() if follow else None, **kw)
    return Fallback(eft, build_smplify(body)) if fallback else eft


def build_neuralannot(body: BodyModel, recipes=frozenset(RECIPES), epochs: int = TrainConfig.epochs,
                      refine: bool = False, checkpoint: str | Path | None = None,
                      holdout: float = TrainConfig.holdout) -> NeuralAnnot:
    """NeuralAnnot on the bundled regressor, with the bundled pose set (``depth`` recipe)
    and the VAE prior (``prior`` recipe); ``refine`` adds :data:`NEURALANNOT_REFINE_STEPS`
    EFT steps per person; ``holdout``: the share of people that chooses the training length
    (:meth:`NeuralAnnot.fit_dataset`; 0: ``epochs`` on everyone).

    Raises:
        FileNotFoundError, ValueError: see :func:`load_body_regressor` and
        :func:`fit3d.priors.build_prior`. TypeError: ``body`` is no body model (e.g. its name).
    """
    _require_body(body)
    from fit3d.body_models.weights import weights_path
    from fit3d.mocap.pose_set import load_pose_set

    return NeuralAnnot(body, load_body_regressor(body, option=None), recipes,
                       pose_set=load_pose_set(weights_path(body, "pose_set")) if "depth" in recipes else None,
                       prior=build_prior("vae", body) if "prior" in recipes else None,
                       config=TrainConfig(epochs=epochs, holdout=holdout),
                       refine_steps=NEURALANNOT_REFINE_STEPS if refine else 0, checkpoint=checkpoint)
