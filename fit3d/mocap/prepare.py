"""From CMU mocap archives to a compact set of retargeted poses, split by subject.

Steps: read every ASF/AMC and BVH trial (from folders or ``.tar.xz``/``.tar.gz``
archives), subsample (120 Hz -> ``fps``), drop near-duplicate frames (no
root-centred point moved more than ``dedupe_m`` since the last kept frame),
split by subject (:mod:`fit3d.mocap.splits`), retarget to the body model
(:func:`fit3d.mocap.retarget.retarget`) and save.
"""

from __future__ import annotations

import json
import logging
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fit3d import __version__
from fit3d.mocap.asf_amc import read_asf_amc
from fit3d.mocap.bvh_reader import read_bvh
from fit3d.mocap.clip import MOCAP_POINTS, MocapClip
from fit3d.mocap.splits import missing_test_subjects, subject_split, trial_split_v1

log = logging.getLogger(__name__)


def _extract(path: Path, into: Path) -> Path:
    """Unpack the archive ``path`` into ``into``.

    Raises:
        ValueError: ``path`` is no archive tarfile reads (one line with the path).
    """
    try:
        with tarfile.open(path) as tf:
            tf.extractall(into, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:  # (a text file, an empty or cut-short archive)
        raise ValueError(f"{path} is not a mocap archive (a .tar, .tar.gz or .tar.xz of ASF/AMC or BVH files; "
                         f"or give a folder of them): {str(e).splitlines()[0].rstrip(':') if str(e) else type(e).__name__}") from e
    return into


def skeleton_of(amc: Path) -> Path | None:
    """The ASF skeleton of an AMC motion, in its folder: ``NN.asf`` for CMU's ``NN_MM.amc``, else the
    ASF with the longest name the motion's name starts with (HDM05's ``HDM_bd.asf`` for
    ``HDM_bd_01-01_01_120.amc``), else the folder's only ASF; None when there is none, or several and
    none is named so (any pick could be another actor's skeleton)."""
    cmu = amc.parent / (amc.stem.split("_")[0] + ".asf")
    if cmu.is_file():
        return cmu
    cands = sorted(amc.parent.glob("*.asf"))
    named = [a for a in cands if amc.stem.startswith(a.stem)]
    if named:
        return max(named, key=lambda a: len(a.stem))
    return cands[0] if len(cands) == 1 else None


def find_clips(root: Path) -> list[MocapClip]:
    """Every ASF/AMC trial (each AMC with its skeleton, :func:`skeleton_of`; the subject is the
    skeleton's name, CMU's ``NN``) and BVH file under ``root``.

    Unreadable files are logged and skipped.
    """
    clips = []
    for amc in sorted(root.rglob("*.amc")):
        asf = skeleton_of(amc)
        if asf is None:
            log.warning("no ASF skeleton for %s (none in its folder, or several and none named as its start): "
                        "skipped", amc)
            continue
        try:
            clips.append(read_asf_amc(asf, amc, subject=asf.stem))
        except Exception as e:
            log.warning("could not read %s: %s", amc, e)
    for bvh in sorted(root.rglob("*.bvh")):
        try:
            clips.append(read_bvh(bvh))
        except Exception as e:
            log.warning("could not read %s: %s", bvh, e)
    return clips


def load_clips(sources: list[str | Path]) -> list[MocapClip]:
    """Clips from folders and archives (archives are unpacked to a temporary folder).

    Raises:
        FileNotFoundError: a source does not exist.
    """
    clips = []
    for src in sources:
        src = Path(src)
        if not src.exists():
            raise FileNotFoundError(f"mocap source not found: {src}")
        if src.is_dir():
            archives = sorted(list(src.glob("*.tar.xz")) + list(src.glob("*.tar.gz")))
            clips += find_clips(src)
            for a in archives:
                with tempfile.TemporaryDirectory() as d:
                    clips += find_clips(_extract(a, Path(d)))
        else:
            with tempfile.TemporaryDirectory() as d:
                clips += find_clips(_extract(src, Path(d)))
    names = [c.name for c in clips]
    if len(set(names)) != len(names):  # the same trial from two sources: keep the first
        seen, uniq = set(), []
        for c in clips:
            if c.name not in seen:
                seen.add(c.name)
                uniq.append(c)
        clips = uniq
    return clips


#: A clip whose median leg (hip - knee - ankle) is outside this range, in metres, was likely read
#: in other length units than its file's (BVH: CMU's assumed; ASF: its ``:units length``).
LEG_RANGE_M = (0.35, 1.4)


def usable_frames(clip: MocapClip) -> MocapClip | None:
    """``clip`` without its frames holding a non-finite point (each dropped with a warning: one NaN
    frame first in a trial made the near-duplicate test keep nothing else), or None (with a
    warning) when none is left; warns when its legs are implausibly long or short for metres."""
    finite = np.isfinite(clip.points).all(axis=(1, 2))
    if not finite.all():
        log.warning("%s: %d of %d frames with non-finite points dropped", clip.name, int((~finite).sum()), len(finite))
        clip = MocapClip(clip.name, clip.subject, clip.fps, clip.points[finite], clip.rest)
    if not len(clip.points):
        log.warning("%s: no frame with finite points: skipped", clip.name)
        return None
    at = {n: clip.points[:, MOCAP_POINTS.index(n)] for n in ("left_hip", "left_knee", "left_ankle")}
    leg = float(np.median(np.linalg.norm(at["left_hip"] - at["left_knee"], axis=-1)
                          + np.linalg.norm(at["left_knee"] - at["left_ankle"], axis=-1)))
    if not LEG_RANGE_M[0] <= leg <= LEG_RANGE_M[1]:
        log.warning("%s: its legs are %.2f m long as read: is it in CMU's length units (a BVH file) or does its "
                    "ASF say its units (:units length)? Near-duplicate frames (dedupe_m) and the residuals are "
                    "in metres", clip.name, leg)
    return clip


def dedupe(points: np.ndarray, threshold_m: float) -> np.ndarray:
    """Indices of frames kept: a frame is kept when some root-centred point moved more
    than ``threshold_m`` since the last kept frame."""
    centred = points - points[:, :1]
    keep = [0]
    for t in range(1, len(points)):
        if np.abs(centred[t] - centred[keep[-1]]).max() > threshold_m:
            keep.append(t)
    return np.asarray(keep, dtype=np.int64)


def prepare_mocap(
    sources: list[str | Path],
    out: str | Path,
    body_model,
    fps: float = 10.0,
    dedupe_m: float = 0.03,
    iterations: int = 300,
    progress: bool = True,
) -> dict:
    """Build the retargeted pose set and save it as ``.npz``.

    Saved keys: ``body_pose (N, J, 3)``, ``global_orient (N, 3)`` (mocap world,
    Y up), ``trial (N,)`` index into ``trial_names``, ``subject_names`` (per trial),
    ``split (N,)`` (``train``/``val``/``test`` by subject, see :mod:`fit3d.mocap.splits`),
    ``is_test_v1 (N,)`` (the old trial protocol, for the old benchmark only),
    ``residual_mm (N,)``, ``direction_error_deg (N,)``, ``joint_names``, ``model``, ``fps``,
    ``prepared_with`` (JSON: the sources' names, the settings, fit3d's and torch's versions, the thread count).
    Returns a stats dict (counts per split, residuals, seconds).

    Frames with a non-finite point are dropped (:func:`usable_frames`, with a warning).

    Raises:
        FileNotFoundError: a source does not exist. ValueError: no trial found, none with a finite
            frame, or a retargeted pose that is not finite (nothing is written).
    """
    from fit3d.data.writers import write_npz
    from fit3d.mocap.retarget import retarget

    t0 = time.perf_counter()
    clips = sorted(load_clips(sources), key=lambda c: c.name)
    if not clips:
        raise ValueError(f"no mocap trials found in {sources}")
    frames_read = sum(len(c.points) for c in clips)
    clips = [c for c in map(usable_frames, clips) if c is not None]
    if not clips:
        raise ValueError(f"no mocap trial in {sources} has a frame with finite points")
    pts, trial = [], []
    for i, c in enumerate(clips):
        sub = c.subsample(fps).points
        keep = dedupe(sub, dedupe_m)
        pts.append(sub[keep])
        trial.append(np.full(len(keep), i))
    points = torch.as_tensor(np.concatenate(pts))
    trial = np.concatenate(trial)
    # each frame's skeleton at rest (NaN for a source without one: its spine and head matched as they are)
    rests = np.stack([c.rest if c.rest is not None else np.full(c.points.shape[1:], np.nan, np.float32)
                      for c in clips])
    if not_rest := [c.name for c in clips if c.rest is None]:
        log.warning("%d trial(s) without a rest pose (e.g. %s): their spine and head directions are matched "
                    "as they are, not relative to the rest poses", len(not_rest), not_rest[0])
    test_v1 = trial_split_v1(len(clips))
    split = subject_split([c.subject for c in clips])[trial]
    r = retarget(points, body_model, iterations=iterations, progress=progress, rest=torch.as_tensor(rests[trial]))
    res = r["residual_mm"].cpu().numpy()
    bad = ~(torch.isfinite(r["body_pose"]).all(dim=(1, 2)) & torch.isfinite(r["global_orient"]).all(dim=1)).cpu().numpy()
    if bad.any():  # the priors and the regressor would train on them
        raise ValueError(f"retargeting gave non-finite poses for {int(bad.sum())} frames (of trials "
                         f"{sorted({clips[t].name for t in trial[bad]})[:5]}): nothing written")
    arrays = dict(
        body_pose=r["body_pose"].cpu().numpy().astype(np.float32),
        global_orient=r["global_orient"].cpu().numpy().astype(np.float32),
        trial=trial.astype(np.int32),
        trial_names=np.asarray([c.name for c in clips]),
        subject_names=np.asarray([c.subject for c in clips]),
        split=split,
        is_test_v1=test_v1[trial],
        residual_mm=res.astype(np.float32),
        direction_error_deg=r["direction_error_deg"].cpu().numpy().astype(np.float32),
        joint_names=np.asarray(body_model.joint_names),
        model=np.str_(body_model.name),
        fps=np.float32(fps),
        mocap_points=np.asarray(MOCAP_POINTS),
        # what made it (no clock time: the same settings write the same file)
        prepared_with=np.str_(json.dumps(dict(command="fit3d prepare-mocap", sources=[Path(x).name for x in sources],
                                              dedupe_m=dedupe_m, iterations=iterations,
                                              spine_and_head="relative to the rest poses", fit3d=__version__,
                                              torch=str(torch.__version__), torch_threads=torch.get_num_threads()))),
    )
    write_npz(out, arrays)
    return dict(
        trials=len(clips), frames_in=frames_read, poses=len(trial),
        poses_per_split={k: int((split == k).sum()) for k in ("train", "val", "test")},
        subjects_per_split={k: sorted({c.subject for c, s in zip(clips, subject_split([c.subject for c in clips]))
                                       if s == k}) for k in ("train", "val", "test")},
        missing_test_subjects=missing_test_subjects([c.subject for c in clips]),
        residual_mm_mean=float(res.mean()),
        residual_mm_median=float(np.median(res)), residual_mm_p95=float(np.percentile(res, 95)),
        direction_error_deg_mean=float(arrays["direction_error_deg"].mean()),
        seconds=round(time.perf_counter() - t0, 1),
    )
