"""Usable 2D keypoints: what the readers and the batching treat as unlabelled.

A keypoint row is ``x, y, confidence`` in pixels. Rows with a non-finite value, or with a
coordinate beyond :data:`MAX_KEYPOINT_PX`, cannot be fitted or exported: they become
unlabelled ``(0, 0, 0)``; so do labelled rows at exactly ``(0, 0)``, the placeholder COCO and
OpenPose write for a point they do not have (a converter that keeps the flag leaves it labelled
at the image's corner). The ones among them that claimed to be labelled (a finite confidence
above 0) with unusable coordinates are counted, so that a reader can say so
(:attr:`fit3d.data.records.Person.keypoints_ignored`); a non-finite confidence says nothing
and is not counted (COCO's reader reads such a visibility as 0 too).
"""

from __future__ import annotations

import numpy as np

#: A person whose labelled keypoints all lie within this many pixels of the image origin has
#: coordinates normalised to the image (0-1; OpenPose's ``--keypoint_scale 4``: -1 to 1), not
#: pixels: MediaPipe's landmarks run past the image by a few tenths (1.2 seen).
NORMALISED_LIMIT = 2.0

#: Keypoints farther than this from the image origin (pixels) are unusable: no image is that large,
#: and squared in float32 such values overflow and make every fit of the person raise.
MAX_KEYPOINT_PX = 1e6


def sanitize_keypoints(keypoints_2d) -> tuple[np.ndarray, int]:
    """Zero unusable keypoints: non-finite values, coordinates beyond :data:`MAX_KEYPOINT_PX`, or
    the placeholder ``(0, 0)`` (module docstring).

    Args:
        keypoints_2d: ``(K, 3)`` pixels ``x, y`` and confidence (array or tensor).
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
    return unlabel_unusable(kp)


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


def parse_keypoints(values, n: int) -> np.ndarray:
    """``(n, 3)`` float32 keypoints ``x, y, v`` from a flat list of ``3 n`` numbers (None -> NaN;
    numbers written as strings or booleans are read as numbers: :func:`unusual_values` counts them).

    Raises:
        ValueError: not ``3 n`` numbers.
    """
    flat = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    if flat.ndim != 1:
        raise ValueError(f"expected a flat list of {3 * n} keypoint values ({n} keypoints: x, y, v each), got a "
                         f"nested list of shape {flat.shape}")
    if flat.size != 3 * n:
        raise ValueError(f"expected {3 * n} keypoint values ({n} keypoints), got {flat.size}")
    with np.errstate(over="ignore"):  # beyond float32: inf, set aside as unusable by sanitize_keypoints
        return flat.reshape(n, 3).astype(np.float32)


def looks_normalised(xy: np.ndarray) -> bool:
    """Whether points ``xy (N, 2)`` (finite, N >= 1) all lie within :data:`NORMALISED_LIMIT` of the
    image origin: coordinates normalised to the image rather than pixels."""
    return bool(len(xy)) and bool((np.abs(xy) <= NORMALISED_LIMIT).all())


def whole_number(value) -> bool:
    """Whether a JSON value is a whole number (``7``, ``7.0``; not ``true``, ``"7"``, ``7.5``, NaN)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and bool(np.isfinite(value)) \
        and value == int(value)


def track_id(value) -> int:
    """A person's tracking id as an input writes it: OpenPose's ``person_id`` (``[-1]`` without
    tracking, ``[7]`` or ``7`` with it), a COCO-format annotation's ``track_id`` (PoseTrack): a
    whole number >= 0, or -1 when there is none or it is not such a number."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    return int(value) if whole_number(value) and value >= 0 else -1
