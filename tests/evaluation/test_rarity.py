import numpy as np

from fit3d.evaluation.rarity import rare_mask


def test_the_rare_people_are_the_most_unusual_tenth_and_training_poses_are_never_rare():
    r = np.arange(1, 21, dtype=float)
    assert rare_mask(r).tolist() == [False] * 18 + [True] * 2
    # found by a new user's trial: a --split train file (every pose a training pose, rarity 0) had
    # every person rare, ties at the quantile
    assert not rare_mask(np.zeros(20)).any()
    assert rare_mask(np.r_[np.zeros(18), 5.0, 7.0]).tolist() == [False] * 18 + [True] * 2
