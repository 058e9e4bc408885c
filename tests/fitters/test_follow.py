import pytest
import torch

from fit3d.fitters.follow import FollowConfig, follow_keypoints


def _start(params, seed: int, spread: float = 0.25) -> dict:
    """The true parameters with every joint's rotation pushed off (a fit that missed the keypoints)."""
    g = torch.Generator().manual_seed(seed)
    out = {k: v.clone() for k, v in params.items()}
    out["body_pose"] = out["body_pose"] + spread * torch.randn(out["body_pose"].shape, generator=g)
    return out


def test_exact_keypoints_are_followed_and_kept(anny_model, make_synthetic):
    batch, params, gt = make_synthetic(anny_model, 3, seed=11)
    start = _start(params, 0)
    f = follow_keypoints(anny_model, batch, start, FollowConfig())
    assert f.kept.all() and (f.iterations == 100).all()
    assert (f.rms_after * 3 < f.rms_before).all()
    with torch.no_grad():
        before = anny_model(*(start[k] for k in ("global_orient", "body_pose", "betas", "transl"))).keypoints_3d
        after = anny_model(*(f.params[k] for k in ("global_orient", "body_pose", "betas", "transl"))).keypoints_3d
    err = lambda kp: (kp - gt.keypoints_3d).norm(dim=-1).mean(1)  # noqa: E731
    assert (err(after) < err(before)).all()  # closer to the true body in 3D, not only in 2D
    assert torch.equal(f.params["betas"], start["betas"])  # the shape is not moved


def test_noisy_keypoints_near_a_good_fit_keep_the_start(anny_model, make_synthetic):
    batch, params, _ = make_synthetic(anny_model, 3, seed=12, noise_px=4.0)
    f = follow_keypoints(anny_model, batch, params, FollowConfig())
    assert not f.kept.any() and (f.iterations == 30).all()  # stopped at the check: the residual barely falls
    for k, v in params.items():
        assert torch.equal(f.params[k], v), k
    assert torch.equal(f.rms_after, f.rms_before)


def test_rows_stopped_at_the_check_change_nothing_for_the_others(anny_model, make_synthetic):
    clean, params, _ = make_synthetic(anny_model, 2, seed=11)
    noisy, noisy_params, _ = make_synthetic(anny_model, 2, seed=12, noise_px=4.0)
    start = _start(params, 0)
    both = {k: torch.cat([start[k], noisy_params[k]]) for k in start}
    from fit3d.data.batching import PersonBatch

    batch = PersonBatch(*(torch.cat([getattr(clean, f), getattr(noisy, f)]) for f in
                          ("keypoints_2d", "bbox", "focal_length", "principal_point", "image_size")),
                        clean.convention)
    together = follow_keypoints(anny_model, batch, both, FollowConfig())
    alone = follow_keypoints(anny_model, clean, start, FollowConfig())
    assert together.iterations.tolist() == [100, 100, 30, 30] and together.kept.tolist() == [True, True, False, False]
    for k in ("global_orient", "body_pose", "transl"):
        assert torch.allclose(together.params[k][:2], alone.params[k], atol=1e-5), k


def test_invalid_settings_and_shapes_are_errors(anny_model, make_synthetic):
    with pytest.raises(ValueError, match="ratio"):
        FollowConfig(ratio=0.5)
    with pytest.raises(ValueError, match="lr"):
        FollowConfig(lr=0.0)
    batch, params, _ = make_synthetic(anny_model, 2, seed=1)
    with pytest.raises(ValueError, match="2 people"):
        follow_keypoints(anny_model, batch, {k: v[:1] for k, v in params.items()})
    f = follow_keypoints(anny_model, batch, params, FollowConfig(iterations=0))  # nothing to run: nothing kept
    assert not f.kept.any() and (f.iterations == 0).all()


def test_a_smpl_family_model_is_followed_too(smpl_like_dir, make_synthetic):
    from fit3d.body_models import build_body_model

    smpl = build_body_model("smpl", smpl_like_dir)
    batch, params, _ = make_synthetic(smpl, 2, seed=3)
    f = follow_keypoints(smpl, batch, _start(params, 1), FollowConfig())
    assert f.kept.all() and (f.rms_after * 3 < f.rms_before).all()


def test_people_with_few_keypoints_and_keypoints_the_model_ignores(anny_model, make_synthetic, monkeypatch):
    batch, params, _ = make_synthetic(anny_model, 3, seed=11)
    batch.keypoints_2d[0, :10, 2] = 0  # 13 labelled: not refined at all
    f = follow_keypoints(anny_model, batch, _start(params, 0), FollowConfig(min_keypoints=14))
    assert f.kept.tolist() == [False, True, True] and f.iterations.tolist() == [0, 100, 100]
    assert torch.isnan(f.loss[0]) and torch.isfinite(f.loss[1:]).all()
    # a keypoint the model does not fit (weight 0) far off: it is in neither the loss nor the residuals
    weights = torch.ones(len(anny_model.keypoint_convention))
    weights[0] = 0
    monkeypatch.setattr(anny_model, "keypoint_weights", lambda: weights)
    batch.keypoints_2d[:, 0, :2] += 80.0
    g = follow_keypoints(anny_model, batch, _start(params, 0), FollowConfig(min_keypoints=14))
    assert g.kept.tolist() == [False, True, True] and (g.rms_after[1:] * 3 < g.rms_before[1:]).all()
    assert g.rms_after[1:].max() < 5.0  # nominal px; with the ignored point counted it would stay above 80 / sqrt(23)


def test_an_empty_batch(anny_model, make_synthetic):
    batch, params, _ = make_synthetic(anny_model, 2, seed=1)
    f = follow_keypoints(anny_model, batch.index(torch.arange(0)), {k: v[:0] for k, v in params.items()})
    assert f.kept.shape == (0,) and f.params["body_pose"].shape[0] == 0
