"""The people an export holds, and the pieces every format shares."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from fit3d.body_models.weights import said_setup_minutes
from fit3d.data.conventions import convention_from_names
from fit3d.data.keypoints import unlabel_unusable
from fit3d.names import SMPL_FAMILY


def fit_smpl_hint(models: str = "smpl (or smplx)", files: str = "model") -> str:
    """How to fit a model whose parameters a format needs: the command's options, where the licensed
    files come from and the set-up they need once (its time: :func:`fit3d.body_models.weights.said_setup_minutes`)."""
    return (f"fit with --model {models} --model-path DIR, the folder of your licensed {files} files "
            f"(https://smpl.is.tue.mpg.de), after 'fit3d setup-model' once for that file (about {said_setup_minutes()} "
            "minutes on 2 cores: its priors and regressor)")


def exported_people(fits_dir: str | Path, valid_only: bool = False,
                    min_keypoints: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Every fitted person of a run folder (merged over shards), as arrays with leading dim N.

    People are left out when skipped, invalid (with ``valid_only``), when their
    annotation id is used more than once in their image (both are rejected: training
    code keyed by id could not tell them apart), or when fewer than ``min_keypoints`` of
    their input keypoints are labelled (validity is a 2D test: a person seen from the hips
    down is fitted to its 6 points and its upper body is the prior's guess; None: no minimum).

    Returns:
        ``(people, counts)``: the arrays of :func:`fit3d.pipeline.merge.merge_fits` for
        the exported rows (input keypoints with unusable coordinates unlabelled:
        :func:`fit3d.data.keypoints.unlabel_unusable`; plus ``keypoint_names``, ``joint_names`` and ``gender`` (N,): the body
        model's, :func:`fitted_gender`), and counts: ``people``,
        ``exported``, ``invalid`` (exported people whose fit is marked invalid, see
        :func:`valid_mask`), ``dropped`` by reason, ``model``, ``unreadable``
        (merge's ``{file, reason, kind}`` of the files that could not be read: a ``kind`` ``"fit"``'s
        people are not exported; ``"summary"`` and ``"dataset"``, a summary file or a merged dataset
        left in the folder, lose no one),
        ``merged``: :func:`~fit3d.pipeline.merge.merge_fits`' summary (shards unfinished or missing,
        images to refit: what the export lacks), ``setup_problem`` (:func:`fitted_setup_problem`).
    Raises:
        ValueError: nothing to export, or fits of several body models.
    """
    from fit3d.pipeline.merge import merge_fits

    arrays, merged = merge_fits(fits_dir)
    n = len(arrays["annot_id"])
    status = arrays["status"].astype(str)
    dup = arrays.get("duplicate_id", np.zeros(n, bool)).astype(bool)
    keys = Counter(zip(arrays["image"].astype(str), arrays["annot_id"].tolist()))
    dup |= np.asarray([keys[(str(i), int(a))] > 1 for i, a in zip(arrays["image"], arrays["annot_id"])], bool)
    dropped = Counter()
    keep = np.ones(n, bool)
    # folders written before the readers unlabelled unusable keypoints may hold NaN rows marked
    # labelled: never exported as training targets, nor counted as labelled
    arrays["keypoints_2d"] = unlabel_unusable(arrays["keypoints_2d"])[0]
    few = (arrays["keypoints_2d"][..., 2] > 0).sum(-1) < min_keypoints if min_keypoints else np.zeros(n, bool)
    for why, mask in (("not fitted", status != "fitted"), ("duplicate annotation id", dup),
                      ("not valid", ~arrays["valid"].astype(bool) if valid_only else np.zeros(n, bool)),
                      (f"fewer than {min_keypoints} labelled keypoints", few)):
        dropped[why] = int((keep & mask).sum())
        keep &= ~mask
    if not keep.any():
        raise ValueError(f"nothing to export from {fits_dir}: {n} people, none fitted"
                         f"{' and valid' if valid_only else ''} with a unique annotation id"
                         f"{f' and at least {min_keypoints} labelled keypoints' if min_keypoints else ''}")
    models = sorted(set(arrays["model"][keep].astype(str)))
    if len(models) != 1:
        raise ValueError(f"{fits_dir} holds fits of several body models ({', '.join(models)}): export them apart")
    people = _rows(arrays, keep)
    people["gender"] = np.full(int(keep.sum()), fitted_gender(fits_dir, models[0]))
    counts = dict(people=n, exported=int(keep.sum()), invalid=int((~valid_mask(people)).sum()), gender=str(people["gender"][0]),
                  dropped={k: v for k, v in dropped.items() if v}, model=str(models[0]),
                  unreadable=merged["unreadable_outputs"], merged=merged,
                  setup_problem=fitted_setup_problem(fits_dir, models[0]))
    return people, counts


def fitted_setup_problem(fits_dir: str | Path, model: str) -> str | None:
    """What was wrong with the set-up of the model's weights when the folder's fits were made, as its
    record keeps it (``model_setup``, :func:`fit3d.body_models.weights.setup_state`: a reduced or an
    earlier fit3d's ``setup-model``); None when nothing was, or the record keeps no state (anny,
    folders fitted before 2026-12-06)."""
    from fit3d.body_models.weights import setup_state_problem
    from fit3d.pipeline.settings import fitting_settings

    record = fitting_settings(fits_dir) or {}
    return setup_state_problem(record.get("model_setup")) if record.get("model") == model else None


def _rows(arrays: dict, keep: np.ndarray) -> dict:
    """The per-person arrays' rows where ``keep`` (N,) is true; the shared fields as they are."""
    n = len(keep)
    return {k: (v[keep] if getattr(v, "ndim", 0) and len(v) == n and k not in ("keypoint_names", "joint_names")
                else v) for k, v in arrays.items()}


def without_invalid(people: dict, counts: dict) -> tuple[dict, dict]:
    """:func:`exported_people`'s ``(people, counts)`` without the fits marked invalid, counted
    under ``dropped["not valid"]`` as ``valid_only`` counts them.

    Raises:
        ValueError: no valid fit is left.
    """
    valid = valid_mask(people)
    if not valid.any():
        raise ValueError(f"nothing to export: none of the {counts['exported']} fitted people has a valid fit "
                         "(--keep-invalid exports them, marked invalid)")
    dropped = dict(counts["dropped"])
    if (~valid).any():
        dropped["not valid"] = dropped.get("not valid", 0) + int((~valid).sum())
    return _rows(people, valid), dict(counts, exported=int(valid.sum()), invalid=0, dropped=dropped)


def fitted_gender(fits_dir: str | Path, model: str) -> str:
    """The body model's gender the fits were made with (``neutral``, ``male``, ``female``), as the
    folder records it for that model (:func:`~fit3d.pipeline.settings.fitting_settings`: its
    ``fit_settings.json``, or for ``fit3d neuralannot``'s folders its summaries); ``neutral`` when
    it records none (anny, folders fitted before the record, a record of another model)."""
    from fit3d.pipeline.settings import fitting_settings

    if model not in SMPL_FAMILY:  # anny has no gendered models (a folder's --gender was ignored)
        return "neutral"
    record = fitting_settings(fits_dir) or {}
    gender = str(record.get("gender") or "").lower() if record.get("model") == model else ""
    return gender if gender in ("male", "female") else "neutral"


def gender_letters(people: dict) -> np.ndarray:
    """``(N,)`` ``"m"`` / ``"f"`` for fits of a male / female model, the letters SPIN's ``BaseDataset``
    and mmhuman3d's ``meta['gender']`` read (3DPW's convention), ``"neutral"`` for neutral fits."""
    gender = np.asarray(people.get("gender", np.full(len(people["annot_id"]), "neutral"))).astype(str)
    return np.where(gender == "male", "m", np.where(gender == "female", "f", "neutral"))


def valid_mask(people: dict) -> np.ndarray:
    """``(N,)`` bool: the fit reprojects onto its keypoints (the fit files' ``valid``).

    Invalid fits are never trusted ground truth: flagged (SPIN's and HumanData's ``has_smpl`` 0,
    the NeuralAnnot-style JSON's ``"valid": false``) or left out, by format
    (:func:`fit3d.export.reads_validity`) or with ``valid_only``.
    """
    return np.asarray(people["valid"], dtype=bool)


def model_name(people: dict) -> str:
    """The body model of the exported fits (``anny``, ``smpl``, ``smplh``, ``smplx``)."""
    return str(people["model"][0])


def input_convention(people: dict):
    """The keypoint layout of the input annotations (from the stored names)."""
    return convention_from_names([str(n) for n in people["keypoint_names"]], name="input")


def require_model(people: dict, fmt: str, accepted: tuple[str, ...]) -> None:
    """Refuse fits of a body model that format ``fmt`` does not hold (``accepted``: its models,
    each format module's ``MODELS``), with one line on how to fit one it holds.

    Raises:
        ValueError: the fits' model is not in ``accepted``.
    """
    model = model_name(people)
    if model in accepted:
        return
    if accepted == ("smpl",):
        extra = " (--format humandata keeps SMPL-X fits)" if model == "smplx" else ""
        raise ValueError(f"the {fmt} format holds SMPL parameters (pose (N, 72)); these fits are of {model}: "
                         f"{fit_smpl_hint('smpl', 'SMPL')}{extra}")
    raise ValueError(f"the {fmt} format holds SMPL or SMPL-X parameters; these fits are of {model}: " + fit_smpl_hint())


def require_betas(people: dict, fmt: str, count: int = 10) -> None:
    """Refuse fits whose ``betas`` are not ``count`` wide: SPIN's and NeuralAnnot's readers take 10
    shape coefficients (fit3d's command line fits 10; a body model built from Python with 16 or 300
    wrote them as they were, found by a review).

    Raises:
        ValueError: another width, named with the fix."""
    width = np.asarray(people["betas"]).shape[-1]
    if width != count:
        raise ValueError(f"the {fmt} format holds {count} shape coefficients (betas) per person, these fits have "
                         f"{width}: fit with a body model of {count} (build_body_model(..., num_betas={count}), as "
                         "fit3d's commands do)")


def smpl_pose72(people: dict, fmt: str) -> np.ndarray:
    """``(N, 72)`` SMPL pose (``global_orient`` then 23 body joints), axis-angle.

    Raises:
        ValueError: the fits are not SMPL (``fmt`` names the format in the message).
    """
    require_model(people, fmt, ("smpl",))
    N = len(people["annot_id"])
    return np.concatenate([people["global_orient"], people["body_pose"].reshape(N, -1)], 1).astype(np.float32)
