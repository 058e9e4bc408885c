"""Acclaim ASF/AMC reader with forward kinematics (the CMU Graphics Lab format).

Format (Acclaim / CMU documentation): the ASF gives each bone a unit
``direction`` and ``length`` in the world frame of the rest pose, a local frame
``axis`` (Euler angles, degrees) and its degrees of freedom; ``:hierarchy``
lists children. Each AMC frame gives per bone its rotations (degrees, in the
bone's ``dof`` order) and for the root ``TX TY TZ RX RY RZ``.
Per bone, ``L = C M C^-1`` with ``C = R(axis)`` and ``M = R(dof angles)`` (both
``R = Rz Ry Rx``); world ``W_bone = W_parent L``; the bone ends at
``end_parent + W_bone * direction * length``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from fit3d.mocap.clip import CMU_UNIT_TO_M, MOCAP_POINTS, MocapClip

#: MOCAP_POINTS -> ASF bone whose end it is ("root" is the root position).
ASF_POINTS = {
    "pelvis": "root", "left_hip": "lhipjoint", "right_hip": "rhipjoint", "left_knee": "lfemur",
    "right_knee": "rfemur", "left_ankle": "ltibia", "right_ankle": "rtibia", "left_toe": "lfoot",
    "right_toe": "rfoot", "spine_top": "upperback", "neck": "thorax", "head": "upperneck", "head_top": "head",
    "left_shoulder": "lclavicle", "right_shoulder": "rclavicle", "left_elbow": "lhumerus",
    "right_elbow": "rhumerus", "left_wrist": "lradius", "right_wrist": "rradius",
}  # fmt: skip


@dataclass
class Bone:
    """One bone of an ASF skeleton: ``direction`` (3,) unit vector and ``length`` in the file's
    units, ``axis`` (3,) its local frame as x, y, z Euler angles in degrees, ``dof`` the rotations
    its AMC frames give (``rx``, ``ry``, ``rz``), ``children`` the bones hung below it."""

    name: str
    direction: np.ndarray
    length: float
    axis: np.ndarray  # degrees
    dof: tuple[str, ...] = ()
    children: list[str] = field(default_factory=list)


def _euler(deg: np.ndarray) -> np.ndarray:
    """``(..., 3)`` x, y, z degrees -> ``Rz Ry Rx`` matrices (extrinsic xyz)."""
    return Rotation.from_euler("xyz", deg, degrees=True).as_matrix()


def parse_asf(path: str | Path) -> dict[str, Bone]:
    """Bones of an ASF file (plus ``"root"``), with children from ``:hierarchy``.

    Raises:
        ValueError: malformed file.
    """
    lines = Path(path).read_text(errors="replace").splitlines()
    bones: dict[str, Bone] = {"root": Bone("root", np.zeros(3), 0.0, np.zeros(3), ("tx", "ty", "tz", "rx", "ry", "rz"))}
    section, cur = None, None
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(":"):
            section = line.split()[0]
            continue
        tok = line.split()
        if section == ":bonedata":
            if tok[0] == "begin":
                cur = {}
            elif tok[0] == "end":
                b = Bone(cur["name"], np.asarray(cur["direction"], float), float(cur["length"]),
                         np.asarray(cur.get("axis", [0, 0, 0]), float), tuple(cur.get("dof", ())))
                bones[b.name] = b
                cur = None
            elif cur is not None and tok[0] in ("name", "length"):
                cur[tok[0]] = tok[1]
            elif cur is not None and tok[0] == "direction":
                cur["direction"] = [float(x) for x in tok[1:4]]
            elif cur is not None and tok[0] == "axis":
                cur["axis"] = [float(x) for x in tok[1:4]]
            elif cur is not None and tok[0] == "dof":
                cur["dof"] = tok[1:]
        elif section == ":hierarchy" and tok[0] not in ("begin", "end"):
            parent = tok[0]
            if parent not in bones:
                raise ValueError(f"{path}: hierarchy names unknown bone {parent!r}")
            bones[parent].children.extend(tok[1:])
    if len(bones) < 2:
        raise ValueError(f"{path}: no bones found")
    return bones


def parse_amc(path: str | Path, bones: dict[str, Bone]) -> dict[str, np.ndarray]:
    """Per bone, ``(F, n_dof)`` values of an AMC file (degrees; root translation in ASF units).

    Raises:
        OSError: the file cannot be read. ValueError: no frames, or a value that is not a number.
    """
    frames: list[dict[str, list[float]]] = []
    for raw in Path(path).read_text(errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith(":"):
            continue
        tok = line.split()
        if len(tok) == 1 and tok[0].isdigit():
            frames.append({})
        elif frames:
            frames[-1][tok[0]] = [float(x) for x in tok[1:]]
    if not frames:
        raise ValueError(f"{path}: no frames")
    out = {}
    for name, b in bones.items():
        n = len(b.dof)
        out[name] = np.asarray([f.get(name, [0.0] * n) for f in frames], dtype=np.float64).reshape(len(frames), n)
    return out


def forward_kinematics(bones: dict[str, Bone], motion: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """World end position ``(F, 3)`` (ASF units) of every bone, ``"root"`` being the root position."""
    root = motion["root"]
    F = root.shape[0]
    order = {"rx": 0, "ry": 1, "rz": 2}
    W = {"root": _euler(root[:, 3:6])}
    end = {"root": root[:, :3]}
    stack = [(c, "root") for c in bones["root"].children]
    while stack:
        name, parent = stack.pop()
        b = bones[name]
        ang = np.zeros((F, 3))
        vals = motion.get(name)
        for i, d in enumerate(b.dof):
            if d in order and vals is not None and vals.shape[1] > i:
                ang[:, order[d]] = vals[:, i]
        C = _euler(b.axis)
        L = C @ _euler(ang) @ C.T
        W[name] = W[parent] @ L
        # the direction is given in the world frame of the rest pose, where W = I
        end[name] = end[parent] + np.einsum("fij,j->fi", W[name], b.direction * b.length)
        stack.extend((c, name) for c in b.children)
    return end


def read_asf_amc(asf: str | Path, amc: str | Path, fps: float = 120.0) -> MocapClip:
    """A clip of :data:`MOCAP_POINTS` in metres from an ASF skeleton and an AMC motion."""
    bones = parse_asf(asf)
    ends = forward_kinematics(bones, parse_amc(amc, bones))
    pts = np.stack([ends[ASF_POINTS[p]] for p in MOCAP_POINTS], 1) * CMU_UNIT_TO_M
    stem = Path(amc).stem
    return MocapClip(stem, stem.split("_")[0], fps, pts.astype(np.float32))
