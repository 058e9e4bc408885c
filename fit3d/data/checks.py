"""Checks over everything a reader read: one warning per input for the people whose keypoints
lie far outside their image, whose labelled keypoints were unusable, whose keypoint values were in
a form the format does not define, whose box was rebuilt, or whose coordinates look normalised
(:func:`with_reader_checks`, what every reader returns)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from fit3d.data.keypoints import NORMALISED_LIMIT, looks_normalised
from fit3d.data.records import ImageRecord, InputProblem


def with_reader_checks(records: list[ImageRecord], problems: list[InputProblem]):
    """``(records, problems)`` with :func:`keypoints_outside_image`'s,
    :func:`keypoints_ignored_warning`'s, :func:`unusual_keypoints_warning`'s,
    :func:`boxes_rebuilt_warning`'s and :func:`normalised_keypoints_warning`'s warnings added (if
    any): what every reader returns."""
    warnings = [w for w in (keypoints_outside_image(records), keypoints_ignored_warning(records),
                            unusual_keypoints_warning(records), boxes_rebuilt_warning(records),
                            normalised_keypoints_warning(records)) if w]
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
                                   "0, 1, 2): read as numbers, a flag above 0 as labelled")


#: How far outside the image (a fraction of its larger side) a labelled keypoint may lie before
#: :func:`keypoints_outside_image` counts it: annotators place truncated joints a little outside.
OUTSIDE_MARGIN = 0.05


def keypoints_outside_image(records: list[ImageRecord], margin: float = OUTSIDE_MARGIN) -> InputProblem | None:
    """One warning for all people with labelled keypoints more than ``margin`` times the image's
    larger side outside it (how many, the farthest in pixels, a few examples), or None. Such
    keypoints are still fitted (some datasets label joints outside the frame); far outside, they
    are usually annotation errors, and the person's fit then reprojects badly (``valid`` False)."""
    people, farthest, examples = 0, 0.0, []
    for rec in records:
        if not rec.people:
            continue
        kp = np.concatenate([np.asarray(p.keypoints_2d, dtype=np.float64)[:, :3] for p in rec.people])
        owner = np.repeat(np.arange(len(rec.people)), [len(p.keypoints_2d) for p in rec.people])
        w, h = rec.image_size
        labelled = np.isfinite(kp).all(1) & (kp[:, 2] > 0)
        beyond = np.maximum(np.maximum(-kp[:, :2], kp[:, :2] - (w, h)), 0).max(1)
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
