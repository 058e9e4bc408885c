import numpy as np

from fit3d.training.synthetic import make_synthetic_benchmark


def test_benchmark_is_deterministic_and_realistic(anny_model):
    from fit3d.mocap import bundled_pose_set
    from fit3d.training.priors import load_pose_set

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
