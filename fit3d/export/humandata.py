"""mmhuman3d's HumanData ``.npz`` (``mmhuman3d/data/data_structures/human_data.py``).

Keys: ``image_path`` (N,), ``bbox_xywh`` (N, 5) with a confidence of 1,
``keypoints2d`` (N, 190, 3) in mmhuman3d's ``human_data`` convention with
``keypoints2d_mask`` (190,) marking the annotated points (placed as mmhuman3d's own
converters place each dataset's points: :mod:`fit3d.export.human_data_keypoints`),
the body model's parameter dict named
after it (``smpl``: global_orient (N, 3), body_pose (N, 23, 3), betas, transl;
``smplx``: also the hand, jaw, eye poses and expression, at rest; ``smplh``; anny fits
as ``anny``), ``meta`` (``gender`` (N,): ``m`` / ``f`` for a male / female model's fits, as
mmhuman3d's converters write 3DPW's, else ``neutral``) and ``misc`` (``smpl_source``, ``cam_param_type`` =
``perspective``, ``focal_length`` (N, 2), ``principal_point`` (N, 2), ``camera_frame`` =
``opencv``, ``annot_id``, ``keypoints2d_source``: the input layout's point names,
``keypoints2d_not_placed``: those ``human_data`` has no place for), plus HumanData's ``__key_strict__``, ``__data_len__`` and
``__keypoints_compressed__``, and ``config`` = ``"fit3d"`` (every mmhuman3d converter names
its source there, e.g. ``human_data['config'] = 'coco'`` in ``data_converters/coco.py`` line
109; HumanData declares it a ``str`` not sliced per sample, ``data_structures/human_data.py``
line 37, and no loader or dataset of mmhuman3d reads it). Dicts are stored as pickled objects,
as HumanData does: read with ``np.load(f, allow_pickle=True)`` and ``[key].item()``.

Validity: ``has_<model>`` (N,) float, 1 for a valid fit, 0 for one marked invalid (``has_smpl``
for SMPL fits). mmhuman3d's ``HumanImageDataset`` reads ``has_smpl`` as the per-sample mask of
its SMPL losses (``data/datasets/human_image_dataset.py`` lines 214-218: ``if 'has_smpl' in
self.human_data: info['has_smpl'] = int(self.human_data['has_smpl'][idx])``, else 1), the key
its own SPIN converter writes (``data_converters/spin.py`` line 102); it is sliced per sample
like the other (N, ...) arrays. ``HumanImageSMPLXDataset`` has no per-sample mask (``has_smplx``
is 1 whenever ``smplx`` exists, ``human_image_smplx_dataset.py`` lines 66-68): to train on
SMPL-X fits with mmhuman3d, export with ``--valid-only``.

Boxes: ``bbox_xywh`` is fit3d's box as it is, the annotation's own, or the keypoints' box
padded 10 % a side when rebuilt (OpenPose: always), as mmhuman3d's converters store theirs:
COCO's box unexpanded (``data_converters/coco.py`` line 82, ``bbox_xywh = annot['bbox']``),
keypoint-only datasets' keypoint box expanded 1.2x (``data_converters/lsp.py`` line 84). Its
``HumanImageDataset`` takes ``max(w, h)`` of it as the crop (lines 180-187); SPIN's 1.2 of
:mod:`fit3d.export.spin` is not applied here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from fit3d.data.writers import atomic_write_bytes
from fit3d.export.human_data_keypoints import to_human_data
from fit3d.export.people import gender_letters, input_convention, model_name, valid_mask


def model_params(people: dict) -> dict[str, np.ndarray]:
    """The body model's parameters, with SMPL-H / SMPL-X parts at rest (zeros)."""
    N = len(people["annot_id"])
    p = {k: people[k].astype(np.float32) for k in ("global_orient", "body_pose", "betas", "transl")}
    model = model_name(people)
    if model in ("smplh", "smplx"):
        p.update(left_hand_pose=np.zeros((N, 15, 3), np.float32), right_hand_pose=np.zeros((N, 15, 3), np.float32))
    if model == "smplx":
        p.update(jaw_pose=np.zeros((N, 3), np.float32), leye_pose=np.zeros((N, 3), np.float32),
                 reye_pose=np.zeros((N, 3), np.float32), expression=np.zeros((N, 10), np.float32))
    return p


def arrays(people: dict) -> dict:
    """The HumanData content of ``people`` (see the module docstring)."""
    N = len(people["annot_id"])
    conv = input_convention(people)
    kp, mask, not_placed = to_human_data(people["keypoints_2d"], conv)
    fitter = str(people["fitter"][0]) if "fitter" in people else "fit3d"
    model = model_name(people)
    return {
        "__key_strict__": np.bool_(False), "__data_len__": np.int64(N), "__keypoints_compressed__": np.bool_(False),
        "config": "fit3d", "image_path": people["image"].astype(str),
        "bbox_xywh": np.concatenate([people["bbox"], np.ones((N, 1))], 1).astype(np.float32),
        "keypoints2d": kp, "keypoints2d_mask": mask,
        model: model_params(people), f"has_{model}": valid_mask(people).astype(np.float32),
        "meta": {"gender": gender_letters(people)},
        "misc": {"smpl_source": f"fit3d-{fitter}", "cam_param_type": "perspective", "camera_frame": "opencv",
                 "focal_length": people["focal_length"].astype(np.float32),
                 "principal_point": people["principal_point"].astype(np.float32),
                 "annot_id": people["annot_id"].astype(np.int64), "keypoints2d_source": list(conv.names),
                 "keypoints2d_not_placed": not_placed},
    }


def write(people: dict, out: Path) -> None:
    """Write :func:`arrays` to ``out`` atomically (``np.savez``, dicts pickled)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: (np.asarray(v, dtype=object) if isinstance(v, dict) else v) for k, v in arrays(people).items()})
    atomic_write_bytes(out, buf.getvalue())
