"""Which people a run fits and which it skips, with the reason: too few usable keypoints, all on
one point or line; and the warning for an input layout's points the body model lacks."""

from __future__ import annotations

import numpy as np

from fit3d.data.batching import person_camera
from fit3d.data.conventions import UNMODELLED, convert
from fit3d.data.keypoints import (MIN_SPREAD_FRACTION, MIN_SPREAD_PX, degenerate_keypoints, keypoint_spread,
                                  looks_normalised, sanitize_keypoints)
from fit3d.data.records import ImageRecord, InputProblem, Person


#: People with fewer usable keypoints (finite, confidence > 0, known to the
#: body model) than this are not fitted: below 6 points a full-body fit is
#: under-determined (6 points x 2 coordinates vs. camera + orientation alone).
MIN_VISIBLE_KEYPOINTS = 6


def usable_keypoints(person: Person, model_convention) -> tuple[int, int]:
    """``(usable, unusable)``: of ``person.keypoints_2d`` ``(K, 3)`` (pixels, confidence), the keypoints
    that are labelled, known to the model and usable, and the labelled ones that are not usable
    (non-finite, beyond :data:`~fit3d.data.keypoints.MAX_KEYPOINT_PX`, or the placeholder ``(0, 0)``).
    A point the model weighs 0 in its body stages (SMPL's hips) counts: the camera stage fits it.

    Raises:
        ValueError: keypoints that are not ``(K, 3)`` (:func:`~fit3d.data.keypoints.sanitize_keypoints`).
    """
    mapped, n_bad = _model_keypoints(person, model_convention)
    return int((mapped[:, 2] > 0).sum()), n_bad


def _model_keypoints(person: Person, model_convention) -> tuple[np.ndarray, int]:
    """``((K, 3) keypoints in the model's convention, unusable count)``: NaN points unlabelled; the
    count includes those its reader already set aside (``Person.keypoints_ignored``)."""
    clean, n_bad = sanitize_keypoints(person.keypoints_2d, person.image_size)
    return convert(clean, person.convention, model_convention), n_bad + person.keypoints_ignored


def skip_reason(person: Person, model_convention, min_visible: int = MIN_VISIBLE_KEYPOINTS,
                focal_length: float | None = None) -> str | None:
    """Why ``person`` cannot be fitted, or None: fewer than ``min_visible`` usable keypoints
    (:func:`usable_keypoints`), usable keypoints all on one point or line
    (:func:`fit3d.data.keypoints.degenerate_keypoints`), or an unusable camera or image size
    (:func:`fit3d.data.batching.person_camera` with the run's ``focal_length``: a person built by
    hand with a negative focal length failed its whole image on every run). The text before the
    first colon is the reason's kind, counted in the summary."""
    mapped, n_bad = _model_keypoints(person, model_convention)
    usable = int((mapped[:, 2] > 0).sum())
    if usable < min_visible:
        return f"too few usable keypoints: {usable} < {min_visible}" + (
            f" ({n_bad} non-finite, far-off or (0, 0) keypoints ignored)" if n_bad else "")
    if degenerate_keypoints(mapped):
        across, along = (float(v) for v in keypoint_spread(mapped))
        xy = mapped[mapped[:, 2] > 0, :2]
        hint = ("; all coordinates lie within 0-1, give or take: normalised? fit3d reads pixels (OpenPose: "
                "--keypoint_scale 0)") if looks_normalised(xy) else ""
        return (f"degenerate keypoints: all on one point or line ({across:.2f} px across, {along:.1f} px along: "
                f"under {MIN_SPREAD_PX} px or {MIN_SPREAD_FRACTION:.0%} across){hint}")
    try:
        person_camera(person, focal_length)
    except ValueError as e:
        return f"unusable camera: {e}"
    return None


def layout_problems(images: list[ImageRecord], model_convention) -> list[InputProblem]:
    """One warning per input keypoint layout that names points the model does not have
    (they are ignored; see :data:`fit3d.data.conventions.UNMODELLED`).

    Raises:
        ValueError: some layout shares no keypoint with the model (nothing could be
            fitted from it): raised before anything is written.
    """
    out, seen = [], set()
    model = set(model_convention.names)
    for r in images:
        for p in r.people:
            conv = p.convention
            if conv.names in seen:
                continue
            seen.add(conv.names)
            usable = [n for n in conv.names if n in model]
            if not usable:
                raise ValueError(f"the {conv.name!r} keypoints ({', '.join(conv.names[:6])}...) share no name with "
                                 f"the {model_convention.name} model's keypoints ({', '.join(model_convention.names)})")
            ignored = [n for n in conv.names if n not in model]
            if ignored:
                kind = "not modelled" if set(ignored) <= set(UNMODELLED) else "unknown to the model"
                out.append(InputProblem(f"keypoint layout {conv.name!r}", f"{len(usable)} of {len(conv)} keypoints "
                                        f"used; ignored ({kind}): {_some(ignored)}", "warning"))
    return out


def _some(names: list[str], shown: int = 12) -> str:
    """``names`` joined, the first ``shown`` of a long list and how many more (COCO-WholeBody's 133)."""
    more = len(names) - shown
    return ", ".join(names) if more <= 2 else f"{', '.join(names[:shown])} and {more} more"

