"""mmhuman3d's HumanData ``.npz`` (``mmhuman3d/data/data_structures/human_data.py``).

Keys: ``image_path`` (N,), ``bbox_xywh`` (N, 5) with a confidence of 1,
``keypoints2d`` (N, 190, 3) in mmhuman3d's ``human_data`` convention with
``keypoints2d_mask`` (190,) marking the annotated points (placed as mmhuman3d's own
converters place each dataset's points: :mod:`fit3d.export.human_data_keypoints`),
the body model's parameter dict named
after it (``smpl``: global_orient (N, 3), body_pose (N, 23, 3), betas, transl;
``smplx``: also the hand, jaw, eye poses and expression, at rest; ``smplh``; anny fits
as ``anny``), ``meta`` (gender) and ``misc`` (``smpl_source``, ``cam_param_type`` =
``perspective``, ``focal_length`` (N, 2), ``principal_point`` (N, 2), ``camera_frame`` =
``opencv``, ``annot_id``, ``keypoints2d_source``: the input layout's point names,
``keypoints2d_not_placed``: those ``human_data`` has no place for), plus HumanData's ``__key_strict__``, ``__data_len__`` and
``__keypoints_compressed__``. Dicts are stored as pickled objects, as HumanData does:
read with ``np.load(f, allow_pickle=True)`` and ``[key].item()``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from fit3d.data.writers import atomic_write_bytes
from fit3d.export.human_data_keypoints import to_human_data
from fit3d.export.people import input_convention, model_name


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
    return {
        "__key_strict__": np.bool_(False), "__data_len__": np.int64(N), "__keypoints_compressed__": np.bool_(False),
        "image_path": people["image"].astype(str),
        "bbox_xywh": np.concatenate([people["bbox"], np.ones((N, 1))], 1).astype(np.float32),
        "keypoints2d": kp, "keypoints2d_mask": mask,
        model_name(people): model_params(people),
        "meta": {"gender": np.asarray(["neutral"] * N)},
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
