"""mmhuman3d's HumanData ``.npz`` (``mmhuman3d/data/data_structures/human_data.py``).

Keys: ``image_path`` (N,), ``bbox_xywh`` (N, 5) SPIN's square crop box with a confidence of 1 (below),
``keypoints2d`` (N, 190, 3) in mmhuman3d's ``human_data`` convention with
``keypoints2d_mask`` (190,) marking the annotated points (placed as mmhuman3d's own
converters place each dataset's points: :mod:`fit3d.export.human_data_keypoints`),
the body model's parameter dict named
after it (``smpl``: global_orient (N, 3), body_pose (N, 23, 3), betas, transl; ``smplx``
(body_pose (N, 21, 3)) and ``smplh`` the same four, without the hands, jaw, eyes and expression
that fit3d does not fit (:func:`model_params`); anny fits as ``anny``), ``meta`` (``gender`` (N,): ``m`` / ``f`` for a male / female model's fits, as
mmhuman3d's converters write 3DPW's, ``neutral`` beside them; no ``gender`` when every fit is neutral,
since mmhuman3d reads any letter but ``m`` as female) and ``misc`` (``smpl_source``, ``cam_param_type`` =
``perspective``, ``focal_length`` (N, 2), ``principal_point`` (N, 2), ``camera_frame`` =
``opencv``, ``annot_id``, ``track_id`` (N,): the person's id across frames, -1 where the input has
none; ``keypoints2d_source``: the input layout's point names,
``keypoints2d_not_placed``: those ``human_data`` has no place for, ``frame``: ``crop`` or
``full``, and, in the crop frame, ``crop_rotation`` (N, 3, 3); the strings and name lists
as 0-d arrays, :func:`_unsliced`), plus HumanData's ``__key_strict__``, ``__data_len__`` and
``__keypoints_compressed__``, and ``config`` = ``"fit3d"`` (every mmhuman3d converter names
its source there, e.g. ``human_data['config'] = 'coco'`` in ``data_converters/coco.py`` line
109; HumanData declares it a ``str`` not sliced per sample, ``data_structures/human_data.py``
line 37, and no loader or dataset of mmhuman3d reads it). Dicts are stored as pickled objects,
as HumanData does: read with ``np.load(f, allow_pickle=True)`` and ``[key].item()``.

Frame: with ``frame`` ``crop`` (:func:`fit3d.export.export_fits`'s default for this format) the
parameters place each body in its crop camera frame (:mod:`fit3d.export.crop_frame`), the frame
mmhuman3d's crop-based estimators compare their predictions with (``models/architectures/
mesh_estimator.py``: a translation is fitted to the ground-truth body, camera on the crop's
centre); ``x_crop = crop_rotation @ x_full``, and its transpose with ``focal_length`` /
``principal_point`` gives the fit in the photo. With ``full``, the photo's camera frame.

Validity: ``has_<model>`` (N,) float, 1 for a valid fit, 0 for one marked invalid (``has_smpl``
for SMPL fits). mmhuman3d's ``HumanImageDataset`` reads ``has_smpl`` as the per-sample mask of
its SMPL losses (``data/datasets/human_image_dataset.py`` lines 214-218: ``if 'has_smpl' in
self.human_data: info['has_smpl'] = int(self.human_data['has_smpl'][idx])``, else 1), the key
its own SPIN converter writes (``data_converters/spin.py`` line 102); it is sliced per sample
like the other (N, ...) arrays. ``HumanImageSMPLXDataset`` has no per-sample mask (``has_smplx``
is 1 whenever ``smplx`` exists, ``human_image_smplx_dataset.py`` lines 66-68), so SMPL-X fits
marked invalid are left out by default (:func:`fit3d.export.reads_validity`).

Boxes: ``bbox_xywh`` is the square crop box of the SPIN export, centred on the person's box with
side ``200 * scale`` (:func:`fit3d.export.spin.center_scale`: 1.2 x the box's longer side, a box
fit3d rebuilt from the keypoints already holding that margin), as mmhuman3d's converters of SMPL
pseudo-ground-truth store theirs (``data_converters/spin.py`` line 72 and ``eft.py`` line 44:
``w = h = scale * 200``). Its ``HumanImageDataset`` crops ``max(w, h)`` of it (lines 180-187),
so the crop is the one SPIN's preprocessing makes; the annotation's own, tight box (what the
2D-only ``coco.py`` converter stores) cut off labelled keypoints of 13 of the 56 people of
``coco_mini`` val.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from fit3d.data.writers import atomic_write_bytes
from fit3d.export.human_data_keypoints import to_human_data
from fit3d.export.people import gender_letters, input_convention, model_name, valid_mask
from fit3d.export.spin import center_scale


def model_params(people: dict) -> dict[str, np.ndarray]:
    """The body model's fitted parameters: ``global_orient``, ``body_pose``, ``betas``, ``transl``.

    SMPL-H / SMPL-X hands, jaw, eyes and expression are not fitted and not written: mmhuman3d's
    ``HumanImageSMPLXDataset`` sets ``has_smplx_<part>`` to 1 for each key present (and trains
    that part toward it), and to 0 with zeros for a missing one
    (``data/datasets/human_image_smplx_dataset.py``, ``prepare_raw_data``)."""
    return {k: people[k].astype(np.float32) for k in ("global_orient", "body_pose", "betas", "transl")}


def crop_boxes(people: dict) -> np.ndarray:
    """``(N, 5)`` float32 ``bbox_xywh``: the square box of SPIN's ``center`` and ``scale``
    (pixels; :func:`fit3d.export.spin.center_scale`) with a confidence of 1."""
    center, scale = center_scale(people)
    side = 200.0 * scale.astype(np.float64)
    xy = center - side[:, None] / 2
    return np.concatenate([xy, side[:, None], side[:, None], np.ones((len(side), 1))], 1).astype(np.float32)


def _meta(people: dict) -> dict:
    """HumanData's ``meta``: ``gender`` ``m`` / ``f`` per person, only when some fits are of a male or
    female model (mmhuman3d reads any other letter as female: neutral fits carry none, as in SPIN's)."""
    letters = gender_letters(people)
    return {} if (letters == "neutral").all() else {"gender": letters}


def _unsliced(value):
    """``value`` as a 0-d array: HumanData slices every ``misc`` / ``meta`` entry whose ``len()``
    equals the number of people (``human_data.py``, ``__get_slice_dim__``), so a string or list
    of that length would be cut up; a 0-d array has no ``len()``. Read back with ``.item()``
    (a list) or ``str()`` (a string)."""
    a = np.empty((), dtype=object)
    a[()] = value
    return a


def arrays(people: dict) -> dict:
    """The HumanData content of ``people`` (see the module docstring)."""
    N = len(people["annot_id"])
    conv = input_convention(people)
    kp, mask, not_placed = to_human_data(people["keypoints_2d"], conv)
    fitter = str(people["fitter"][0]) if "fitter" in people else "fit3d"
    model = model_name(people)
    crop = {"crop_rotation": people["crop_rotation"].astype(np.float32)} if "crop_rotation" in people else {}
    return {
        "__key_strict__": np.bool_(False), "__data_len__": np.int64(N), "__keypoints_compressed__": np.bool_(False),
        "config": "fit3d", "image_path": people["image"].astype(str),
        "bbox_xywh": crop_boxes(people),
        "keypoints2d": kp, "keypoints2d_mask": mask,
        model: model_params(people), f"has_{model}": valid_mask(people).astype(np.float32),
        "meta": _meta(people),
        "misc": {"smpl_source": _unsliced(f"fit3d-{fitter}"), "cam_param_type": _unsliced("perspective"),
                 "camera_frame": _unsliced("opencv"), "focal_length": people["focal_length"].astype(np.float32),
                 "principal_point": people["principal_point"].astype(np.float32),
                 "annot_id": people["annot_id"].astype(np.int64),
                 "track_id": np.asarray(people.get("track_id", np.full(N, -1)), dtype=np.int64),
                 "keypoints2d_source": _unsliced(list(conv.names)),
                 "keypoints2d_not_placed": _unsliced(list(not_placed)),
                 "frame": _unsliced("crop" if crop else "full"), **crop},
    }


def write(people: dict, out: Path) -> None:
    """Write :func:`arrays` to ``out`` atomically (``np.savez``, dicts pickled)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: (np.asarray(v, dtype=object) if isinstance(v, dict) else v) for k, v in arrays(people).items()})
    atomic_write_bytes(out, buf.getvalue())
