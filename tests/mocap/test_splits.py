"""The subject split: test subjects can never reach training code."""

import numpy as np
import pytest

from fit3d.mocap import bundled_pose_set
from fit3d.mocap.splits import TEST_SUBJECTS, VAL_SUBJECTS, subject_split, training_mask, trial_split_v1
from fit3d.mocap.pose_set import load_pose_set
from fit3d.training.priors import training_poses


def test_subject_split_maps_subjects():
    split = subject_split(["01", "02", "03", "136", "35", "16"])
    assert split.tolist() == ["val", "test", "train", "test", "val", "train"]
    assert not set(TEST_SUBJECTS) & set(VAL_SUBJECTS)
    assert trial_split_v1(10).tolist() == [False, False, True, False, False] * 2
    # ids written without the leading zero (files named 2_01.bvh) are the same subjects (found by a review:
    # "2" and "7" went to training in silence)
    assert subject_split(["2", "002", "7", "1", " 35", "136", "36"]).tolist() == [
        "test", "test", "test", "val", "val", "test", "train"]
    from fit3d.mocap.splits import missing_test_subjects

    assert missing_test_subjects(["2", "07", "39"]) == ["136"] and missing_test_subjects(TEST_SUBJECTS) == []


def test_bundled_pose_set_is_split_by_subject():
    ps = load_pose_set(bundled_pose_set())
    subjects = ps["subject_names"][ps["trial"]]
    assert (ps["split"] == subject_split(subjects)).all()
    for s in ("train", "val", "test"):  # whole subjects: a subject lives in one split only
        assert not set(subjects[ps["split"] == s]) & set(subjects[ps["split"] != s])
    assert {"train", "val", "test"} == set(ps["split"].tolist())


def _marked_pose_set():
    """A pose set whose test poses hold a value no training pose has."""
    rng = np.random.default_rng(0)
    names = ["pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee"]
    subjects = np.asarray(["03", "01", TEST_SUBJECTS[0], "16"])
    trial = np.repeat(np.arange(4), 10)
    body_pose = rng.normal(0, 0.1, (40, 5, 3)).astype(np.float32)
    split = subject_split(subjects[trial])
    body_pose[split == "test"] = 9.0  # the marker
    return dict(body_pose=body_pose, global_orient=np.zeros((40, 3), np.float32), trial=trial, subject_names=subjects,
                split=split, joint_names=np.asarray(names), model=np.str_("anny"))


@pytest.mark.parametrize("include_val", [True, False])
def test_training_code_never_reads_test_subjects(include_val):
    from fit3d.training.regressor import training_pool

    ps = _marked_pose_set()
    assert not training_mask(ps, include_val)[ps["split"] == "test"].any()
    for x in (training_poses(ps, include_val), training_poses(ps, include_val, recombined=200),
              training_pool(ps, include_val, recombined=200)[0]):
        assert len(x) and not (np.abs(x) > 5).any()  # no marked (test) joint, even after recombination
    val = training_poses(ps, include_val=True, mirrored=False)
    assert len(val) == 30
    assert len(training_poses(ps, include_val=False, mirrored=False)) == 20


def test_a_pose_set_without_split_is_refused():
    ps = _marked_pose_set()
    del ps["split"]
    with pytest.raises(KeyError, match="prepare-mocap"):
        training_poses(ps)
