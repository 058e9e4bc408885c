"""What is written for every person and image (one ``.npz`` per image, see :mod:`fit3d.data.writers`)."""

from __future__ import annotations

import numpy as np

from fit3d.data.conventions import KeypointConvention, convert, union_convention
from fit3d.data.keypoints import sanitize_keypoints
from fit3d.data.records import ImageRecord, Person
from fit3d.fitters.camera_init import METHODS
from fit3d.fitters.result import FitResult

#: Integer fitter extras written as their names.
EXTRA_LABELS = {"init_method": METHODS}
#: Person statuses: fitted; skipped for a documented per-person reason (too few usable
#: keypoints, a fit with non-finite parameters). People whose fit raised are never
#: written: their image is fitted again by the next run.
STATUSES = ("fitted", "skipped")


#: Person fields indexed by keypoint (axis -2, in the ``keypoint_names`` layout) and the value a
#: keypoint that a person's layout does not have takes: unlabelled input (0, 0, 0), NaN fits.
KEYPOINT_FIELDS = {"keypoints_2d": 0.0, "keypoints_3d": np.nan, "keypoints_2d_fit": np.nan}


def to_layout(arrays: dict, src: KeypointConvention, dst: KeypointConvention) -> dict:
    """``arrays`` with its :data:`KEYPOINT_FIELDS` (``(..., K_src, C)``) re-ordered by name into
    ``dst`` (``(..., K_dst, C)``; :func:`~fit3d.data.conventions.convert`); keypoints ``src``
    lacks get the field's fill value. Other fields are returned as they are (the same dict
    when the layouts are equal).

    Raises:
        ValueError: a keypoint field's K is not ``len(src)``.
    """
    if src.names == dst.names:
        return arrays
    return {**arrays, **{k: convert(arrays[k], src, dst, fill) for k, fill in KEYPOINT_FIELDS.items() if k in arrays}}


def reason_kind(reason: str) -> str:
    """A skip reason without its numbers, for counting (``too few usable keypoints``)."""
    return str(reason).split(":")[0]


def person_record(person: Person, result: FitResult | None, i: int, body_model, focal, pp, reason: str,
                  extra_defaults: dict) -> dict:
    """One person's output arrays: the fit ``result[i]``, or NaN parameters, ``valid = False``
    and ``extra_defaults`` when the person was skipped for ``reason``. Only the fitter's extras
    that ``extra_defaults`` names are stored: every person of every image then has the same
    fields (a skipped person needs a value for each)."""
    conv = person.convention
    K = len(conv)
    nan = lambda *s: np.full(s, np.nan, dtype=np.float32)  # noqa: E731
    rec = dict(
        annot_id=np.int64(person.annot_id),
        bbox=np.asarray(person.bbox, dtype=np.float32),
        bbox_note=np.str_(person.bbox_note),
        duplicate_id=np.bool_(person.duplicate_id),
        track_id=np.int64(person.track_id),
        keypoints_2d=sanitize_keypoints(person.keypoints_2d, person.image_size)[0],  # (the readers' already are)
        focal_length=np.asarray(focal, dtype=np.float32),
        principal_point=np.asarray(pp, dtype=np.float32),
    )
    if result is None:
        rec.update(
            global_orient=nan(3), body_pose=nan(body_model.num_body_joints, 3), betas=nan(body_model.num_betas),
            transl=nan(3), joints_3d=nan(len(body_model.joint_names), 3), keypoints_3d=nan(K, 3),
            keypoints_2d_fit=nan(K, 2), reproj_error_px=np.float32(np.nan), valid=np.bool_(False),
            loss=np.float32(np.nan), iterations=np.int64(0), status=np.str_("skipped"), skip_reason=np.str_(reason),
        )
        rec.update(extra_defaults)
        return rec
    r = result.numpy(i)
    kp3 = convert(np.asarray(r["keypoints_3d"], dtype=np.float32), result.convention, conv, np.nan)
    kp2 = convert(np.asarray(r["keypoints_2d_fit"], dtype=np.float32), result.convention, conv, np.nan)
    rec.update(
        global_orient=r["global_orient"], body_pose=r["body_pose"], betas=r["betas"], transl=r["transl"],
        joints_3d=r["joints_3d"], keypoints_3d=kp3, keypoints_2d_fit=kp2,
        reproj_error_px=np.float32(r["reproj_error_px"]), valid=np.bool_(r["valid"]), loss=np.float32(r["loss"]),
        iterations=np.int64(r["iterations"]), status=np.str_("fitted"), skip_reason=np.str_(""),
    )
    for k in result.extras:
        if k not in extra_defaults:  # no value for the people it skips: not stored (_Job warns once)
            continue
        labels = EXTRA_LABELS.get(k)
        rec[k] = np.str_(labels[int(r[k])]) if labels else r[k]
    for k, v in extra_defaults.items():  # a fitter may report an extra for some batches only
        rec.setdefault(k, v)
    return rec


def image_record(image: ImageRecord, people: list[dict], body_model, fitter_name: str,
                 shard: str = "1/1") -> dict[str, np.ndarray]:
    """One image's ``.npz`` arrays: the image's relative path and size, the fitter and model
    names, the shard (``"i/n"``) that wrote it, the digest of its annotations
    (``input_digest``: :meth:`~fit3d.data.records.ImageRecord.input_digest`), the keypoint and joint names, and every
    person field stacked (leading dim P). ``people`` are :func:`person_record`'s records of
    ``image.people``, in order; people of different keypoint layouts (two COCO categories,
    BODY_25 beside COCO-18 in one OpenPose file) are stored in the union of the layouts
    (:func:`~fit3d.data.conventions.union_convention`; :data:`KEYPOINT_FIELDS`).

    Raises:
        ValueError: ``people`` and ``image.people`` differ in length.
    """
    if len(people) != len(image.people):
        raise ValueError(f"{len(people)} records for the {len(image.people)} people of {image.image_key}")
    conv = union_convention([p.convention for p in image.people]) if image.people else None
    people = [to_layout(r, p.convention, conv) for r, p in zip(people, image.people)]
    out: dict[str, np.ndarray] = dict(
        image=np.str_(image.image_key),
        shard=np.str_(shard),
        image_size=np.asarray(image.image_size, dtype=np.int64),
        fitter=np.str_(fitter_name),
        model=np.str_(body_model.name),
        input_digest=np.str_(image.input_digest()),
        keypoint_names=np.asarray(conv.names if conv else [], dtype=str),
        joint_names=np.asarray(body_model.joint_names, dtype=str),
    )
    for k in sorted({k for p in people for k in p}):
        out[k] = np.stack([np.asarray(p[k]) for p in people])
    return out
