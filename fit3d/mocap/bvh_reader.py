"""BVH reader (parsing by the ``bvh`` package) with forward kinematics.

BVH: each joint has an ``OFFSET`` from its parent and rotation channels applied
in the listed order in its own frame (``Zrotation Yrotation Xrotation`` ->
``R = Rz Ry Rx``, intrinsic); ``W_joint = W_parent R``,
``p_joint = p_parent + W_parent offset``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from fit3d.mocap.clip import CMU_UNIT_TO_M, MOCAP_POINTS, MocapClip

#: MOCAP_POINTS -> BVH joint (CMU amc2bvh naming) whose position it is;
#: ``"Head/End"`` is the head's end site. amc2bvh drops the thorax bone (the
#: collars and neck start at ``Chest2``), so the spine points sit one bone lower
#: than in the ASF: directions along the spine still match.
BVH_POINTS = {
    "pelvis": "Hips", "left_hip": "LeftHip", "right_hip": "RightHip", "left_knee": "LeftKnee",
    "right_knee": "RightKnee", "left_ankle": "LeftAnkle", "right_ankle": "RightAnkle", "left_toe": "LeftToe",
    "right_toe": "RightToe", "spine_top": "Chest", "neck": "Chest2", "head": "Head", "head_top": "Head/End",
    "left_shoulder": "LeftShoulder", "right_shoulder": "RightShoulder", "left_elbow": "LeftElbow",
    "right_elbow": "RightElbow", "left_wrist": "LeftWrist", "right_wrist": "RightWrist",
}  # fmt: skip

#: The same points in the widely shared CMU BVH conversion (cgspeed / B. Hahne's names), which
#: keeps the thorax bone: a joint sits where its bone starts, so the ASF bone ``lhumerus`` starts at
#: ``LeftArm`` (``LeftShoulder`` is the collar, the ASF's ``lclavicle``), the femur at ``LeftUpLeg``.
CGSPEED_POINTS = {
    "pelvis": "Hips", "left_hip": "LeftUpLeg", "right_hip": "RightUpLeg", "left_knee": "LeftLeg",
    "right_knee": "RightLeg", "left_ankle": "LeftFoot", "right_ankle": "RightFoot", "left_toe": "LeftToeBase",
    "right_toe": "RightToeBase", "spine_top": "Spine1", "neck": "Neck", "head": "Head", "head_top": "Head/End",
    "left_shoulder": "LeftArm", "right_shoulder": "RightArm", "left_elbow": "LeftForeArm",
    "right_elbow": "RightForeArm", "left_wrist": "LeftHand", "right_wrist": "RightHand",
}  # fmt: skip

#: The joint namings read, tried in this order.
NAMINGS = {"amc2bvh": BVH_POINTS, "cgspeed": CGSPEED_POINTS}


def read_bvh(path: str | Path, unit_to_m: float = CMU_UNIT_TO_M) -> MocapClip:
    """A clip of :data:`MOCAP_POINTS` in metres from a CMU-style BVH file (CMU's length units
    unless ``unit_to_m`` says otherwise), with its rest pose (every rotation zero), its joints named
    as amc2bvh names them (:data:`BVH_POINTS`) or as the cgspeed conversion does (:data:`CGSPEED_POINTS`).

    Raises:
        ValueError: a joint of both namings is missing (the closer naming's missing joints are
            named) or the file is malformed.
    """
    from bvh import Bvh

    path = Path(path)
    mocap = Bvh(path.read_text(errors="replace"))
    frames = np.asarray(mocap.frames, dtype=np.float64)
    if frames.ndim != 2 or not len(frames):
        raise ValueError(f"{path}: no frames")
    F = frames.shape[0]
    names = mocap.get_joints_names()
    col = 0
    pos, rot, rest = {}, {}, {}  # (rest: the skeleton with every rotation zero, the root at its offset)
    for name in names:  # file order: parents before children
        ch = mocap.joint_channels(name)
        vals = frames[:, col : col + len(ch)]
        col += len(ch)
        offset = np.asarray(mocap.joint_offset(name), dtype=np.float64)
        axes = "".join(c[0] for c in ch if c.endswith("rotation"))
        angles = np.stack([vals[:, i] for i, c in enumerate(ch) if c.endswith("rotation")], 1) if axes else None
        R = Rotation.from_euler(axes.upper(), angles, degrees=True).as_matrix() if axes else np.broadcast_to(np.eye(3), (F, 3, 3))
        parent = mocap.joint_parent(name)
        if parent is None:
            t = np.zeros((F, 3))
            for i, c in enumerate(ch):
                if c.endswith("position"):
                    t[:, "XYZ".index(c[0])] = vals[:, i]
            pos[name] = offset + t
            rot[name] = R
            rest[name] = offset
        else:
            pos[name] = pos[parent.name] + rot[parent.name] @ offset
            rot[name] = rot[parent.name] @ R
            rest[name] = rest[parent.name] + offset
    head = mocap.get_joint("Head")
    end = [c for c in head.children if c.value and c.value[0] == "End"]
    if end:
        off = np.asarray([float(x) for x in end[0]["OFFSET"]], dtype=np.float64)
        pos["Head/End"] = pos["Head"] + rot["Head"] @ off
        rest["Head/End"] = rest["Head"] + off
    missing = {k: [j for j in table.values() if j not in pos] for k, table in NAMINGS.items()}
    naming = min(missing, key=lambda k: len(missing[k]))  # (the first of equals: amc2bvh's)
    if missing[naming]:
        raise ValueError(f"{path}: missing joints {missing[naming]} (joints named as {naming} names them; "
                         f"read: {', '.join(NAMINGS)})")
    table = NAMINGS[naming]
    pts = np.stack([pos[table[p]] for p in MOCAP_POINTS], 1) * unit_to_m
    rest_pts = np.stack([rest[table[p]] for p in MOCAP_POINTS]) * unit_to_m
    return MocapClip(path.stem, path.stem.split("_")[0], 1.0 / float(mocap.frame_time), pts.astype(np.float32),
                     rest_pts.astype(np.float32))
