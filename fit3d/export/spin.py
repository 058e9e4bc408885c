"""SPIN's dataset ``.npz`` (Kolotouros et al., ICCV 2019; ``datasets/preprocess`` of SPIN).

Per person i: ``imgname`` (path relative to the image folder), ``center`` (2,) box
centre and ``scale`` (box side / 200, pixels) as SPIN's preprocessing makes them, with its
1.2 box expansion (:func:`center_scale`), ``part`` (24, 3) the input 2D keypoints in SPIN's
24-joint order with their confidence (0 / 1 for annotations, as SPIN's preprocessing of COCO
writes them; OpenPose input keeps its detection scores, which SPIN's keypoint loss weights by,
``train/trainer.py``, ``keypoint_loss``), ``pose`` (72,) SMPL axis-angle, ``shape`` (10,) betas,
``openpose`` (25, 3) OpenPose's BODY_25 keypoints where the input was OpenPose JSON (BODY_25, or
COCO-18 re-ordered by name), else zeros, as SPIN's preprocessing leaves them for a dataset without
OpenPose detections (SPIN's ``BaseDataset`` reads ``openpose`` then ``part`` as its 49 keypoints),
``gender`` ``m`` / ``f`` for fits of a male / female SMPL (none for neutral ones: SPIN's
``BaseDataset`` then reads -1), ``has_smpl`` = 1 for a valid fit, 0 for one marked invalid (SPIN's
``BaseDataset`` reads it,
``datasets/base_dataset.py`` lines 52-53, and masks its SMPL losses with it; ``--valid-only``
leaves such people out instead). SPIN's format has no
camera: fit3d adds the photo's ``focal_length`` (2,), ``principal_point`` (2,) (pixels) and
``transl`` (3,) (metres, OpenCV axes), and ``annot_id``: the input's annotation id,
unique within an image (COCO's are unique in the file; OpenPose input numbers the people of
each image), so ``fit3d evaluate`` matches people by ``imgname`` and ``annot_id``. No 3D joints
``S``: SPIN's are its own 24-joint layout, not the body model's. SMPL fits only.

Frame: ``frame`` (a 0-d string) says which camera frame ``pose[:3]`` and ``transl`` are in.
``crop`` (:func:`fit3d.export.export_fits`'s default for this format): each person's crop camera
(:mod:`fit3d.export.crop_frame`), the frame SPIN's trainer compares its predictions with (it
fits only a translation to the ground-truth body, camera on the crop's centre); then
``crop_rotation`` (3, 3) takes the photo's camera frame to it (``x_crop = crop_rotation @
x_full``; its transpose and ``focal_length`` / ``principal_point`` give the fit in the photo).
``full``: the photo's camera frame, as fitted.

Beside the dataset file, ``<stem>_fits.npy`` holds SPIN's static fits (:func:`write`), every row
(invalid fits too: SPIN uses a static fit for a person whose ``has_smpl`` is 0 only where its own
SMPLify loss is under ``--smplify_threshold``, ``train/trainer.py``, as it does with the static
fits SPIN ships; export with ``--valid-only`` to leave such people out altogether).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from fit3d.data.boxes import KEYPOINT_BOX_PAD, keypoint_bbox
from fit3d.data.conventions import (OPENPOSE_BODY25, OPENPOSE_BODY25B, OPENPOSE_COCO18, SPIN24, SPIN_DETECTED_ONLY,
                                   SPIN_OPENPOSE, KeypointConvention, convert)
from fit3d.data.spin import SPIN_SCALE_FACTOR
from fit3d.data.writers import atomic_write_bytes, write_npz
from fit3d.export.people import gender_letters, input_convention, require_betas, smpl_pose72, valid_mask

#: The body models whose fits this format holds.
MODELS = ("smpl",)

#: Input points that are SPIN-24 points under SPIN's own names: MPII's (and OpenPose BODY_25B's)
#: upper neck, pelvis and thorax, which SPIN's ``datasets/preprocess/mpii.py`` puts in LSP's neck
#: and MPII's pelvis and thorax slots (``joints_idx``: 8 -> 12, 6 -> 14, 7 -> 15).
SPIN_NAMES = {"upper_neck": "neck_lsp", "pelvis": "pelvis_mpii", "thorax": "thorax_mpii"}


def spin_named(conv: KeypointConvention) -> KeypointConvention:
    """``conv`` with :data:`SPIN_NAMES`' points renamed to their SPIN-24 names (where ``conv`` has
    no point of that name already), for the re-ordering into ``part`` by name."""
    names = tuple(SPIN_NAMES.get(n, n) if SPIN_NAMES.get(n) not in conv.names else n for n in conv.names)
    return conv if names == conv.names else KeypointConvention(conv.name + "_spin_names", names)


def expanded_boxes(people: dict) -> np.ndarray:
    """``(N,)`` bool: the person's box already holds SPIN's 1.2 expansion, so it is not applied again.

    fit3d's box is the annotation's own (COCO's ``bbox``: not expanded), else the labelled
    keypoints' box padded 10 % on every side, which is 1.2 x the keypoint extent, SPIN's box of a
    keypoint-only dataset. The fit files say which only for rebuilt boxes (``bbox_note``); OpenPose
    input has no box and always gets the padded keypoint box with no note. So a box counts as
    expanded when it has a ``bbox_note``, when it is the padded keypoint box of the person's stored
    keypoints (to 0.01 px: OpenPose, or an annotation box made that way), or when the input was a
    SPIN ``.npz`` (keypoints in SPIN's 24-joint layout, or with its OpenPose detections in
    :data:`~fit3d.data.conventions.SPIN_OPENPOSE`: the box is SPIN's own ``center``/``scale``,
    kept as it is so that SPIN -> fit -> SPIN keeps it).
    """
    box = np.asarray(people["bbox"], dtype=np.float64)
    n = len(box)
    note = np.asarray(people.get("bbox_note", np.full(n, "")), dtype=str)
    if tuple(str(k) for k in people["keypoint_names"]) in (SPIN24.names, SPIN_OPENPOSE.names):
        return np.ones(n, bool)
    kp = np.asarray(people["keypoints_2d"], np.float32)
    padded = np.stack([keypoint_bbox(k, pad=KEYPOINT_BOX_PAD) for k in kp]) if n else np.zeros((0, 4))
    same = np.isclose(box, padded, rtol=0.0, atol=0.01).all(1) & (box[:, 2:] > 0).all(1)
    return (np.char.str_len(note) > 0) | same


def center_scale(people: dict) -> tuple[np.ndarray, np.ndarray]:
    """SPIN's ``center`` (N, 2) and ``scale`` (N,) of the people's boxes (x, y, w, h).

    ``center`` is the box centre; ``scale = 1.2 * max(w, h) / 200`` (SPIN's
    :data:`SPIN_SCALE_FACTOR`) for the annotation's own box, ``max(w, h) / 200`` for a box
    that already holds the expansion (:func:`expanded_boxes`).
    """
    box = np.asarray(people["bbox"], dtype=np.float64)
    factor = np.where(expanded_boxes(people), 1.0, SPIN_SCALE_FACTOR)
    center = box[:, :2] + box[:, 2:] / 2
    return center.astype(np.float32), (factor * box[:, 2:].max(1) / 200.0).astype(np.float32)


def arrays(people: dict) -> dict[str, np.ndarray]:
    """The SPIN arrays of ``people`` (see the module docstring).

    Raises:
        ValueError: the fits are not SMPL, or their betas are not 10 wide.
    """
    pose = smpl_pose72(people, "spin")
    require_betas(people, "spin")
    conv = input_convention(people)
    part = convert(people["keypoints_2d"], spin_named(conv), SPIN24).astype(np.float32)
    part[..., 2] = np.clip(part[..., 2], 0.0, 1.0)  # annotations' 0/1; a detector's scores as they are
    center, scale = center_scale(people)
    if conv.names in (OPENPOSE_BODY25.names, OPENPOSE_BODY25B.names, OPENPOSE_COCO18.names, SPIN_OPENPOSE.names):
        openpose = np.stack([convert(k, conv, OPENPOSE_BODY25) for k in people["keypoints_2d"]]).astype(np.float32)
        if conv.names == SPIN_OPENPOSE.names:  # a SPIN file's detections were kept only where part has no place
            openpose[:, [i for i, n in enumerate(OPENPOSE_BODY25.names) if n not in SPIN_DETECTED_ONLY]] = 0.0
    else:
        openpose = np.zeros((len(part), len(OPENPOSE_BODY25), 3), np.float32)
    letters = gender_letters(people)
    extra = {} if (letters == "neutral").all() else dict(gender=letters)  # none: SPIN reads -1 (neutral)
    if "crop_rotation" in people:
        extra.update(frame=np.array("crop"), crop_rotation=people["crop_rotation"].astype(np.float32))
    else:
        extra.update(frame=np.array("full"))
    return dict(
        **extra,
        imgname=people["image"].astype(str), center=center, scale=scale, part=part, openpose=openpose, pose=pose,
        shape=people["betas"].astype(np.float32), has_smpl=valid_mask(people).astype(np.float32),
        focal_length=people["focal_length"].astype(np.float32),
        principal_point=people["principal_point"].astype(np.float32), transl=people["transl"].astype(np.float32),
        annot_id=people["annot_id"].astype(np.int64),
    )


def static_fits_path(out: Path) -> Path:
    """Where :func:`write` puts the static fits beside ``out``: ``<stem>_fits.npy``."""
    out = Path(out)
    return out.with_name(out.stem + "_fits.npy")


def write(people: dict, out: Path) -> None:
    """Write :func:`arrays` to ``out`` atomically, and SPIN's static fits beside it
    (:func:`static_fits_path`): ``(N, 82)`` float32, ``pose`` (72) then ``shape`` (10) per row in
    the dataset file's order, the ``<dataset>_fits.npy`` that SPIN's ``FitsDict`` loads from
    ``data/static_fits`` as the starting fits of its in-the-loop SMPLify (copy it there under the
    dataset's name, e.g. ``coco_fits.npy``).

    The two files cannot be replaced together: the old static fits are removed first, so a write that
    fails half-way leaves a dataset file without static fits (SPIN stops on the missing file), never
    one beside the fits of another export (SPIN's ``FitsDict`` reads them by row: silently wrong)."""
    a = arrays(people)
    static_fits_path(out).unlink(missing_ok=True)
    write_npz(out, a)
    buf = io.BytesIO()
    np.save(buf, np.concatenate([a["pose"], a["shape"]], 1).astype(np.float32))
    atomic_write_bytes(static_fits_path(out), buf.getvalue())
