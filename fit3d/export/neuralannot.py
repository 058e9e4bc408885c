"""NeuralAnnot-style JSON (Moon et al., CVPRW 2022: the released COCO pseudo-GT).

``{annotation id: {"smpl_param": {"pose": (72,), "shape": (10,), "trans": (3,), "gender"},
"cam_param": {"focal": [fx, fy], "princpt": [cx, cy]}, "valid": true}}`` for SMPL fits, as
NeuralAnnot_RELEASE's ``MSCOCO/demo_smpl.py`` and I2L-MeshNet's ``data/MSCOCO/MSCOCO.py`` read
them. SMPL-X fits write ``"smplx_param"`` with ``root_pose`` (3,), ``body_pose`` (63,),
``lhand_pose``, ``rhand_pose`` (45,), ``jaw_pose`` (3,), ``shape`` (10,), ``expr`` (10,),
``trans`` (3,), ``gender``, and ``lhand_valid``, ``rhand_valid``, ``face_valid`` all false: fit3d
fits no hands or face (their poses are written as zeros: flat hands in fit3d's SMPL-X, built with
``flat_hand_mean=True``; a reader that builds SMPL-X with smplx's default ``flat_hand_mean=False``, as
Hand4Whole does, poses them as the model's mean, relaxed hands), and Hand4Whole's loader
(``common/utils/preprocessing.py``, ``process_human_model_output``) indexes these flags for every
entry and masks the parts they mark invalid. ``gender`` (``neutral``, ``male``, ``female``: the
body model the fits were made with) is what that loader poses an entry with (neutral when
absent). Axis-angle, metres, pixels, OpenCV camera frame. Annotation ids must be unique over the
whole export.

``valid`` is fit3d's addition. These loaders take every entry as a fit to train on
(``is_valid_fit = True`` for any annotation id in the file), so by default the export leaves
invalid fits (those that do not reproject onto their keypoints) out
(:func:`fit3d.export.reads_validity`); with ``--keep-invalid`` they are written with ``"valid":
false``, for loaders of one's own.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from fit3d.data.writers import write_json
from fit3d.export.people import model_name, require_betas, require_model, smpl_pose72, valid_mask


#: The body models whose fits this format holds.
MODELS = ("smpl", "smplx")


def entries(people: dict) -> dict[str, dict]:
    """The JSON content (see the module docstring).

    Raises:
        ValueError: fits of another model than SMPL / SMPL-X, betas not 10 wide, or annotation ids
            used in several images.
    """
    model = model_name(people)
    ids = Counter(people["annot_id"].tolist())
    if max(ids.values()) > 1:
        raise ValueError(f"annotation ids {[k for k, n in ids.items() if n > 1][:5]} are used in several images: the "
                         "neuralannot format is keyed by dataset-wide annotation ids (COCO's); inputs that number "
                         "people per image (OpenPose) export as --format humandata or spin")
    require_model(people, "neuralannot", MODELS)
    require_betas(people, "neuralannot")
    cam = [dict(focal=f.tolist(), princpt=p.tolist())
           for f, p in zip(people["focal_length"].astype(float), people["principal_point"].astype(float))]
    f = lambda a: np.asarray(a, dtype=float).round(6).ravel().tolist()  # noqa: E731
    valid = valid_mask(people).tolist()
    gender = np.asarray(people.get("gender", np.full(len(valid), "neutral"))).astype(str).tolist()
    out = {}
    if model == "smpl":
        pose = smpl_pose72(people, "neuralannot")
        for i, aid in enumerate(people["annot_id"].tolist()):
            out[str(aid)] = dict(smpl_param=dict(pose=f(pose[i]), shape=f(people["betas"][i]),
                                                 trans=f(people["transl"][i]), gender=gender[i]),
                                 cam_param=cam[i], valid=valid[i])
        return out
    z = lambda n: [0.0] * n  # noqa: E731
    for i, aid in enumerate(people["annot_id"].tolist()):
        out[str(aid)] = dict(smplx_param=dict(
            root_pose=f(people["global_orient"][i]), body_pose=f(people["body_pose"][i]), lhand_pose=z(45),
            rhand_pose=z(45), jaw_pose=z(3), shape=f(people["betas"][i]), expr=z(10), trans=f(people["transl"][i]),
            gender=gender[i], lhand_valid=False, rhand_valid=False, face_valid=False), cam_param=cam[i], valid=valid[i])
    return out


def write(people: dict, out: Path) -> None:
    """Write :func:`entries` to ``out`` atomically."""
    write_json(out, entries(people))
