"""Person boxes ``(x, y, w, h)`` in pixels: built from keypoints, and annotation boxes checked
against the person's keypoints and the image (:func:`checked_bbox`)."""

from __future__ import annotations

import numpy as np

#: How much a box built from keypoints grows on every side, as a share of its size (so the box is
#: 1.2 x the keypoints' extent, as SPIN's boxes of keypoint-only datasets): boxes rebuilt for an
#: unusable annotation box and OpenPose people's boxes (:func:`fit3d.export.spin.expanded_boxes`
#: recognises them by it).
KEYPOINT_BOX_PAD = 0.1


def keypoint_bbox(keypoints_2d: np.ndarray, pad: float = 0.0) -> np.ndarray:
    """Box ``(4,)`` ``x, y, w, h`` pixels (float32) around the keypoints ``(K, 3)`` (x, y pixels,
    confidence) with confidence > 0 and finite values (zeros if none), grown by ``pad`` times its
    size on every side."""
    kp = keypoints_2d[np.isfinite(keypoints_2d).all(axis=1) & (keypoints_2d[:, 2] > 0)]
    if len(kp) == 0:
        return np.zeros(4, dtype=np.float32)
    lo, hi = kp[:, :2].min(0), kp[:, :2].max(0)
    size = hi - lo
    lo, size = lo - pad * size, size * (1 + 2 * pad)
    return np.array([lo[0], lo[1], size[0], size[1]], dtype=np.float32)


#: How far past the image's right or bottom edge (a share of its width or height) a box may reach
#: before :func:`checked_bbox` asks whether it was written as corners (COCO's boxes stay inside).
PAST_EDGE = 0.05


def _corners_not_size(box: np.ndarray, image_size: tuple[int, int], labelled: np.ndarray) -> bool:
    """Whether a box was written as corners ``[x1, y1, x2, y2]`` (a detector's or a converter's)
    where COCO writes ``[x, y, w, h]``: read as ``(x, y, w, h)`` it reaches more than
    :data:`PAST_EDGE` past the image's right or bottom edge, while read as corners it lies inside
    the image and holds every labelled keypoint (``labelled (N, 2)`` px, at least 3; within
    :data:`PAST_EDGE` of its size). A square box padded past the edge around its person (SPIN's
    ``center`` / ``scale``, a padded detection) holds them as a box, not as corners: it is kept."""
    w, h = image_size
    if len(labelled) < 3:
        return False
    past = box[0] + box[2] > (1 + PAST_EDGE) * w or box[1] + box[3] > (1 + PAST_EDGE) * h
    corners = box[0] < box[2] <= (1 + PAST_EDGE) * w and box[1] < box[3] <= (1 + PAST_EDGE) * h
    if not (past and corners):
        return False
    margin = PAST_EDGE * np.array([box[2] - box[0], box[3] - box[1]])
    return bool(((labelled >= box[:2] - margin) & (labelled <= box[2:] + margin)).all())


#: A box more than this many times the image's larger side is not used (:func:`checked_bbox`).
MAX_BOX_TO_IMAGE = 4.0


def checked_bbox(bbox, keypoints_2d: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The annotation's box when it is usable, else the labelled keypoints' box (10 % padding).

    Not usable: missing, malformed, non-finite, empty, outside the image, more than
    :data:`MAX_BOX_TO_IMAGE` times the image's larger side (the regressor's crop and the
    validity test, 5 % of the box diagonal, would mean nothing), or holding none of the
    labelled keypoints (the box grown by half its size on each side: a box of another person), or
    written as corners ``(x1, y1, x2, y2)`` (:func:`_corners_not_size`: only where that shows, past
    the image's edge).

    Returns:
        ``(bbox (4,), note)``: ``note`` is "" for the annotation's own box, else why it was rebuilt.
    """
    why = ""
    try:
        box = np.asarray(bbox, dtype=np.float64).reshape(4) if bbox is not None else None
    except (TypeError, ValueError, OverflowError):  # (an integer too large for a float: OverflowError)
        box, why = None, "malformed box"
    if box is None:
        why = why or "no box"
    elif not np.isfinite(box).all():
        why = "non-finite box"
    elif box[2] <= 1.0 or box[3] <= 1.0:
        why = "empty box"
    else:
        w, h = image_size
        labelled = keypoints_2d[(keypoints_2d[:, 2] > 0) & np.isfinite(keypoints_2d[:, :2]).all(-1), :2]
        lo, hi = box[:2] - 0.5 * box[2:], box[:2] + 1.5 * box[2:]
        if box[0] >= w or box[1] >= h or box[0] + box[2] <= 0 or box[1] + box[3] <= 0:
            why = "box outside the image"
        elif max(box[2], box[3]) > MAX_BOX_TO_IMAGE * max(w, h):
            why = f"box over {MAX_BOX_TO_IMAGE:g}x the image's size: {max(box[2], box[3]):.0f} px across"
        elif len(labelled) and not ((labelled >= lo) & (labelled <= hi)).all(-1).any():
            why = "box holds none of the labelled keypoints"
        elif _corners_not_size(box, (w, h), labelled):
            why = "box reaches past the image as x, y, width, height and fits in it as corners x1, y1, x2, y2"
    if not why:
        return box.astype(np.float32), ""
    return keypoint_bbox(keypoints_2d, pad=KEYPOINT_BOX_PAD), f"box rebuilt from the keypoints ({why})"
