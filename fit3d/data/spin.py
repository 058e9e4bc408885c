"""SPIN-style preprocessed dataset files (Kolotouros et al., ICCV 2019).

One ``.npz`` per dataset split with, per sample i: ``imgname`` (path relative
to the dataset's image root), ``center`` (2,) and ``scale`` (box side / 200 px),
``part`` (24, 3) 2D keypoints with visibility and ``S`` (24, 4) 3D joints in
metres with confidence, in :data:`~fit3d.data.conventions.SPIN24` order;
optionally ``pose`` (72,) and ``shape`` (10,) SMPL parameters. Human3.6M,
MPI-INF-3DHP and 3DPW exports follow this layout. Camera intrinsics are not
in SPIN's own files; a file that stores ``cam_int`` (N, 3, 3) or ``focal_length`` (N,) /
(N, 2) (+ ``principal_point`` (N, 2)) gives each person its camera
(:mod:`fit3d.data.intrinsics`); otherwise the fit uses the image diagonal (or
``--focal-length``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fit3d.data.conventions import SPIN24
from fit3d.data.intrinsics import make_camera, spin_cameras
from fit3d.data.keypoints import sanitize_keypoints
from fit3d.data.records import ImageRecord, InputProblem, Person


def load_spin_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a SPIN ``.npz``.

    Raises:
        FileNotFoundError: missing file. ValueError: corrupt file or missing
        ``imgname``/``center``/``scale``/``part``/``S``, or wrong shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SPIN npz not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except ValueError as e:
        if "allow_pickle" in str(e):  # SPIN's files hold plain arrays; HumanData and others pickle dicts
            raise ValueError(f"{path} is not a SPIN dataset file: it holds pickled objects (a HumanData file? "
                             "a SPIN-style .npz holds imgname, center, scale and part as plain arrays)") from e
        raise ValueError(f"cannot read {path} as .npz: {e}") from e
    except Exception as e:
        raise ValueError(f"cannot read {path} as .npz: {e}") from e
    missing = [k for k in ("imgname", "center", "scale", "part") if k not in d]
    if missing:
        raise ValueError(f"{path} is not a SPIN dataset file: missing {missing}")
    n = len(d["imgname"])
    if d["part"].shape != (n, 24, 3) or ("S" in d and d["S"].shape != (n, 24, 4)):
        raise ValueError(f"{path}: expected part (N, 24, 3) and S (N, 24, 4)")
    return d


def spin_annot_ids(d: dict[str, np.ndarray]) -> np.ndarray:
    """``(N,)`` int64 person ids of a SPIN file: its ``annot_id`` column when it has one
    (``fit3d export --format spin`` writes the input's annotation ids), else the row index."""
    n = len(d["imgname"])
    ids = d.get("annot_id")
    if ids is not None and np.shape(ids) == (n,) and np.issubdtype(np.asarray(ids).dtype, np.integer):
        return np.asarray(ids, dtype=np.int64)
    return np.arange(n, dtype=np.int64)


def spin_bbox(center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(N, 4)`` ``x, y, w, h`` boxes from SPIN's ``center`` and ``scale`` (side = 200 * scale)."""
    side = 200.0 * np.asarray(scale, dtype=np.float32)
    return np.stack([center[:, 0] - side / 2, center[:, 1] - side / 2, side, side], 1).astype(np.float32)


def spin_keypoints(part) -> tuple[np.ndarray, int]:
    """One row of a SPIN file's ``part`` ``(24, 3)`` as fit3d reads it: labelled points without
    usable coordinates unlabelled (and counted, :func:`~fit3d.data.keypoints.sanitize_keypoints`;
    a non-finite confidence is unlabelled), confidences 0/1. Returns ``(keypoints (24, 3), ignored)``."""
    kp, ignored = sanitize_keypoints(part)
    kp[:, 2] = (kp[:, 2] > 0).astype(np.float32)
    return kp, ignored


def read_spin(path: str | Path, images_dir: str | Path) -> tuple[list[ImageRecord], list[InputProblem]]:
    """People of a SPIN ``.npz`` grouped by image, ``annot_id`` from :func:`spin_annot_ids`
    (the file's ``annot_id`` column, else the row index).

    Images are keyed by ``imgname`` (their path relative to ``images_dir``); image sizes
    are read from the image files (missing or unreadable images are problems).
    """
    from fit3d.data.boxes import checked_bbox
    from fit3d.data.checks import with_reader_checks
    from fit3d.data.images import open_image

    d = load_spin_npz(path)
    images_dir = Path(images_dir)
    boxes = spin_bbox(d["center"], d["scale"])
    ids = spin_annot_ids(d)
    cameras = spin_cameras(d)
    records: dict[str, ImageRecord | None] = {}
    problems: list[InputProblem] = []
    for i, name in enumerate(d["imgname"]):
        name = str(name)
        if name not in records:
            records[name] = open_image(images_dir / name, images_dir, None, problems)
        rec = records[name]
        if rec is None:
            problems.append(InputProblem(f"{path}#{i}", "its image could not be read"))
            continue
        camera = None
        if cameras is not None:
            try:
                camera = make_camera(*cameras[i], rec.image_size)
            except ValueError as e:  # a person fitted with a camera the file does not give would be wrong
                problems.append(InputProblem(f"{path}#{i}", f"unreadable intrinsics: {e}"))
                rec.dropped.append(problems[-1].source)
                continue
        kp, ignored = spin_keypoints(d["part"][i])
        bbox, note = checked_bbox(boxes[i], kp, rec.image_size)
        rec.people.append(Person(rec.image_key, rec.image_path, rec.image_size, int(ids[i]), bbox, kp, SPIN24,
                                 len(rec.people), bbox_note=note, camera=camera, keypoints_ignored=ignored))
    return with_reader_checks([r for r in records.values() if r is not None], problems)
