"""Checks over everything a reader read: one warning per input for the people whose keypoints
lie far outside their image, whose labelled keypoints were unusable, whose keypoint values were in
a form the format does not define, whose box was rebuilt, whose coordinates look normalised,
who repeat another person of their image exactly, or whose intrinsics no camera of their image
has (:func:`with_reader_checks`, what every reader returns)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from fit3d.data.keypoints import NORMALISED_LIMIT, distance_outside, looks_normalised
from fit3d.data.records import ImageRecord, InputProblem


def with_reader_checks(records: list[ImageRecord], problems: list[InputProblem]):
    """``(records, problems)`` with :func:`keypoints_outside_image`'s,
    :func:`keypoints_ignored_warning`'s, :func:`unusual_keypoints_warning`'s,
    :func:`boxes_rebuilt_warning`'s, :func:`normalised_keypoints_warning`'s,
    :func:`repeated_people_warning`'s and :func:`unusual_intrinsics_warning`'s warnings added (if
    any): what every reader returns."""
    warnings = [w for w in (keypoints_outside_image(records), keypoints_ignored_warning(records),
                            unusual_keypoints_warning(records), boxes_rebuilt_warning(records),
                            normalised_keypoints_warning(records), repeated_people_warning(records),
                            unusual_intrinsics_warning(records)) if w]
    return records, problems + warnings


def _examples(hit: list) -> str:
    """A few ``(image key, person)`` pairs of a warning, as its source: ``a.jpg (id 3), ...``."""
    return ", ".join(f"{key} (id {p.annot_id})" for key, p in hit[:3]) + (" ..." if len(hit) > 3 else "")


def normalised_keypoints_warning(records: list[ImageRecord]) -> InputProblem | None:
    """One warning for all people whose labelled keypoints (at least 3) look normalised to the image
    (:func:`~fit3d.data.keypoints.looks_normalised`: MediaPipe's landmarks, OpenPose's
    ``--keypoint_scale 3`` or ``4``) where fit3d reads pixels, in an image larger than that bound.
    How many people, a few examples; None when there are none. Such people are skipped (points
    spanning under half a pixel) or fitted to nothing."""
    hit = []
    for rec in records:
        if max(rec.image_size) <= NORMALISED_LIMIT:
            continue
        for p in rec.people:
            kp = np.asarray(p.keypoints_2d, dtype=np.float64)
            xy = kp[np.isfinite(kp).all(1) & (kp[:, 2] > 0), :2]
            if len(xy) >= 3 and looks_normalised(xy):
                hit.append((rec.image_key, p))
    if not hit:
        return None
    return InputProblem(_examples(hit), f"{len(hit)} {'person has' if len(hit) == 1 else 'people have'} all "
                        "keypoint coordinates within 0-1 (or -1 to 1, give or take): normalised to the image? "
                        "fit3d reads pixels (multiply x by the image width and y by its height; OpenPose: "
                        "--keypoint_scale 0)", "warning")


def boxes_rebuilt_warning(records: list[ImageRecord]) -> InputProblem | None:
    """One warning for all people whose annotated box was not used (``Person.bbox_note``,
    :func:`~fit3d.data.boxes.checked_bbox`): how many, by reason, a few examples; None when there are none."""
    hit = [(rec.image_key, p) for rec in records for p in rec.people if p.bbox_note]
    if not hit:
        return None
    reasons = Counter(p.bbox_note.partition("(")[2].rstrip(")").partition(":")[0] or p.bbox_note for _, p in hit)
    return InputProblem(_examples(hit), f"{len(hit)} {'person' if len(hit) == 1 else 'people'}: box rebuilt from the "
                        f"keypoints ({', '.join(f'{r}: {n}' for r, n in reasons.most_common())}); each fit's "
                        "bbox_note says why", "warning")


def _keypoint_count_warning(records: list[ImageRecord], count: str, what: str) -> InputProblem | None:
    """One warning for all people whose ``Person.<count>`` is above 0: "N people have M <what>",
    a few examples as the source; None when there are none."""
    hit = [(rec.image_key, p) for rec in records for p in rec.people if getattr(p, count)]
    if not hit:
        return None
    n = sum(getattr(p, count) for _, p in hit)
    return InputProblem(_examples(hit), f"{len(hit)} {'person has' if len(hit) == 1 else 'people have'} {n} "
                        f"{what.format(s='s' if n != 1 else '')}", "warning")


def keypoints_ignored_warning(records: list[ImageRecord]) -> InputProblem | None:
    """One warning for all people with labelled keypoints whose coordinates were unusable
    (``Person.keypoints_ignored``: non-finite, absurdly far or the placeholder (0, 0), set to
    unlabelled): how many people and keypoints, a few examples; None when there are none. Such
    people are fitted from the rest of their keypoints (or skipped, with the count in the reason,
    when too few remain)."""
    return _keypoint_count_warning(records, "keypoints_ignored", "labelled keypoint{s} with non-finite, far-off or "
                                   "placeholder (0, 0) coordinates: ignored (stored as unlabelled; the rest of "
                                   "each person's keypoints are used)")


def unusual_keypoints_warning(records: list[ImageRecord]) -> InputProblem | None:
    """One warning for all people whose keypoints hold values in a form the format does not define
    (``Person.keypoints_unusual``: numbers as strings or booleans, COCO visibility flags other than
    0, 1, 2), read as given: how many people and values, a few examples; None when there are none.
    A file converted by hand is the usual cause (a detector's scores between 0 and 1 are
    confidences, not counted: :func:`fit3d.data.coco.coco_keypoints`)."""
    return _keypoint_count_warning(records, "keypoints_unusual", "keypoint value{s} in a form the format does not "
                                   "define (numbers written as strings or true/false, visibility flags other than "
                                   "0, 1, 2, such as 3 or null): read as numbers, a flag above 0 as labelled, a "
                                   "null or NaN one as unlabelled")


#: How far outside the image (a fraction of its larger side) a labelled keypoint may lie before
#: :func:`keypoints_outside_image` counts it: annotators place truncated joints a little outside.
OUTSIDE_MARGIN = 0.05


def keypoints_outside_image(records: list[ImageRecord], margin: float = OUTSIDE_MARGIN) -> InputProblem | None:
    """One warning for all people with labelled keypoints more than ``margin`` times the image's
    larger side outside it (how many, the farthest in pixels, a few examples), or None. Such
    keypoints are still fitted (some datasets label joints outside the frame); those more than the
    image's larger side outside it (:data:`~fit3d.data.keypoints.FAR_OUTSIDE`) were already set
    aside by the reader as unusable (:func:`keypoints_ignored_warning` counts them)."""
    people, farthest, examples = 0, 0.0, []
    for rec in records:
        if not rec.people:
            continue
        kp = np.concatenate([np.asarray(p.keypoints_2d, dtype=np.float64)[:, :3] for p in rec.people])
        owner = np.repeat(np.arange(len(rec.people)), [len(p.keypoints_2d) for p in rec.people])
        w, h = rec.image_size
        labelled = np.isfinite(kp).all(1) & (kp[:, 2] > 0)
        beyond = distance_outside(kp[:, :2], (w, h))
        far = labelled & (beyond > margin * max(w, h))
        if not far.any():
            continue
        who = np.unique(owner[far])
        people += len(who)
        farthest = max(farthest, float(beyond[far].max()))
        examples += [f"{rec.image_key} (id {rec.people[i].annot_id})" for i in who[: 3 - len(examples)]]
    if not people:
        return None
    return InputProblem(", ".join(examples) + (" ..." if people > len(examples) else ""),
                        f"{people} people have labelled keypoints outside their image (up to {farthest:.0f} px beyond "
                        "its border): fitted as given", "warning")


def repeated_people_warning(records: list[ImageRecord]) -> InputProblem | None:
    """One warning for all people whose keypoints (at least three labelled) repeat those of an earlier
    person of the same image exactly, whatever their ids (a person annotated twice, a detection
    written twice): how many, a few examples; None when there are none. Both are fitted (their ids
    may both be wanted), so a training set made from the run would hold that person twice."""
    hit = []
    for rec in records:
        seen: set[tuple] = set()
        for p in rec.people:
            kp = np.ascontiguousarray(p.keypoints_2d, dtype=np.float32)
            if (kp[:, 2] > 0).sum() < 3:
                continue
            key = (p.convention.names, kp.tobytes())
            if key in seen:
                hit.append((rec.image_key, p))
            seen.add(key)
    if not hit:
        return None
    return InputProblem(_examples(hit), f"{len(hit)} {'person repeats' if len(hit) == 1 else 'people repeat'} "
                        "another person of the same image exactly (the same keypoints, another id): both are "
                        "fitted, so a training set made from these fits holds that person twice", "warning")


#: Focal lengths (as multiples of the image diagonal), ratios fx / fy and principal points (as
#: multiples of the image's size, beyond its border) that :func:`unusual_intrinsics_warning` calls
#: implausible: a 600 mm lens on a full-frame sensor is ~14x the diagonal, a fisheye ~0.2x.
FOCAL_RANGE = (0.1, 100.0)
ASPECT_RANGE = (0.5, 2.0)
PRINCIPAL_BEYOND = 1.0


def unusual_intrinsics_warning(records: list[ImageRecord]) -> InputProblem | None:
    """One warning for all people whose input intrinsics (``Person.camera``) no camera of their
    image has: a focal length outside :data:`FOCAL_RANGE` times the image diagonal, ``fx / fy``
    outside :data:`ASPECT_RANGE`, a principal point more than :data:`PRINCIPAL_BEYOND` times the
    image's width or height outside it (a unit or a field mixed up) or within
    :data:`~fit3d.data.keypoints.NORMALISED_LIMIT` px of the origin (normalised to the image); how
    many people (with labelled keypoints: the others are not fitted), a few examples; None when
    there are none. They are fitted with the intrinsics as given (a fit of 1e9 px focal
    length was put 4,500 km away, marked valid)."""
    hit = []
    for rec in records:
        w, h = (float(v) for v in rec.image_size)
        if not (np.isfinite([w, h]).all() and min(w, h) > 0):
            continue
        diag = float(np.hypot(w, h))
        for p in rec.people:
            if p.camera is None or not (np.asarray(p.keypoints_2d)[:, 2] > 0).any():
                continue
            (fx, fy), (cx, cy) = p.camera
            odd = not (FOCAL_RANGE[0] * diag <= min(fx, fy) and max(fx, fy) <= FOCAL_RANGE[1] * diag) \
                or not ASPECT_RANGE[0] <= fx / fy <= ASPECT_RANGE[1] \
                or not -PRINCIPAL_BEYOND * w <= cx <= (1 + PRINCIPAL_BEYOND) * w \
                or not -PRINCIPAL_BEYOND * h <= cy <= (1 + PRINCIPAL_BEYOND) * h \
                or (max(w, h) > NORMALISED_LIMIT and looks_normalised(np.asarray([[cx, cy]])))
            if odd:
                hit.append((rec.image_key, p))
    if not hit:
        return None
    (fx, fy), (cx, cy) = hit[0][1].camera
    return InputProblem(_examples(hit), f"{len(hit)} {'person has' if len(hit) == 1 else 'people have'} intrinsics "
                        f"no camera of their image has (the first: focal ({fx:.4g}, {fy:.4g}) px, principal point "
                        f"({cx:.4g}, {cy:.4g}) px; plausible: focal {FOCAL_RANGE[0]:g}-{FOCAL_RANGE[1]:g}x the image "
                        f"diagonal, fx / fy {ASPECT_RANGE[0]:g}-{ASPECT_RANGE[1]:g}, the principal point near the "
                        "image): fitted with them as given; check the input's cam_param / cam_int (units, order)",
                        "warning")
