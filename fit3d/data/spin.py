"""SPIN-style preprocessed dataset files (Kolotouros et al., ICCV 2019).

One ``.npz`` per dataset split with, per sample i: ``imgname`` (path relative
to the dataset's image root), ``center`` (2,) and ``scale`` (box side / 200 px),
``part`` (24, 3) 2D keypoints with visibility and ``S`` (24, 4) 3D joints in
metres with confidence, in :data:`~fit3d.data.conventions.SPIN24` order;
optionally ``openpose`` (25, 3) OpenPose BODY_25 detections with their scores (SPIN's COCO,
MPII and LSP files), ``pose`` (72,) and ``shape`` (10,) SMPL parameters. With ``openpose``
each person is read in :data:`~fit3d.data.conventions.SPIN_OPENPOSE` (BODY_25's points, then
``part``'s others): ``part``'s points, and the detections of the points ``part`` lacks (the feet). Human3.6M,
MPI-INF-3DHP and 3DPW exports follow this layout. Camera intrinsics are not
in SPIN's own files; a file that stores ``cam_int`` (N, 3, 3) or ``focal_length`` (N,) /
(N, 2) (+ ``principal_point`` (N, 2)) gives each person its camera
(:mod:`fit3d.data.intrinsics`); otherwise the fit uses the image diagonal (or
``--focal-length``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fit3d.data.conventions import OPENPOSE_BODY25, SPIN24, SPIN_DETECTED_ONLY, SPIN_OPENPOSE, convert
from fit3d.data.intrinsics import make_camera, spin_cameras
from fit3d.data.keypoints import sanitize_keypoints
from fit3d.data.records import ImageRecord, InputProblem, Person

#: Where :data:`~fit3d.data.conventions.SPIN_DETECTED_ONLY` sit in BODY_25 and in SPIN_OPENPOSE.
_DETECTED_FROM = [OPENPOSE_BODY25.index(n) for n in SPIN_DETECTED_ONLY]
_DETECTED_TO = [SPIN_OPENPOSE.index(n) for n in SPIN_DETECTED_ONLY]


def load_spin_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a SPIN ``.npz``.

    Raises:
        FileNotFoundError: missing file. ValueError: corrupt file or missing
        ``imgname``/``center``/``scale``/``part``/``S``, or wrong shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SPIN npz not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:2] != b"PK":  # an .npz is a zip archive (np.load reads any other file as a pickle)
        what = ("a single array (.npy)" if magic == b"\x93NUMPY" else
                "JSON (a COCO file? --annotations)" if magic.lstrip()[:1] in (b"{", b"[") else "not a zip archive")
        raise ValueError(f"{path} is not a SPIN dataset file (.npz): {what}")
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
    # image names stored as bytes (dtype S, as some preprocessing scripts write them) are text
    d["imgname"] = np.asarray([x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
                               for x in np.asarray(d["imgname"]).ravel()])
    n = len(d["imgname"])
    scale = np.asarray(d["scale"])
    if scale.shape == (n, 1):  # one column: read as (N,)
        scale = scale[:, 0]
    expected = dict(center=(n, 2), scale=(n,), part=(n, 24, 3), S=(n, 24, 4), openpose=(n, 25, 3))
    d["scale"] = scale
    for key, shape in expected.items():
        if key in d and np.shape(d[key]) != shape:
            raise ValueError(f"{path}: {key} must have shape {_shape_text(shape)} (N = {n} people, the length of "
                             f"imgname), not {np.shape(d[key])}")
    return d


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(N,)" if len(shape) == 1 else "(" + ", ".join(["N", *map(str, shape[1:])]) + ")"


def spin_annot_ids(d: dict[str, np.ndarray]) -> np.ndarray:
    """``(N,)`` int64 person ids of a SPIN file: its ``annot_id`` column when it has one
    (``fit3d export --format spin`` writes the input's annotation ids), else the row index."""
    n = len(d["imgname"])
    ids = d.get("annot_id")
    if ids is not None and np.shape(ids) == (n,) and np.issubdtype(np.asarray(ids).dtype, np.integer):
        return np.asarray(ids, dtype=np.int64)
    return np.arange(n, dtype=np.int64)


#: SPIN's box expansion: ``scaleFactor = 1.2`` in nkolot/SPIN ``datasets/preprocess/coco.py``
#: (line 14; ``scale = scaleFactor*max(bbox[2], bbox[3])/200``, line 47) and for keypoint-only
#: datasets ``lsp_dataset.py`` (line 10; ``scale = scaleFactor*max(<keypoint extent>)/200``, line 36).
SPIN_SCALE_FACTOR = 1.2


def spin_bbox(center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(N, 4)`` ``x, y, w, h`` boxes from SPIN's ``center`` and ``scale`` (side = 200 * scale)."""
    side = 200.0 * np.asarray(scale, dtype=np.float32)
    return np.stack([center[:, 0] - side / 2, center[:, 1] - side / 2, side, side], 1).astype(np.float32)


def spin_keypoints(part, openpose=None, image_size: tuple[float, float] | None = None) -> tuple[np.ndarray, int]:
    """One row of a SPIN file as fit3d reads it: ``part`` ``(24, 3)`` with labelled points
    without usable coordinates unlabelled (and counted, :func:`~fit3d.data.keypoints.sanitize_keypoints`;
    a non-finite confidence is unlabelled), confidences 0/1. With the row's ``openpose`` ``(25, 3)``
    the result is in :data:`~fit3d.data.conventions.SPIN_OPENPOSE`: ``part``'s points, and the
    detections (their scores clipped to [0, 1], as the OpenPose reader keeps them) of the points
    ``part`` has no place for (the feet, OpenPose's neck and mid hip); a detection never replaces
    an annotation, even an unlabelled one, so ``part`` comes back out of a SPIN export unchanged.
    With ``image_size`` ``(width, height)``, points far outside the image are unusable too
    (:func:`~fit3d.data.keypoints.unlabel_far_outside`).

    Returns:
        ``(keypoints (24, 3) or (32, 3), ignored)``.
    """
    kp, ignored = sanitize_keypoints(part, image_size)
    kp[:, 2] = (kp[:, 2] > 0).astype(np.float32)
    if openpose is None:
        return kp, ignored
    detected, ignored_detections = sanitize_keypoints(np.asarray(openpose, dtype=np.float32)[_DETECTED_FROM],
                                                      image_size)
    out = convert(kp, SPIN24, SPIN_OPENPOSE)
    out[_DETECTED_TO] = detected
    return out, ignored + ignored_detections


def read_spin(path: str | Path, images_dir: str | Path,
              only: Callable[[str], bool] | None = None) -> tuple[list[ImageRecord], list[InputProblem]]:
    """People of a SPIN ``.npz`` grouped by image, ``annot_id`` from :func:`spin_annot_ids`
    (the file's ``annot_id`` column, else the row index).

    Images are keyed by ``imgname`` as a path relative to ``images_dir`` (``a.jpg``, ``./a.jpg`` and
    ``images_dir/a.jpg`` are one image; rows naming another file of the same key, e.g. two folders
    outside ``images_dir`` holding an ``a.jpg``, are problems: their fits would replace each other's);
    rows of one image with one ``annot_id`` are flagged ``duplicate_id``; image sizes
    are read from the image files (missing or unreadable images are problems). People are in
    :data:`~fit3d.data.conventions.SPIN24`, or :data:`~fit3d.data.conventions.SPIN_OPENPOSE` when the file has
    ``openpose`` detections (:func:`spin_keypoints`). ``only``: a test of image keys (one
    shard's, :func:`fit3d.pipeline.selection.in_shard`): the images it refuses are records without
    people, not opened, their rows not parsed (their problems are left to the job that reads them).

    Raises:
        FileNotFoundError, ValueError: as :func:`load_spin_npz`.
    """
    from fit3d.data.boxes import checked_bbox
    from fit3d.data.checks import with_reader_checks
    from fit3d.data.images import image_key, none_found_problem, open_image

    d = load_spin_npz(path)
    images_dir = Path(images_dir)
    boxes = spin_bbox(d["center"], d["scale"])
    ids = spin_annot_ids(d)
    cameras = spin_cameras(d)
    openpose = d.get("openpose")
    layout = SPIN24 if openpose is None else SPIN_OPENPOSE
    records: dict[str, ImageRecord | None] = {}
    problems: list[InputProblem] = []
    lost: dict[str, tuple[InputProblem, list[int]]] = {}  # unreadable image -> its problem, its rows
    others: set[str] = set()  # images of other shards (``only``)
    files: dict[str, str] = {}  # key -> the file its rows name (absolute, to compare)
    keys = [image_key(images_dir / str(raw), images_dir) for raw in d["imgname"]]  # the outputs' names
    seen_ids = Counter(zip(keys, ids.tolist()))
    for i, raw in enumerate(d["imgname"]):
        name = keys[i]  # (one record per output name)
        file = images_dir / str(raw)
        if files.setdefault(name, os.path.abspath(file)) != os.path.abspath(file):
            problems.append(InputProblem(f"{path}#{i}", f"imgname {str(raw)!r} is another file than "
                                         f"{files[name]!r} under the same output name {name!r}: not fitted "
                                         "(give paths relative to --images)"))
            continue
        if name not in records:
            if only is not None and not only(name):  # another shard's
                records[name] = ImageRecord(name, file, (0, 0))
                others.add(name)
                continue
            records[name] = open_image(file, images_dir, None, problems)
            if records[name] is None:
                lost[name] = (problems[-1], [])
        rec = records[name]
        if rec is None:
            lost[name][1].append(i)
            continue
        if name in others:
            continue
        camera = None
        if cameras is not None:
            try:
                camera = make_camera(*cameras[i], rec.image_size)
            except ValueError as e:  # a person fitted with a camera the file does not give would be wrong
                problems.append(InputProblem(f"{path}#{i}", f"unreadable intrinsics: {e}"))
                rec.dropped.append(problems[-1].source)
                continue
        kp, ignored = spin_keypoints(d["part"][i], None if openpose is None else openpose[i], rec.image_size)
        bbox, note = checked_bbox(boxes[i], kp, rec.image_size)
        rec.people.append(Person(rec.image_key, rec.image_path, rec.image_size, int(ids[i]), bbox, kp, layout,
                                 len(rec.people), bbox_note=note, camera=camera, keypoints_ignored=ignored,
                                 duplicate_id=seen_ids[(name, int(ids[i]))] > 1))
    for problem, rows in lost.values():  # one problem per image, naming the rows it loses (as COCO's reader)
        problem.reason += (f" ({len(rows)} rows of {Path(path).name} not fitted: "
                           + ", ".join(f"#{i}" for i in rows[:10]) + (", ..." if len(rows) > 10 else "") + ")")
    readable = [r for r in records.values() if r is not None]
    missing = [Path(files[n]) for n in lost if not Path(files[n]).exists()]
    hint = none_found_problem(missing, len(readable), images_dir, "--spin-npz") if only is None else None  # (whole input)
    if hint:
        problems.append(hint)
    return with_reader_checks(readable, problems)
