"""Pseudo-GT files: one ``.npz`` per image and a run-level ``summary.json``, written atomically.

Per-image ``.npz`` keys (P people, leading dimension P; the image's people
that were not fitted are included with ``status = "skipped"``, NaN parameters
and ``valid = False``):

``image`` (str: the image's path relative to the image folder), ``image_size`` (2,),
``fitter`` (str), ``model`` (str), ``keypoint_names`` (K,), ``joint_names`` (J+1,),
``annot_id`` (P,), ``bbox`` (P, 4), ``bbox_note`` (P,) (why the box was rebuilt, or ""),
``duplicate_id`` (P,), ``track_id`` (P,) (the input's id across frames, -1 without),
``keypoints_2d`` (P, K, 3) input, in the input's convention (people of
several layouts in one image: the union of their layouts by name, points a person's layout
lacks unlabelled (0, 0, 0) and NaN in the fitted keypoint fields),
``global_orient`` (P, 3), ``body_pose`` (P, J, 3), ``betas`` (P, S), ``transl`` (P, 3),
``focal_length`` (P, 2), ``principal_point`` (P, 2),
``joints_3d`` (P, J+1, 3), ``keypoints_3d`` (P, K, 3) in the input's convention
(NaN where the model has no such keypoint), ``keypoints_2d_fit`` (P, K, 2),
``reproj_error_px`` (P,), ``valid`` (P,), ``loss`` (P,), ``iterations`` (P,),
``status`` (P,), ``skip_reason`` (P,), plus fitter extras (``hypothesis_yaw``...).
Camera frame: OpenCV, metres; pixels for 2D.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np


_UMASK = os.umask(0)
os.umask(_UMASK)


#: A temporary file of :func:`atomic_write`: ``.<name>.fit3d-<mkstemp's 8 characters>.tmp`` (the
#: marker keeps other hidden ``.tmp`` files out; names may hold any character but ``/``).
_TEMPORARY = re.compile(r"\..+\.fit3d-[a-z0-9_]{8}\.tmp", re.DOTALL)
#: Seconds after which :func:`remove_stale_temporaries` takes a temporary file for abandoned: a
#: day, so that a writer suspended meanwhile (a SLURM job stopped by gang scheduling, Ctrl-Z, a
#: hung network file system) does not lose its file (it would fail that image, refitted next run).
STALE_TEMPORARY_S = 24 * 3600


def remove_stale_temporaries(folder: str | Path, older_than_s: float = STALE_TEMPORARY_S) -> int:
    """Remove :func:`atomic_write`'s temporary files under ``folder`` last written more than
    ``older_than_s`` ago; returns how many. A process killed while writing (SIGKILL, a lost node)
    leaves its temporary file: hidden and never read, but never removed either. A write takes
    seconds, so a file a day old belongs to no running writer (other shards write into the same
    folder meanwhile: their files are fresh)."""
    now, removed = time.time(), 0
    for top, _, names in os.walk(folder):
        for name in names:
            if _TEMPORARY.fullmatch(name):
                path = os.path.join(top, name)
                try:
                    if now - os.stat(path).st_mtime > older_than_s:
                        os.unlink(path)
                        removed += 1
                except OSError:  # (gone meanwhile, or not ours to remove)
                    continue
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (no half-written files)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(f)`` on a binary file that becomes ``path`` once it returns: a temporary file
    beside ``path``, flushed to disk and renamed (no half-written files; on any error, or an
    interruption, the temporary file is removed and ``path`` is as it was)."""
    # (the folder as the OS finds it: through a link then '..', mkdir and open go where the link points,
    # while mkstemp names its file by the path written out, so the temporary file was not found again)
    path = Path(path).parent.resolve() / Path(path).name
    path.parent.mkdir(parents=True, exist_ok=True)
    # (the name's first 64 bytes: a whole long name plus mkstemp's 14 went past the file
    # system's 255 bytes, so a legal output name could never be written)
    short = os.fsencode(path.name)[:64].decode(errors="ignore") or "out"
    fd, tmp = tempfile.mkstemp(prefix=f".{short}.fit3d-", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Save ``arrays`` as an uncompressed ``.npz`` at ``path``, atomically, streamed to the file
    (a merged dataset of millions of people is not built a second time in memory)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def write_torch(path: str | Path, obj) -> None:
    """Save ``obj`` with ``torch.save`` at ``path``, atomically (weights, checkpoints)."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def read_torch(path: str | Path, weights_only: bool = True) -> dict:
    """Load a file written by :func:`write_torch` (weights, checkpoints) onto the CPU.

    ``weights_only``: torch's safe loader (tensors, numbers, strings, containers), as for every
    weights file fit3d ships; False only for fit3d's own training checkpoints (optimiser and
    random-number states).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a torch file holding a dict (another format, cut short, empty, classes
            the loader cannot find), with the path and torch's reason in one line. torch's
            legacy (non-zip) format is read too.
    """
    import pickle

    import torch

    if not Path(path).exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, AttributeError, ImportError,
            ValueError, OSError, KeyError, IndexError, TypeError, UnicodeDecodeError) as e:  # (legacy reads of garbage)
        if not zipfile.is_zipfile(path):  # torch.save's format (torch's legacy format was tried above)
            raise ValueError(f"{path} is not a torch file (torch.save writes a zip archive)") from e
        reason = str(e).split("WeightsUnpickler error:")[-1].strip() or type(e).__name__
        raise ValueError(f"{path} is not a readable torch file of weights ({reason.splitlines()[0][:200]})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not fit3d's weights")
    return obj


def write_json(path: str | Path, obj, strict: bool = False) -> None:
    """Save ``obj`` as indented JSON at ``path``, atomically (:func:`json_text`)."""
    atomic_write_bytes(path, (json_text(obj, strict) + "\n").encode())


def json_text(obj, strict: bool = False) -> str:
    """``obj`` as indented JSON text (numpy values as numbers and lists, paths as strings).

    ``strict``: valid JSON, with every non-finite float (NaN, +-inf, numpy's too) written as
    ``null`` (:func:`finite_or_none`); otherwise Python's bare ``NaN`` / ``Infinity``.
    """
    if strict:
        obj = finite_or_none(obj)
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=not strict)


def finite_or_none(obj):
    """``obj`` with every non-finite float replaced by None, through dicts, lists, tuples and numpy
    values (arrays become lists); other values as they are."""
    if isinstance(obj, (np.ndarray, np.generic)):
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def output_path(out_dir: str | Path, image_key: str) -> Path:
    """The ``.npz`` of an image: ``<out_dir>/<image path relative to the image folder>.npz``
    (``sub/a.jpg`` -> ``OUT/sub/a.jpg.npz``: subfolders mirrored, the extension kept so
    that ``a.jpg`` and ``a.png`` differ)."""
    return Path(out_dir) / (image_key + ".npz")


def fit_name(out_dir: str | Path, path: Path) -> str:
    """The name of a fit file ``path`` of ``out_dir``: its relative path without ``.npz``, the inverse of
    :func:`output_path` (the image's key for the files a run writes). Renders, meshes and review sets
    name a fit file by it."""
    return path.relative_to(out_dir).as_posix()[: -len(".npz")]


def failure_path(out_dir: str | Path, image_key: str) -> Path:
    """Where a run records why an image's people could not be fitted (``<key>.failed.json``;
    removed when a later run writes the image's ``.npz``)."""
    return Path(out_dir) / (image_key + ".failed.json")


def incomplete_path(out_dir: str | Path, image_key: str) -> Path:
    """Where a run records that an image's ``.npz`` lacks people whose annotations could not
    be read (``<key>.incomplete.json``; the next run fits the image again, and removes it
    once the image is written with every annotation read)."""
    return Path(out_dir) / (image_key + ".incomplete.json")


def iter_fit_files(out_dir: str | Path):
    """The per-image ``.npz`` files of :func:`fit_files`, as found (unsorted, lazily)."""
    return (p for p in Path(out_dir).rglob("*.npz") if p.is_file() and not p.name.startswith(".") and Path(p.stem).suffix)


def fit_files(out_dir: str | Path) -> list[Path]:
    """Every per-image ``.npz`` under ``out_dir`` (subfolders included), sorted: files named
    ``<image name with its extension>.npz`` (``a.jpg.npz``), so that a merged dataset file
    (``dataset.npz``, :mod:`fit3d.pipeline.merge`) or hidden temporary files are not taken."""
    return sorted(iter_fit_files(out_dir))


def require_fit_files(out_dir: str | Path) -> list[Path]:
    """:func:`fit_files`, for the commands that read a run's folder (merge, export, render,
    report, evaluate).

    Raises:
        ValueError: ``out_dir`` holds no per-image ``.npz`` (a folder that is no fit3d run, or
            a run that has written nothing yet): the same one-line error, exit 1, everywhere.
    """
    files = fit_files(out_dir)
    if not files:
        raise ValueError(f"no per-image fits (<image name>.npz, e.g. a.jpg.npz) under {out_dir}: "
                         "is it the --out folder of a fitting run?")
    return files


def has_fit_files(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds a per-image ``.npz`` (:func:`fit_files`), stopping at the first."""
    return next(iter_fit_files(out_dir), None) is not None


def first_fit_model(files) -> str | None:
    """The body model (``model``) of the first readable per-image fit among ``files`` (paths, taken
    lazily: one file is read where the first is readable), None when none can be read: what a
    command that needs the model of a folder's fits asks before reading them all."""
    for f in files:
        try:
            return str(read_fit(f)["model"])
        except (OSError, ValueError, KeyError):  # (read_fit's errors, and a file without a model)
            continue
    return None


def read_fit(path: str | Path) -> dict[str, np.ndarray]:
    """Load a per-image ``.npz`` into a dict (strings as numpy str arrays).

    Raises:
        OSError / ValueError: unreadable or corrupt file (a truncated or empty ``.npz`` too).
    """
    try:
        z = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError) as e:  # numpy's errors for a cut-short or empty file
        raise ValueError(f"corrupt .npz {path}: {e}") from e
    if not isinstance(z, np.lib.npyio.NpzFile):  # (an .npy under a fit's name: a TypeError traceback in merge)
        raise ValueError(f"{path} is a single array (an .npy file), not a fit's .npz")
    try:
        with z:
            fit = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"corrupt .npz {path}: {e}") from e
    raw = sorted(k for k, v in fit.items() if not isinstance(v, np.ndarray))
    if raw:  # (numpy gives a member without the .npy header as bytes: a TypeError traceback in merge)
        raise ValueError(f"corrupt .npz {path}: {', '.join(raw)} not an array")
    return fit
