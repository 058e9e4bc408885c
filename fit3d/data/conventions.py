"""Named keypoint conventions and the index maps between them.

A keypoint array is only meaningful together with its convention: the list of
keypoint names in order. Two arrays are never compared by position; they go
through :func:`index_map` (or :func:`convert`) first, which matches them by name.

Names follow COCO's snake_case spelling (``left_shoulder``). OpenPose's extra
points use ``neck`` and ``mid_hip``; the COCO-WholeBody foot points use
``left_big_toe``, ``left_small_toe``, ``left_heel`` (and right).

Sources: COCO keypoint task (Lin et al. 2014); OpenPose output format
(``doc/02_output.md``, BODY_25 and COCO-18 layouts); COCO-WholeBody foot points
(Jin et al. 2020).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KeypointConvention:
    """An ordered list of keypoint names.

    Attributes:
        name: short identifier (``"coco17"``).
        names: the K keypoint names, in array order.
    """

    name: str
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Position of keypoint ``name``. Raises ``KeyError`` when absent."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"keypoint {name!r} is not in convention {self.name!r}") from None

    def indices(self, names: list[str] | tuple[str, ...]) -> list[int]:
        """Positions of the given names that exist in this convention (others dropped)."""
        return [self.names.index(n) for n in names if n in self.names]


COCO17 = KeypointConvention(
    "coco17",
    (
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ),
)

FOOT6 = (
    "left_big_toe",
    "left_small_toe",
    "left_heel",
    "right_big_toe",
    "right_small_toe",
    "right_heel",
)

COCO23 = KeypointConvention("coco23", COCO17.names + FOOT6)

OPENPOSE_BODY25 = KeypointConvention(
    "openpose_body25",
    (
        "nose",
        "neck",
        "right_shoulder",
        "right_elbow",
        "right_wrist",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
        "mid_hip",
        "right_hip",
        "right_knee",
        "right_ankle",
        "left_hip",
        "left_knee",
        "left_ankle",
        "right_eye",
        "left_eye",
        "right_ear",
        "left_ear",
        "left_big_toe",
        "left_small_toe",
        "left_heel",
        "right_big_toe",
        "right_small_toe",
        "right_heel",
    ),
)

#: OpenPose's BODY_25B (its experimental model, ``--model_pose BODY_25B``; ``POSE_BODY_25B_BODY_PARTS``
#: in OpenPose's ``poseParameters.cpp``): COCO-17's order, upper neck and head top, then the six
#: foot points. Its JSON has BODY_25's 75 values, in another order: ``read_openpose(model=
#: "body_25b")`` reads it (:func:`fit3d.data.openpose.read_openpose`, which warns when the points
#: look like the other model).
OPENPOSE_BODY25B = KeypointConvention(
    "openpose_body25b",
    ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
     "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
     "right_ankle", "upper_neck", "head_top", "left_big_toe", "left_small_toe", "left_heel", "right_big_toe",
     "right_small_toe", "right_heel"),
)  # fmt: skip

OPENPOSE_COCO18 = KeypointConvention(
    "openpose_coco18",
    (
        "nose",
        "neck",
        "right_shoulder",
        "right_elbow",
        "right_wrist",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
        "right_hip",
        "right_knee",
        "right_ankle",
        "left_hip",
        "left_knee",
        "left_ankle",
        "right_eye",
        "left_eye",
        "right_ear",
        "left_ear",
    ),
)

#: The 24 ground-truth joints of SPIN's preprocessed datasets (``part`` and ``S``):
#: LSP's 14, then MPII pelvis and thorax, H36M spine, jaw and head, and the face points.
SPIN24 = KeypointConvention(
    "spin24",
    (
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
        "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
        "neck_lsp", "head_top", "pelvis_mpii", "thorax_mpii", "spine_h36m", "jaw_h36m", "head_h36m",
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    ),
)  # fmt: skip

#: A SPIN ``.npz`` with OpenPose detections (``part`` and ``openpose``, :mod:`fit3d.data.spin`):
#: BODY_25's 25 points, then the SPIN-24 points BODY_25 lacks (head top, LSP neck, MPII pelvis
#: and thorax, H36M spine, jaw and head).
SPIN_OPENPOSE = KeypointConvention(
    "spin24_openpose25", OPENPOSE_BODY25.names + tuple(n for n in SPIN24.names if n not in OPENPOSE_BODY25.names))
#: The BODY_25 points SPIN-24 has no place for (the feet, OpenPose's neck and mid hip): the only
#: detections of a SPIN file that are read, and the only ones a SPIN export writes back.
SPIN_DETECTED_ONLY = tuple(n for n in OPENPOSE_BODY25.names if n not in SPIN24.names)

#: CrowdPose (Li et al., CVPR 2019): COCO's 12 limb points, then the top of the head and the neck.
CROWDPOSE14 = KeypointConvention(
    "crowdpose14",
    ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
     "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head_top", "neck"),
)  # fmt: skip
#: MPII Human Pose (Andriluka et al., CVPR 2014), in its joint-id order 0-15.
MPII16 = KeypointConvention(
    "mpii16",
    ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
     "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
     "left_wrist"),
)  # fmt: skip
#: Halpe-26 (AlphaPose's full-body set): COCO-17, head top, neck, mid hip, then the six foot points.
HALPE26 = KeypointConvention(
    "halpe26",
    COCO17.names + ("head_top", "neck", "mid_hip", "left_big_toe", "right_big_toe", "left_small_toe",
                    "right_small_toe", "left_heel", "right_heel"),
)  # fmt: skip

CONVENTIONS: dict[str, KeypointConvention] = {
    c.name: c for c in (COCO17, COCO23, OPENPOSE_BODY25, OPENPOSE_BODY25B, OPENPOSE_COCO18, SPIN24, SPIN_OPENPOSE,
                        CROWDPOSE14, MPII16, HALPE26)
}

#: Spellings of keypoint names in the wild -> fit3d's names (after lower-casing and
#: turning spaces and dashes into underscores). Side prefixes (``l_``, ``r_``, ``L``,
#: ``R`` in OpenPose's CamelCase) are expanded by :func:`canonical_keypoint_name`.
KEYPOINT_ALIASES = {
    "head": "head_top", "top_head": "head_top", "headtop": "head_top", "head_tip": "head_top",
    "hip": "mid_hip", "midhip": "mid_hip", "root": "pelvis", "upperneck": "upper_neck", "chest": "thorax",
}  # fmt: skip
#: Spellings of the part after a side prefix (``left_bigtoe`` -> ``left_big_toe``). BlazePose's
#: (MediaPipe Pose's) ``foot_index``, the tip of the foot at the second toe, is read as the big
#: toe's tip a toe's width away, which gives the foot's direction as OpenPose's big toe does.
SIDED_ALIASES = {"bigtoe": "big_toe", "smalltoe": "small_toe", "littletoe": "small_toe", "footindex": "big_toe"}
#: Names of points that fit3d's body models do not have; readers ignore them (one
#: warning line per file): head top, neck, upper neck, thorax, pelvis and mid hip are
#: defined differently in every dataset (MPII's pelvis is not the midpoint of its hips).
UNMODELLED = ("head_top", "neck", "upper_neck", "thorax", "pelvis", "mid_hip")


def canonical_keypoint_name(name: str) -> str:
    """A keypoint name in fit3d's spelling: ``"LShoulder"``, ``"LSHOULDER"``, ``"l_shoulder"``,
    ``"Left Shoulder"``, ``"LEFT_SHOULDER"`` and ``"left_shoulder"`` all give ``"left_shoulder"``;
    unknown names come back lower-cased. A leading L or R before a capital is read as the side
    (OpenPose's ``LShoulder``) only where the rest then names a known sided point (``ROOT`` is
    the root, not a right "oot")."""
    import re

    text = str(name).strip()
    side = re.match(r"^([LR])(?=[A-Z])(.+)$", text)
    if side and not re.match(r"^(LEFT|RIGHT)(_|\s|$)", text, re.IGNORECASE):
        split = _canonical(f"{side.group(1)}_{side.group(2)}")
        if split.split("_", 1)[1] in _sided_names():
            return split
    return _canonical(text)


def _canonical(text: str) -> str:
    import re

    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text) if not text.islower() else text  # CamelCase -> snake
    n = re.sub(r"[\s\-]+", "_", snake.strip().lower())
    for short, side in (("l_", "left_"), ("r_", "right_")):
        if n.startswith(short):
            n = side + n[2:]
    if n.startswith(("left_", "right_")):
        side, rest = n.split("_", 1)
        return f"{side}_{SIDED_ALIASES.get(rest.replace('_', ''), rest)}"
    return KEYPOINT_ALIASES.get(n.replace("_", ""), KEYPOINT_ALIASES.get(n, n))


@functools.lru_cache(maxsize=1)
def _sided_names() -> frozenset[str]:
    """The points that known layouts name with a side (``shoulder``, ``big_toe``, ...)."""
    return frozenset({n.split("_", 1)[1] for c in CONVENTIONS.values() for n in c.names
                      if n.startswith(("left_", "right_"))} | set(SIDED_ALIASES.values()))


def convention_from_names(names, name: str = "file") -> KeypointConvention:
    """The convention of a list of keypoint names as a dataset spells them (canonicalised
    with :func:`canonical_keypoint_name`; a known layout is returned by its own name)."""
    canon = tuple(canonical_keypoint_name(n) for n in names)
    for c in CONVENTIONS.values():
        if c.names == canon:
            return c
    return KeypointConvention(name, canon)


def union_convention(conventions, name: str = "union") -> KeypointConvention:
    """Every keypoint name of ``conventions`` once: the layout that holds people of several
    layouts side by side (one image, or one dataset file, with people annotated in different
    layouts). The result does not depend on the order of ``conventions``: a convention whose
    names include all the others' is returned as it is (BODY_25 for BODY_25 and COCO-18, so
    exports that recognise whole layouts still do); otherwise the names of the largest
    convention come first, then the others' new names (conventions ordered by size, then names).

    Raises:
        ValueError: ``conventions`` is empty.
    """
    distinct = sorted({c.names: c for c in conventions}.values(), key=lambda c: (-len(c), c.names))
    if not distinct:
        raise ValueError("no keypoint conventions to unite")
    first = set(distinct[0].names)
    if all(first.issuperset(c.names) for c in distinct[1:]):
        return distinct[0]
    return KeypointConvention(name, tuple(dict.fromkeys(n for c in distinct for n in c.names)))

#: Keypoints that define the torso, used for camera initialisation and stage 1.
TORSO = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
#: Face keypoints: evidence of which way the person faces.
FACE = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
#: The 12 limb joints shared by LSP and COCO (no head points).
LIMBS12 = (
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)


def mirror_permutation(names) -> np.ndarray:
    """``(N,)`` index of each name's left-right counterpart: ``left_x`` <-> ``right_x``, other
    names map to themselves. ``points[..., mirror_permutation(names), :]`` swaps the sides of
    points (keypoints or joints) listed in ``names`` order.

    Raises:
        ValueError: a ``left_``/``right_`` name has no counterpart in ``names``.
    """
    names = list(names)
    perm = []
    for n in names:
        other = "right_" + n[5:] if n.startswith("left_") else "left_" + n[6:] if n.startswith("right_") else n
        if other not in names:
            raise ValueError(f"{n!r} has no left-right counterpart {other!r}; cannot mirror")
        perm.append(names.index(other))
    return np.asarray(perm, dtype=np.int64)


def get_convention(name: str) -> KeypointConvention:
    """Look up a convention by name. Raises ``KeyError`` listing the known names."""
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise KeyError(f"unknown keypoint convention {name!r}; known: {sorted(CONVENTIONS)}") from None


@functools.lru_cache(maxsize=256)
def index_map(src: KeypointConvention, dst: KeypointConvention) -> tuple[np.ndarray, np.ndarray]:
    """Matching positions of the keypoints that both conventions name (computed once per pair
    of conventions: every person of a layout, every file of a merge, maps the same way).

    Returns:
        ``(src_idx, dst_idx)``, two read-only int arrays of equal length M, such that
        ``src_array[..., src_idx, :]`` and ``dst_array[..., dst_idx, :]`` hold the
        same M keypoints in the same order.
    """
    pairs = [(i, dst.names.index(n)) for i, n in enumerate(src.names) if n in dst.names]
    s, d = (np.asarray(v, dtype=np.int64) for v in (zip(*pairs) if pairs else ((), ())))
    s.setflags(write=False)
    d.setflags(write=False)
    return s, d


def convert(keypoints: np.ndarray, src: KeypointConvention, dst: KeypointConvention,
            fill: float = 0.0) -> np.ndarray:
    """Re-order keypoints from ``src`` to ``dst`` by name.

    Args:
        keypoints: ``(..., K_src, C)`` array (C = 3 for ``x, y, confidence``).
        fill: the value of keypoints ``src`` does not have.
    Returns:
        ``(..., K_dst, C)`` array (a new one); keypoints that ``src`` does not have are
        ``fill``: by default all zeros (so their confidence is 0 and they carry no weight); a
        point that ``src`` names more than once is, per person, the first of them with a
        confidence above 0 (the first of them when none has one; channel 2 is read as the
        confidence when C > 2: for fitted 3D points, whose duplicates are one model point, any
        of them is the same).
    Raises:
        ValueError: when the keypoint axis does not match ``len(src)``.
    """
    keypoints = np.asarray(keypoints)
    if keypoints.shape[-2] != len(src):
        raise ValueError(
            f"keypoints have {keypoints.shape[-2]} points but convention {src.name!r} has {len(src)}"
        )
    out = np.full(keypoints.shape[:-2] + (len(dst), keypoints.shape[-1]), fill, dtype=keypoints.dtype)
    s, d = index_map(src, dst)
    out[..., d, :] = keypoints[..., s, :]
    for j, sources in _shared_names(src, dst):  # several src points of one name: the first labelled one
        vals = keypoints[..., list(sources), :]
        first = (vals[..., 2] > 0).argmax(-1) if vals.shape[-1] > 2 else np.zeros(vals.shape[:-2], np.int64)
        out[..., j, :] = np.take_along_axis(vals, first[..., None, None], axis=-2)[..., 0, :]
    return out


@functools.lru_cache(maxsize=256)
def _shared_names(src: KeypointConvention, dst: KeypointConvention) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """``((dst index, [src indices]), ...)`` for the ``dst`` points that several ``src`` points
    name (e.g. Halpe-136 as mmpose names it: the body's wrists and the hands' roots are all
    ``left_wrist`` / ``right_wrist``; only the body's are annotated in its body-only files)."""
    s, d = index_map(src, dst)
    groups: dict[int, list[int]] = {}
    for i, j in zip(s.tolist(), d.tolist()):
        groups.setdefault(j, []).append(i)
    return tuple((j, tuple(v)) for j, v in groups.items() if len(v) > 1)
