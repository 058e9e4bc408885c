import numpy as np

from fit3d.training.synthetic import make_synthetic_benchmark


def test_benchmark_is_deterministic_and_realistic(anny_model):
    from fit3d.mocap import bundled_pose_set
    from fit3d.mocap.pose_set import load_pose_set

    poses = load_pose_set(bundled_pose_set())
    bench = make_synthetic_benchmark(poses, anny_model, n=12, seed=0)
    again = make_synthetic_benchmark(poses, anny_model, n=12, seed=0)
    for k in ("keypoints_2d", "keypoints_3d", "vertices"):
        assert np.array_equal(bench[k], again[k])
    kp = bench["keypoints_2d"]
    assert kp.shape == (12, 23, 3) and bench["vertices"].shape == (12, 13718, 3)
    vis = kp[..., 2] > 0
    assert 0.5 < vis.mean() < 0.97  # occlusion and truncation
    err = np.linalg.norm(kp[..., :2] - bench["keypoints_2d_clean"], axis=-1)[vis]
    assert 0.5 < np.median(err) < 20  # a few pixels of noise
    assert (bench["keypoints_3d"][..., 2] > 0.5).all()


def test_people_with_unknown_focal_and_noise_scales(anny_model):
    from fit3d.training.synthetic import NOISE_FREE, NoiseModel, make_people

    rng = np.random.default_rng(0)
    pool = rng.normal(0, 0.2, (40, 19, 3)).astype(np.float32)
    orient = np.zeros((40, 3), np.float32)
    clean = make_people(pool, orient, anny_model, 30, seed=3, noise=NOISE_FREE)
    one = make_people(pool, orient, anny_model, 30, seed=3, noise=NoiseModel(scale=1.0))
    two = make_people(pool, orient, anny_model, 30, seed=3, noise=NoiseModel(scale=2.0))
    # the fitter is told the diagonal, the truth is 0.6-1.6 times it
    diag = np.linalg.norm(clean["image_size"], axis=1)
    assert np.allclose(clean["focal_length"][:, 0], diag)
    ratio = clean["focal_length_true"][:, 0] / diag
    assert ratio.min() >= 0.6 - 1e-4 and ratio.max() <= 1.6 + 1e-4 and ratio.std() > 0.1
    # same seed, same people: only the 2D errors differ
    assert np.array_equal(clean["keypoints_3d"], two["keypoints_3d"])
    vis = clean["keypoints_2d"][..., 2] > 0
    assert np.allclose(clean["keypoints_2d"][..., :2][vis], clean["keypoints_2d_clean"][vis])  # noise-free: exact

    def err(b):
        v = b["keypoints_2d"][..., 2] > 0
        e = np.linalg.norm(b["keypoints_2d"][..., :2] - b["keypoints_2d_clean"], axis=-1)[v]
        return np.median(e)

    assert 1.5 < err(two) / err(one) < 2.5
    # the floor: at least 1.5 % of the box diagonal per axis, so median 2D error > ~1.5 % of it
    box = np.linalg.norm(one["bbox"][:, 2:], axis=1) / 1.2  # boxes carry 10 % padding per side
    assert err(one) > 0.01 * np.median(box)


def test_close_ups_cut_people_off_at_the_waist_and_leave_the_others_as_they_were(anny_model):
    from fit3d.training.synthetic import CameraModel, make_people

    rng = np.random.default_rng(0)
    pool = rng.normal(0, 0.1, (40, 19, 3)).astype(np.float32)
    orient = np.zeros((40, 3), np.float32)
    full = make_people(pool, orient, anny_model, 60, seed=5)
    close = make_people(pool, orient, anny_model, 60, seed=5, camera=CameraModel(p_closeup=1.0))
    half = make_people(pool, orient, anny_model, 60, seed=5, camera=CameraModel(p_closeup=0.5))
    names = list(full["keypoint_names"])
    hips = [names.index("left_hip"), names.index("right_hip")]
    ankles = [names.index("left_ankle"), names.index("right_ankle")]
    nose = names.index("nose")

    def shown(b, idx):
        return (b["keypoints_2d_clean"][:, idx, 1] < b["image_size"][:, 1:2]).any(1)

    assert shown(full, ankles).mean() > 0.9 and shown(close, ankles).mean() < 0.05
    assert 0.2 < shown(close, hips).mean() < 0.9 and shown(close, [nose]).mean() > 0.95  # waist or chest up
    # the same people, poses and cameras; only the placement of the close-ups differs
    assert np.array_equal(full["body_pose"], close["body_pose"]) and np.array_equal(full["betas"], close["betas"])
    moved = ~np.isclose(half["transl"], full["transl"]).all(1)
    assert 0.2 < moved.mean() < 0.8
    np.testing.assert_array_equal(half["keypoints_3d"][~moved], full["keypoints_3d"][~moved])


def test_detector_scores_are_graded_fall_with_the_error_and_change_nothing_else(anny_model):
    import pytest

    from fit3d.training.synthetic import NoiseModel, make_people

    rng = np.random.default_rng(0)
    pool = rng.normal(0, 0.2, (40, 19, 3)).astype(np.float32)
    orient = np.zeros((40, 3), np.float32)
    labels = make_people(pool, orient, anny_model, 60, seed=2, noise=NoiseModel(scale=2.0))
    scored = make_people(pool, orient, anny_model, 60, seed=2, noise=NoiseModel(scale=2.0, scores="detector"))
    # the same people, points and labelled set; only the confidences differ
    np.testing.assert_array_equal(labels["keypoints_2d"][..., :2], scored["keypoints_2d"][..., :2])
    vis = labels["keypoints_2d"][..., 2] > 0
    assert set(np.unique(labels["keypoints_2d"][..., 2])) == {0.0, 1.0}
    np.testing.assert_array_equal(vis, scored["keypoints_2d"][..., 2] > 0)
    conf = scored["keypoints_2d"][..., 2][vis]
    assert conf.min() >= 0.05 and conf.max() < 1 and 0.25 < conf.mean() < 0.75 and conf.std() > 0.1  # (twice the noise: lower)
    err = np.linalg.norm(labels["keypoints_2d"][..., :2] - labels["keypoints_2d_clean"], axis=-1)[vis]
    far = err > np.percentile(err, 80)
    assert conf[far].mean() < conf[~far].mean() - 0.05  # worse points are scored lower
    with pytest.raises(ValueError, match="scores"):
        NoiseModel(scores="guess")


def test_training_orientations_cover_every_kind(anny_model):
    """``OrientationModel``: most people upright as captured, a share lying or upside down, a share seen
    from high above or below (what the regressor trains on beyond the captured orientations)."""
    import roma
    import torch

    from fit3d.training.synthetic import NOISE_FREE, OrientationModel, make_people

    pool = np.zeros((10, 19, 3), np.float32)
    upright = np.zeros((10, 3), np.float32)  # canonical body upright in a Y-up world

    def shares(**orientations):
        """Shares of people upright (OpenCV: up is -y), head-down, and tilted (seen from above or below)."""
        people = make_people(pool, upright, anny_model, 1000, seed=0, noise=NOISE_FREE,
                             orientations=OrientationModel(**orientations))
        up = roma.rotvec_to_rotmat(torch.as_tensor(people["global_orient"]))[:, :, 1][:, 1]  # body up, camera y
        return (up < -0.9).float().mean(), (up > 0).float().mean(), ((up > -0.9) & (up < -0.1)).float().mean()

    upright_share, down, tilted = shares(p_any=0.3)  # random orientations: ~15 % head-down
    assert upright_share > 0.6 and 0.08 < down < 0.25
    upright_share, down, tilted = shares(p_high=0.2)  # cameras high above or below: ~20 % tilted, none head-down
    assert upright_share > 0.65 and down < 0.01 and 0.12 < tilted < 0.3
    upright_share, down, tilted = shares()  # neither: every captured-upright person stays upright
    assert upright_share > 0.97 and down == 0 and tilted < 0.03
