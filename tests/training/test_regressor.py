import torch

from fit3d.regressors.keypoint_regressor import KeypointRegressor
from fit3d.training.regressor import load_regressor, save_regressor


def test_regressor_round_trip(tmp_path):
    torch.manual_seed(0)
    m = KeypointRegressor(23, 19, 6, width=32, blocks=1).eval()
    f = tmp_path / "r.pt"
    save_regressor(m, f)
    m2 = load_regressor(f)
    assert (m2.num_keypoints, m2.num_joints, m2.num_betas) == (23, 19, 6)
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def _train(anny_model, **kw):
    from fit3d.mocap import bundled_pose_set
    from fit3d.training.priors import load_pose_set
    from fit3d.training.regressor import train_regressor

    return train_regressor(load_pose_set(bundled_pose_set()), anny_model, rounds=3, people_per_round=64, batch_size=32,
                           progress=False, recombined=0, width=16, blocks=1, **kw)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, anny_model, monkeypatch):
    import pytest

    from fit3d.training import regressor

    whole, _ = _train(anny_model)
    ck = tmp_path / "regressor.partial.pt"
    real, calls = regressor.training_people, []

    def interrupted(*a, **kw):  # the third round's people are never made
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(regressor, "training_people", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train(anny_model, checkpoint=ck)
    monkeypatch.setattr(regressor, "training_people", real)
    assert ck.is_file()
    resumed, stats = _train(anny_model, checkpoint=ck)
    assert stats["resumed_at_round"] == 2
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    # a checkpoint of other settings is not resumed from
    other, stats = _train(anny_model, checkpoint=ck, seed=1)
    assert stats["resumed_at_round"] == 0
    assert not all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), other.state_dict().values()))
