"""Reading a retargeted pose set (``fit3d prepare-mocap`` / ``fit3d setup-model`` output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


#: Arrays every pose set has (``fit3d prepare-mocap`` and ``fit3d setup-model`` write them).
POSE_SET_KEYS = ("body_pose", "split", "joint_names")


def load_pose_set(path: str | Path) -> dict[str, np.ndarray]:
    """A ``prepare-mocap`` ``.npz`` as a dict of arrays.

    Raises:
        FileNotFoundError: missing file.
        ValueError: not a pose set (not an ``.npz`` of plain arrays, e.g. a JSON file or a
            pickle, or one without :data:`POSE_SET_KEYS`, e.g. a per-image fit), in one line
            with the path.
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
    pose, split, names = d["body_pose"], d["split"], d["joint_names"]
    if pose.ndim != 3 or pose.shape[-1] != 3 or split.shape != pose.shape[:1] or names.ndim != 1:
        # (a benchmark file has the three names, with a split per file and poses of other shapes)
        raise ValueError(f"{what}: body_pose {pose.shape} (expected (N, J, 3)), split {split.shape} (expected "
                         f"(N,)), joint_names {names.shape}")
    return d
