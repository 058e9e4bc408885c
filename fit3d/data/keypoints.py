"""Usable 2D keypoints: what the readers and the batching treat as unlabelled.

A keypoint row is ``x, y, confidence`` in pixels. Rows with a non-finite value, or with a
coordinate beyond :data:`MAX_KEYPOINT_PX`, cannot be fitted or exported: they become
unlabelled ``(0, 0, 0)``; so do labelled rows at exactly ``(0, 0)``, the placeholder COCO and
OpenPose write for a point they do not have (a converter that keeps the flag leaves it labelled
at the image's corner), and, where the image's size is known, rows farther outside the image
than :data:`FAR_OUTSIDE` times its larger side (an annotation error: a digit too many). The ones
among them that claimed to be labelled (a finite confidence above 0) with unusable coordinates
are counted, so that a reader can say so
(:attr:`fit3d.data.records.Person.keypoints_ignored`); a non-finite confidence says nothing
and is not counted (COCO's reader reads such a visibility as 0 too).
"""

from __future__ import annotations

import math

import numpy as np

#: A person whose labelled keypoints all lie within this many pixels of the image origin has
#: coordinates normalised to the image (0-1; OpenPose's ``--keypoint_scale 4``: -1 to 1), not
#: pixels: MediaPipe's landmarks run past the image by a few tenths (1.2 seen).
NORMALISED_LIMIT = 2.0

#: Keypoints farther than this from the image origin (pixels) are unusable: no image is that large,
#: and squared in float32 such values overflow and make every fit of the person raise.
MAX_KEYPOINT_PX = 1e6

#: Labelled keypoints farther outside their image than this many times its larger side are
#: unusable (given the image's size): annotators and detectors place truncated joints a little
#: outside the frame, never a whole image away; such a point is an error (a digit too many), and it
#: inflated the person's scale, against which ``valid`` is measured, enough to call a fit valid
#: whose other points were hundreds of pixels off (a trial: one wrist at x = 900,000 px).
FAR_OUTSIDE = 1.0


def sanitize_keypoints(keypoints_2d, image_size: tuple[float, float] | None = None) -> tuple[np.ndarray, int]:
    """Zero unusable keypoints: non-finite values, coordinates beyond :data:`MAX_KEYPOINT_PX`, the
    placeholder ``(0, 0)``, and with ``image_size`` points far outside the image
    (:func:`unlabel_far_outside`; module docstring).

    Args:
        keypoints_2d: ``(K, 3)`` pixels ``x, y`` and confidence (array or tensor).
        image_size: ``(width, height)`` pixels of the person's image, or None (unknown; ``(0, 0)``:
            an image not opened, as None).
    Returns:
        ``(clean, n_ignored)``: a float32 copy with those rows set to ``(0, 0, 0)`` and
        confidences clipped to [0, 1]; ``n_ignored`` counts the zeroed rows with a finite
        confidence above 0 (labelled points whose coordinates are lost).
    Raises:
        ValueError: the keypoints are not ``(K, 3)``.
    """
    kp = np.asarray(keypoints_2d, dtype=np.float32)
    if kp.ndim != 2 or kp.shape[1] != 3:
        raise ValueError(f"keypoints must be (K, 3): x, y pixels and a confidence per keypoint, not {kp.shape}")
    kp, n_ignored = unlabel_unusable(kp)
    if image_size is None:
        return kp, n_ignored
    kp, n_far = unlabel_far_outside(kp, image_size)
    return kp, n_ignored + n_far


def unlabel_far_outside(keypoints_2d: np.ndarray, image_size: tuple[float, float]) -> tuple[np.ndarray, int]:
    """Unlabel (set to ``(0, 0, 0)``, in place) the labelled rows of ``keypoints_2d`` ``(..., K, 3)``
    farther outside the image of ``image_size`` ``(width, height)`` than :data:`FAR_OUTSIDE` times
    its larger side; returns ``(keypoints_2d, how many)``. An image of unknown size (a side <= 0 or
    not finite) unlabels nothing."""
    w, h = (float(v) for v in image_size)
    if not (np.isfinite([w, h]).all() and min(w, h) > 0):
        return keypoints_2d, 0
    far = (keypoints_2d[..., 2] > 0) & (distance_outside(keypoints_2d[..., :2], (w, h)) > FAR_OUTSIDE * max(w, h))
    keypoints_2d[far] = 0.0
    return keypoints_2d, int(far.sum())


def distance_outside(xy: np.ndarray, image_size: tuple[float, float]) -> np.ndarray:
    """``(...)`` pixels by which points ``xy`` ``(..., 2)`` lie outside the image of ``image_size``
    ``(width, height)`` along the axis where they lie farthest out (0 inside it)."""
    return np.maximum(np.maximum(-xy, xy - np.asarray(image_size, dtype=xy.dtype)), 0).max(-1)


def unlabel_unusable(keypoints_2d, clip_confidence: bool = True) -> tuple[np.ndarray, int]:
    """:func:`sanitize_keypoints` for any number of people: ``(..., K, 3)`` -> ``(clean copy,
    n_ignored over all of them)`` (the exports use it on fit files written before the readers
    did this themselves); ``clip_confidence=False`` leaves the usable rows' confidences as they
    are. Raises ValueError when the last axis is not 3."""
    kp = np.array(keypoints_2d, dtype=np.float32, copy=True)
    if kp.ndim < 2 or kp.shape[-1] != 3:
        raise ValueError(f"keypoints must be (..., K, 3): x, y pixels and a confidence per keypoint, not {kp.shape}")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(kp).all(axis=-1) | (np.abs(kp[..., :2]) > MAX_KEYPOINT_PX).any(axis=-1) \
            | (kp[..., :2] == 0).all(axis=-1)
    conf = kp[..., 2]
    n_ignored = int((bad & np.isfinite(conf) & (conf > 0)).sum())
    kp[bad] = 0.0
    if clip_confidence:
        kp[..., 2] = np.clip(kp[..., 2], 0.0, 1.0)
    return kp, n_ignored


def unusual_values(values) -> int:
    """How many entries of a keypoint list are numbers in a form JSON keypoint formats do not
    use: strings (``"12.5"``) and booleans (NumPy reads both as numbers). 0 for a non-list."""
    return sum(isinstance(v, (str, bool)) for v in values) if isinstance(values, list) else 0


#: People whose labelled keypoints lie within this many pixels (standard deviation across their
#: main line) of one line, or within :data:`MIN_SPREAD_FRACTION` of their spread along it, are
#: degenerate: all on one point or one line, an annotation no 3D body can be fitted to (fitted,
#: they came out "valid" at any depth). People of the COCO images and of the synthetic benchmark
#: (full body and close-ups) spread across their main line at least 5 % of their spread along it
#: (median 23-47 %); a line with a pixel's jitter spreads 0.2 %.
MIN_SPREAD_PX = 0.5
#: See :data:`MIN_SPREAD_PX`.
MIN_SPREAD_FRACTION = 0.02


def keypoint_spread(keypoints_2d) -> tuple[np.ndarray, np.ndarray]:
    """The spread of the labelled points of ``keypoints_2d`` ``(..., K, 3)`` across and along
    their main line: ``(across, along)``, each ``(...)`` pixels, the standard deviations of the
    points on their covariance's minor and major axes (the singular values of the centred points
    over sqrt(n)); both 0 for fewer than 3 points. Non-finite rows count as unlabelled."""
    kp = np.asarray(keypoints_2d, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        on = np.isfinite(kp).all(-1) & (kp[..., 2] > 0)
    n = on.sum(-1)
    xy = np.where(on[..., None], np.nan_to_num(kp[..., :2]), 0.0)
    mean = xy.sum(-2) / np.maximum(n, 1)[..., None]
    d = np.where(on[..., None], xy - mean[..., None, :], 0.0)
    cov = np.einsum("...ki,...kj->...ij", d, d) / np.maximum(n, 1)[..., None, None]
    eig = np.clip(np.linalg.eigvalsh(cov), 0.0, None)  # ascending
    few = n < 3
    return np.where(few, 0.0, np.sqrt(eig[..., 0])), np.where(few, 0.0, np.sqrt(eig[..., 1]))


def degenerate_keypoints(keypoints_2d) -> np.ndarray:
    """``(...)`` bool: the labelled points of ``keypoints_2d`` ``(..., K, 3)`` lie on one point or
    one line (:data:`MIN_SPREAD_PX`, :data:`MIN_SPREAD_FRACTION`; fewer than 3 points too)."""
    across, along = keypoint_spread(keypoints_2d)
    return across < np.maximum(MIN_SPREAD_PX, MIN_SPREAD_FRACTION * along)


def parse_keypoints(values, n: int) -> np.ndarray:
    """``(n, 3)`` float32 keypoints ``x, y, v`` from a flat list of ``3 n`` numbers (None -> NaN;
    numbers written as strings or booleans are read as numbers: :func:`unusual_values` counts them).

    Raises:
        ValueError: not a list of ``3 n`` numbers (the message names what it is: null, a nested list,
            ``2 n`` values: x, y pairs without a visibility flag).
    """
    if values is None or isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        got = "null" if values is None else type(values).__name__
        raise ValueError(f"expected a list of {3 * n} keypoint values, got {got}")
    try:
        flat = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    except OverflowError as e:  # a JSON integer too large for a float (1e400 written out reads as inf)
        raise ValueError("a keypoint value is an integer too large for a number") from e
    if flat.ndim != 1:
        raise ValueError(f"expected a flat list of {3 * n} keypoint values ({n} keypoints: x, y, v each), got a "
                         f"nested list of shape {flat.shape}")
    if flat.size != 3 * n:
        pairs = " (x, y pairs without a visibility or confidence value? each keypoint is x, y, v)" \
            if flat.size == 2 * n else ""
        raise ValueError(f"expected {3 * n} keypoint values ({n} keypoints), got {flat.size}{pairs}")
    with np.errstate(over="ignore"):  # beyond float32: inf, set aside as unusable by sanitize_keypoints
        return flat.reshape(n, 3).astype(np.float32)


def looks_normalised(xy: np.ndarray) -> bool:
    """Whether points ``xy (N, 2)`` (finite, N >= 1) all lie within :data:`NORMALISED_LIMIT` of the
    image origin: coordinates normalised to the image rather than pixels."""
    return bool(len(xy)) and bool((np.abs(xy) <= NORMALISED_LIMIT).all())


def whole_number(value) -> bool:
    """Whether a JSON value is a whole number an int64 holds (``7``, ``7.0``; not ``true``, ``"7"``,
    ``7.5``, NaN, nor ``2**63`` or ``1e20``: ids are stored as int64, and one beyond it stopped a run)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return value == int(value) and -(2 ** 63) <= int(value) < 2 ** 63


def track_id(value) -> int:
    """A person's tracking id as an input writes it: OpenPose's ``person_id`` (``[-1]`` without
    tracking, ``[7]`` or ``7`` with it), a COCO-format annotation's ``track_id`` (PoseTrack): a
    whole number >= 0, or -1 when there is none or it is not such a number."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return int(value) if whole_number(value) and value >= 0 else -1
