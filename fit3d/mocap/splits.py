"""Which mocap subjects train, tune and test fit3d: the split is by subject, never by trial.

A pose set (``fit3d prepare-mocap``) carries a per-pose ``split`` array:

* ``"test"``: :data:`TEST_SUBJECTS`. No prior, regressor, prototype memory or
  NeuralAnnot depth set ever reads these poses (:func:`training_mask` is the only
  way training code selects poses, and it never returns them); they only make the
  development benchmark (``fit3d benchmark make``). CMU subject 02 performs actions
  that no other subject in the bundled mocap does (punching, swordplay, washing,
  bending over), so the benchmark's rare poses are motions of unseen types; three
  walking subjects give it common poses too.
* ``"val"``: :data:`VAL_SUBJECTS`: CMU subject 01 (playground: climbing, hanging,
  jumping, sitting on and stepping over objects), the poses least like the rest,
  and subject 35 (walking and running), ordinary motions like most of the test
  subjects'. Robust-term and prior weights are tuned on benchmarks of these poses
  (one per subject: ``fit3d benchmark make --split val --subjects 35``) with weights
  trained on ``"train"`` alone, so tuning sees motions its priors never saw, both
  unusual and ordinary (a choice that helps only the unusual ones does not transfer
  to the test subjects); the shipped weights then train on ``"train"`` and ``"val"``.
* ``"train"``: every other subject.

:func:`trial_split_v1` is the earlier protocol (every fifth trial held out, subjects
shared between training and test), kept only to reproduce the old benchmark.
"""

from __future__ import annotations

import numpy as np

#: CMU subjects held out for testing (never trained on).
TEST_SUBJECTS = ("02", "07", "39", "136")
#: CMU subjects used to tune weights against priors trained without them.
VAL_SUBJECTS = ("01", "35")
SPLITS = ("train", "val", "test")


def subject_split(subjects) -> np.ndarray:
    """``(N,)`` ``"train"`` / ``"val"`` / ``"test"`` for subject ids (``"01"``, ``"136"``...).
    Numeric ids are compared as numbers (``"2"``, ``"02"`` and ``"002"`` are subject 02: files named
    ``2_01.bvh`` would otherwise have put a test subject into training, in silence)."""
    s = np.asarray([canonical_subject(x) for x in subjects])
    out = np.full(s.shape, "train", dtype="<U5")
    out[np.isin(s, [canonical_subject(x) for x in VAL_SUBJECTS])] = "val"
    out[np.isin(s, [canonical_subject(x) for x in TEST_SUBJECTS])] = "test"
    return out


def canonical_subject(subject) -> str:
    """A subject id as compared: a number without leading zeros (``"02"`` -> ``"2"``), other ids as
    they are."""
    text = str(subject).strip()
    return str(int(text)) if text.isdigit() else text


def missing_test_subjects(subjects) -> list[str]:
    """The :data:`TEST_SUBJECTS` that ``subjects`` lacks (a mocap collection without them gives the
    development benchmark no test poses)."""
    have = {canonical_subject(x) for x in subjects}
    return [t for t in TEST_SUBJECTS if canonical_subject(t) not in have]


def trial_split_v1(n_trials: int, test_every: int = 5) -> np.ndarray:
    """``(n_trials,)`` bool: the old protocol's held-out trials (every ``test_every``-th in name
    order, starting at the middle one), kept to rebuild the old benchmark for comparison."""
    return np.arange(n_trials) % test_every == test_every // 2


def training_mask(pose_set: dict, include_val: bool = True) -> np.ndarray:
    """``(N,)`` bool: the poses training code may read (``"train"``, plus ``"val"`` unless
    ``include_val`` is False). Test poses are never selected.

    Raises:
        KeyError: the pose set has no ``split`` (made before the subject split: rerun
            ``fit3d prepare-mocap``).
        ValueError: no pose is labelled for training (e.g. every one ``test``, or labels in
            another spelling such as ``TRAIN``).
    """
    if "split" not in pose_set:
        raise KeyError("pose set has no 'split' array (made before the subject split): rerun fit3d prepare-mocap")
    split = np.asarray(pose_set["split"]).astype(str)
    keep = split == "train"
    if include_val:
        keep |= split == "val"
    if not keep.any():
        raise ValueError(f"the pose set has no training poses: its split labels are {sorted(set(split.tolist()))[:6]}, "
                         f"training reads 'train'{' and val' if include_val else ''} (never 'test')")
    return keep
