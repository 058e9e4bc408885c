"""Camera intrinsics that come with the input (per image or per person).

Datasets captured with calibrated cameras ship their intrinsics, and pseudo-ground-truth fitted
with them is right where a guessed focal length is not. Read here:

* COCO-format files: an image entry's ``cam_param`` ``{"focal": [fx, fy], "princpt": [cx,
  cy]}`` pixels, as Moon et al.'s COCO-format 3DPW, Human3.6M and MuCo files (I2L-MeshNet,
  Pose2Pose, NeuralAnnot) store them; ``focal`` may be one number; without ``princpt`` the
  image centre is used.
* SPIN-style ``.npz`` files: ``cam_int`` ``(N, 3, 3)`` (the intrinsic matrix ``K``, as
  mmhuman3d's converters and 3DPW's sequence files write it), or ``focal_length`` ``(N,)`` /
  ``(N, 2)`` with an optional ``principal_point`` ``(N, 2)`` (default: the image centre).

A :data:`Camera` is ``((fx, fy), (cx, cy))`` pixels, full frame, OpenCV convention. The fitting
command's ``--focal-length`` (``RunConfig.focal_length``) still replaces the focal length when
given; without intrinsics in the input, the focal length is the image diagonal
(:func:`fit3d.data.batching.person_camera`).
"""

from __future__ import annotations

import numpy as np

#: ``((fx, fy), (cx, cy))`` pixels.
Camera = tuple[tuple[float, float], tuple[float, float]]


def _numbers(value, n: int, what: str, one_for_all: bool = False) -> np.ndarray:
    """``value`` as ``n`` finite floats (one number stands for all with ``one_for_all``)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what} must be numbers, not {value!r}")
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:  # (an integer too large for a float: OverflowError)
        raise ValueError(f"{what} must be numbers, not {str(value)[:40]!r}") from e
    if arr.size == 1 and one_for_all:
        arr = np.repeat(arr, 2)
    if arr.size != n:
        raise ValueError(f"{what} must have {n} numbers, not {arr.size}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} must be finite, not {arr.tolist()}")
    return arr


def make_camera(focal, principal_point, image_size: tuple[float, float]) -> Camera:
    """A checked :data:`Camera`.

    Args:
        focal: ``fx, fy`` pixels, or one number for both.
        principal_point: ``cx, cy`` pixels, or None for the image centre.
        image_size: ``(width, height)`` pixels.
    Raises:
        ValueError: a focal length that is not positive and finite, or a principal point that
            is not two finite numbers.
    """
    f = _numbers(focal, 2, "focal length", one_for_all=True)
    if (f <= 0).any():
        raise ValueError(f"focal length must be positive, not {f.tolist()}")
    if principal_point is None:
        c = np.asarray(image_size, dtype=np.float64) / 2.0
    else:
        c = _numbers(principal_point, 2, "principal point")
    return (float(f[0]), float(f[1])), (float(c[0]), float(c[1]))


def coco_camera(info: dict, image_size: tuple[float, float]) -> Camera | None:
    """The intrinsics of a COCO image entry (its ``cam_param``), None when it has none.

    Raises:
        ValueError: a ``cam_param`` that is not ``{"focal": ..., "princpt": ...}`` of usable numbers.
    """
    cam = info.get("cam_param")
    if cam is None:
        return None
    if not isinstance(cam, dict) or "focal" not in cam:
        raise ValueError(f"cam_param must be an object with 'focal' (and 'princpt'), not {cam!r:.80}")
    return make_camera(cam["focal"], cam.get("princpt"), image_size)


def spin_cameras(d: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray | None]] | None:
    """Per row of a SPIN ``.npz``, ``(focal (2,), principal point (2,) or None)`` from its
    ``cam_int`` or ``focal_length`` (+ ``principal_point``); None when it has neither. The values
    are checked per person by :func:`make_camera` (with the image's size, read later).

    Raises:
        ValueError: those arrays do not have one row per person, or the wrong shape.
    """
    n = len(d["imgname"])
    if "cam_int" in d:
        k = np.asarray(d["cam_int"], dtype=np.float64)
        if k.shape != (n, 3, 3):
            raise ValueError(f"cam_int must be (N, 3, 3) intrinsic matrices, one per person (N = {n}), not {k.shape}")
        return [(k[i, [0, 1], [0, 1]], k[i, :2, 2]) for i in range(n)]
    if "focal_length" not in d:
        return None
    f = np.asarray(d["focal_length"], dtype=np.float64)
    if f.shape == (n,):
        f = np.repeat(f[:, None], 2, 1)
    if f.shape != (n, 2):
        raise ValueError(f"focal_length must be (N,) or (N, 2), one per person (N = {n}), not {f.shape}")
    pp = d.get("principal_point")
    if pp is not None:
        pp = np.asarray(pp, dtype=np.float64)
        if pp.shape != (n, 2):
            raise ValueError(f"principal_point must be (N, 2), one per person (N = {n}), not {pp.shape}")
    return [(f[i], None if pp is None else pp[i]) for i in range(n)]
