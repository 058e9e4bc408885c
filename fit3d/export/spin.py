"""SPIN's dataset ``.npz`` (Kolotouros et al., ICCV 2019; ``datasets/preprocess`` of SPIN).

Per person i: ``imgname`` (path relative to the image folder), ``center`` (2,) box
centre and ``scale`` = box size / 200 (pixels), ``part`` (24, 3) the input 2D
keypoints in SPIN's 24-joint order with visibility, ``pose`` (72,) SMPL axis-angle,
``shape`` (10,) betas, ``has_smpl`` = 1. SPIN's format has no camera: fit3d adds the
full-frame ``focal_length`` (2,), ``principal_point`` (2,) (pixels) and ``transl`` (3,)
(metres, OpenCV camera frame), and ``annot_id``: the input's annotation id, unique within an
image (COCO's are unique in the file; OpenPose input numbers the people of each image), so
``fit3d evaluate`` matches people by ``imgname`` and ``annot_id``. No 3D joints ``S``: SPIN's
are its own 24-joint layout, not the body model's. SMPL fits only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fit3d.data.conventions import SPIN24, convert
from fit3d.data.writers import write_npz
from fit3d.export.people import input_convention, smpl_pose72


def arrays(people: dict) -> dict[str, np.ndarray]:
    """The SPIN arrays of ``people`` (see the module docstring).

    Raises:
        ValueError: the fits are not SMPL.
    """
    pose = smpl_pose72(people, "spin")
    box = people["bbox"].astype(np.float64)
    conv = input_convention(people)
    part = np.stack([convert(k, conv, SPIN24) for k in people["keypoints_2d"]]).astype(np.float32)
    part[..., 2] = (part[..., 2] > 0).astype(np.float32)
    N = len(pose)
    return dict(
        imgname=people["image"].astype(str), center=(box[:, :2] + box[:, 2:] / 2).astype(np.float32),
        scale=(box[:, 2:].max(1) / 200.0).astype(np.float32), part=part, pose=pose,
        shape=people["betas"].astype(np.float32), has_smpl=np.ones(N, np.float32),
        focal_length=people["focal_length"].astype(np.float32),
        principal_point=people["principal_point"].astype(np.float32), transl=people["transl"].astype(np.float32),
        annot_id=people["annot_id"].astype(np.int64),
    )


def write(people: dict, out: Path) -> None:
    """Write :func:`arrays` to ``out`` atomically."""
    write_npz(out, arrays(people))
