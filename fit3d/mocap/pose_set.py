"""Reading a retargeted pose set (``fit3d prepare-mocap`` / ``fit3d setup-model`` output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


#: Arrays every pose set has (``fit3d prepare-mocap`` and ``fit3d setup-model`` write them).
POSE_SET_KEYS = ("body_pose", "global_orient", "split", "joint_names")


def load_pose_set(path: str | Path) -> dict[str, np.ndarray]:
    """A ``prepare-mocap`` ``.npz`` as a dict of arrays.

    Raises:
        FileNotFoundError: missing file.
        ValueError: not a pose set (not an ``.npz`` of plain arrays, e.g. a JSON file or a
            pickle, or one without :data:`POSE_SET_KEYS`, e.g. a per-image fit), or one with a pose
            that is not finite (training on it diverged), in one line with the path.
    """
    import zipfile

    if not Path(path).is_file():
        raise FileNotFoundError(f"no such pose set: {path}")
    what = f"{path} is not a pose set from 'fit3d prepare-mocap' (an .npz of arrays)"
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # a plain .npy: one array
            raise ValueError("one array, not an .npz")
        with z:
            d = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # another format, pickled objects, cut short
        raise ValueError(f"{what}: {type(e).__name__}: {str(e)[:200]}") from e
    missing = [k for k in POSE_SET_KEYS if k not in d]
    if missing:
        raise ValueError(f"{what}: no {', '.join(map(repr, missing))}")
    pose, orient, split, names = d["body_pose"], d["global_orient"], d["split"], d["joint_names"]
    if (pose.ndim != 3 or pose.shape[-1] != 3 or split.shape != pose.shape[:1] or names.ndim != 1
            or orient.shape != (len(pose), 3)):
        # (a benchmark file has the three names, with a split per file and poses of other shapes)
        raise ValueError(f"{what}: body_pose {pose.shape} (expected (N, J, 3)), global_orient {orient.shape} "
                         f"(expected (N, 3)), split {split.shape} (expected (N,)), joint_names {names.shape}")
    if not (np.issubdtype(pose.dtype, np.floating) and np.issubdtype(orient.dtype, np.floating)):
        raise ValueError(f"{what}: body_pose and global_orient must be floating arrays, not {pose.dtype} / {orient.dtype}")
    bad = ~(np.isfinite(pose).all(axis=(1, 2)) & np.isfinite(orient).all(axis=1))
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} of {len(pose)} poses are not finite (the first is pose "
                         f"{int(np.argmax(bad))}): rerun 'fit3d prepare-mocap', which refuses them")
    return d
