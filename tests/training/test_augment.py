import numpy as np
import roma
import torch

from fit3d.training.augment import (augmented_poses, body_parts, mirror, mirror_orient, recombine,
                                    sample_within_limits)

NAMES = ["pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
         "spine3", "neck", "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow",
         "right_elbow", "left_wrist", "right_wrist"]


def test_body_parts_follow_the_names():
    parts = body_parts(NAMES)
    assert parts[NAMES.index("left_knee") - 1] == "left_leg"
    assert parts[NAMES.index("right_collar") - 1] == "right_arm"
    assert parts[NAMES.index("head") - 1] == "torso"


def test_mirror_is_an_involution_and_swaps_sides():
    x = np.random.default_rng(0).normal(0, 0.3, (5, 19, 3)).astype(np.float32)
    assert np.allclose(mirror(mirror(x, NAMES), NAMES), x)
    m = mirror(x, NAMES)
    assert np.allclose(m[:, NAMES.index("right_knee") - 1, 0], x[:, NAMES.index("left_knee") - 1, 0])
    # the orientation rule is a reflection: M R M
    go = np.random.default_rng(1).normal(0, 1, (4, 3)).astype(np.float32)
    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    expect = M @ roma.rotvec_to_rotmat(torch.as_tensor(go)) @ M
    assert torch.allclose(roma.rotvec_to_rotmat(torch.as_tensor(mirror_orient(go))), expect, atol=1e-5)


def test_recombined_limbs_come_whole_from_captured_poses():
    rng = np.random.default_rng(0)
    src = rng.normal(0, 0.3, (50, 19, 3)).astype(np.float32)
    out, base = recombine(src, NAMES, 200, rng)
    parts = body_parts(NAMES)
    for part in ("torso", "left_arm", "left_leg"):
        cols = parts == part
        # every limb of every new pose equals that limb of some captured pose
        d = np.abs(out[:, None, cols] - src[None, :, cols]).max((-1, -2))
        assert (d.min(1) == 0).all()
    assert np.array_equal(out[:, parts == "torso"], src[base][:, parts == "torso"])
    mixed = (np.abs(out - src[base]).max((-1, -2)) > 0).mean()
    assert mixed > 0.5  # most poses are new combinations


def test_augmented_poses_counts_and_orientations():
    src = np.random.default_rng(0).normal(0, 0.3, (10, 19, 3)).astype(np.float32)
    go = np.zeros((10, 3), np.float32)
    bp, g = augmented_poses(src, go, NAMES, 30)
    assert bp.shape == (50, 19, 3) and g.shape == (50, 3)


def test_sampling_within_limits_respects_the_articulation_range():
    from fit3d.training.priors import train_articulation

    rng = np.random.default_rng(0)
    src = rng.normal(0, 0.2, (400, 3, 3)).astype(np.float32)
    prior = train_articulation(src, steps=150, progress=False)
    out = sample_within_limits(src, prior, 300, rng)
    nll = -prior.log_prob_joints(torch.as_tensor(out)).detach()
    assert (nll <= prior.threshold[None] + 1e-4).float().mean() > 0.9
    assert not np.isin(out, src).all()  # new rotations, not copies
