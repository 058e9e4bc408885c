"""Acclaim ASF/AMC reader with forward kinematics (the CMU Graphics Lab format).

Format (Acclaim / CMU documentation): the ASF gives each bone a unit
``direction`` and ``length`` in the world frame of the rest pose, a local frame
``axis`` (Euler angles) and its degrees of freedom; ``:hierarchy``
lists children; ``:units`` the angle unit (``deg`` or ``rad``) and ``length``, the
factor that makes inches of the file's lengths (``inches = value / length``: CMU's
0.45); ``:root``'s ``order`` the root's channels in the order the AMC frames give
them and its rotations apply (CMU: ``TX TY TZ RX RY RZ``). Each AMC frame gives per
bone its rotations (in the bone's ``dof`` order; ``:DEGREES`` or ``:RADIANS``, by
default the ASF's angle unit) and the root's channels.
Per bone, ``L = C M C^-1`` with ``C = R(axis)`` and ``M = R(dof angles)`` (both
``R = Rz Ry Rx``, rotations about x, then y, then z); the root's rotation applies its
rotations in its ``order``; world ``W_bone = W_parent L``; the bone ends at
``end_parent + W_bone * direction * length``. A bone ``axis`` of another order than
``XYZ`` is refused (its meaning is not settled across exporters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from fit3d.mocap.clip import MOCAP_POINTS, MocapClip

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


#: The root's channels when the ASF names no ``order`` (CMU's).
ROOT_ORDER = ("tx", "ty", "tz", "rx", "ry", "rz")


@dataclass
class AsfUnits:
    """An ASF's ``:units``: ``angle`` ``"deg"`` or ``"rad"``; ``length``: its lengths are inches times
    this (CMU: 0.45), so one unit is ``2.54 / 100 / length`` metres (:attr:`metres`)."""

    angle: str = "deg"
    length: float = 0.45

    @property
    def metres(self) -> float:
        """Metres per length unit of the file."""
        return 2.54 / 100.0 / self.length


def parse_asf(path: str | Path, units: AsfUnits | None = None) -> dict[str, Bone]:
    """Bones of an ASF file (plus ``"root"``, whose ``dof`` is the ``:root`` section's ``order``),
    with children from ``:hierarchy``; axes in degrees (converted from radians where ``:units`` say
    ``angle rad``; ``units``: the file's :func:`asf_units` when the caller has read them).

    Raises:
        ValueError: malformed file, a root ``order`` that is not three translations and three
            rotations, or a bone ``axis`` order other than XYZ.
    """
    units = asf_units(path) if units is None else units
    to_deg = 180.0 / np.pi if units.angle == "rad" else 1.0
    lines = Path(path).read_text(errors="replace").splitlines()
    bones: dict[str, Bone] = {"root": Bone("root", np.zeros(3), 0.0, np.zeros(3), ROOT_ORDER)}
    section, cur = None, None
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(":"):
            section = line.split()[0]
            continue
        tok = line.split()
        if section == ":root" and tok[0].lower() == "order":
            order = tuple(t.lower() for t in tok[1:])
            if sorted(order) != sorted(ROOT_ORDER):
                raise ValueError(f"{path}: root order {' '.join(tok[1:])!r} is not three translations and three "
                                 "rotations (TX TY TZ RX RY RZ in some order)")
            bones["root"].dof = order
        elif section == ":bonedata":
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
                if len(tok) > 4 and tok[4].upper() != "XYZ":
                    raise ValueError(f"{path}: bone {cur.get('name')!r} has axis order {tok[4]!r}: only XYZ (CMU's) "
                                     "is read")
                cur["axis"] = [float(x) * to_deg for x in tok[1:4]]
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


def asf_units(path: str | Path) -> AsfUnits:
    """The ``:units`` section of an ASF file (CMU's where a value is missing).

    Raises:
        ValueError: an angle unit other than deg / rad, or a length factor that is not a positive number.
    """
    units, section = AsfUnits(), None
    for raw in Path(path).read_text(errors="replace").splitlines():
        tok = raw.split()
        if not tok or tok[0].startswith("#"):
            continue
        if tok[0].startswith(":"):
            section = tok[0]
            continue
        if section == ":units" and len(tok) >= 2:
            if tok[0] == "angle":
                if tok[1].lower() not in ("deg", "rad"):
                    raise ValueError(f"{path}: angle unit {tok[1]!r} is neither deg nor rad")
                units.angle = tok[1].lower()
            elif tok[0] == "length":
                try:
                    units.length = float(tok[1])
                except ValueError:
                    units.length = float("nan")
                if not units.length > 0 or not np.isfinite(units.length):
                    raise ValueError(f"{path}: length unit {tok[1]!r} is not a positive number")
    return units


def parse_amc(path: str | Path, bones: dict[str, Bone], angle: str = "deg") -> dict[str, np.ndarray]:
    """Per bone, ``(F, n_dof)`` values of an AMC file (rotations in degrees, converted from radians
    where the file says ``:RADIANS`` or, saying neither, ``angle`` is ``"rad"``; root translation in
    ASF units).

    Raises:
        OSError: the file cannot be read. ValueError: no frames, or a value that is not a number.
    """
    frames: list[dict[str, list[float]]] = []
    for raw in Path(path).read_text(errors="replace").splitlines():
        line = raw.strip()
        if line.upper() in (":RADIANS", ":DEGREES"):
            angle = "rad" if line.upper() == ":RADIANS" else "deg"
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
        if angle == "rad":
            rot = [i for i, d in enumerate(b.dof) if d.startswith("r")]
            out[name][:, rot] = np.degrees(out[name][:, rot])
    return out


def forward_kinematics(bones: dict[str, Bone], motion: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """World end position ``(F, 3)`` (ASF units) of every bone, ``"root"`` being the root position."""
    root, dof = motion["root"], list(bones["root"].dof)
    F = root.shape[0]
    order = {"rx": 0, "ry": 1, "rz": 2}
    turns = [d for d in dof if d in order]  # the root's rotations, applied in this order
    W = {"root": Rotation.from_euler("".join(d[1] for d in turns), root[:, [dof.index(d) for d in turns]],
                                     degrees=True).as_matrix()}
    end = {"root": root[:, [dof.index(d) for d in ("tx", "ty", "tz")]]}
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


def read_asf_amc(asf: str | Path, amc: str | Path, fps: float = 120.0, subject: str | None = None) -> MocapClip:
    """A clip of :data:`MOCAP_POINTS` in metres (the ASF's length unit, :class:`AsfUnits`) from an
    ASF skeleton and an AMC motion, with the skeleton's rest pose (every angle zero), named by the
    AMC file; ``subject``: by default the AMC name's part before its first ``_`` (CMU's ``NN`` of ``NN_MM``).

    Raises:
        OSError: a file cannot be read. ValueError: see :func:`parse_asf`, :func:`asf_units`, :func:`parse_amc`.
    """
    units = asf_units(asf)
    bones = parse_asf(asf, units)
    ends = forward_kinematics(bones, parse_amc(amc, bones, units.angle))
    pts = np.stack([ends[ASF_POINTS[p]] for p in MOCAP_POINTS], 1) * units.metres
    rest_ends = forward_kinematics(bones, {"root": np.zeros((1, len(bones["root"].dof)))})  # every angle zero
    rest = np.stack([rest_ends[ASF_POINTS[p]][0] for p in MOCAP_POINTS]) * units.metres
    stem = Path(amc).stem
    return MocapClip(stem, stem.split("_")[0] if subject is None else subject, fps, pts.astype(np.float32),
                     rest.astype(np.float32))
