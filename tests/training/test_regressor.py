import pytest
import torch

from fit3d.regressors.keypoint_regressor import KeypointRegressor
from fit3d.regressors.io import load_regressor, save_regressor


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
    from fit3d.mocap.pose_set import load_pose_set
    from fit3d.training.regressor import train_regressor

    kw = {"rounds": 3, **kw}
    return train_regressor(load_pose_set(bundled_pose_set()), anny_model, people_per_round=64, batch_size=32,
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


def test_a_diverged_round_raises_and_keeps_the_last_good_checkpoint(tmp_path, anny_model, monkeypatch):
    from fit3d.training import regressor

    ck = tmp_path / "regressor.partial.pt"
    real, calls = regressor.regressor_loss, []

    def nan_from_round_two(*a, **kw):  # 64 people in batches of 32, 2 epochs: 4 steps a round
        loss, parts = real(*a, **kw)
        calls.append(1)
        return (loss * float("nan"), parts) if len(calls) > 4 else (loss, parts)

    monkeypatch.setattr(regressor, "regressor_loss", nan_from_round_two)
    with pytest.raises(ValueError, match=r"round 2 of 3\) diverged"):
        _train(anny_model, checkpoint=ck)
    assert torch.load(ck, weights_only=False)["next_round"] == 1


def test_round_seeds_never_repeat_another_members():
    from fit3d.training.regressor import round_seed

    assert round_seed(0, 5) == 5 and round_seed(2, 999) == 2999  # the shipped weights' people
    seeds = {round_seed(s, r) for s in range(3) for r in range(2500)}
    assert len(seeds) == 3 * 2500


def test_ensemble_members_are_the_regressors_of_successive_seeds_and_resume(tmp_path, anny_model):
    from fit3d.mocap import bundled_pose_set
    from fit3d.regressors.ensemble import EnsembleRegressor
    from fit3d.mocap.pose_set import load_pose_set
    from fit3d.training.regressor import ensemble_checkpoints, train_ensemble

    kw = dict(rounds=2, people_per_round=64, batch_size=32, progress=False, recombined=0, width=16, blocks=1)
    ps = load_pose_set(bundled_pose_set())
    ck = tmp_path / "ens.partial"
    ens, stats = train_ensemble(ps, anny_model, 2, seed=3, checkpoint=ck, **kw)
    assert isinstance(ens, EnsembleRegressor) and len(stats["members"]) == 2
    assert all(p.is_file() for p in ensemble_checkpoints(ck, 2))  # kept until the caller removes them
    for k, seed in enumerate((3, 4)):
        alone, _ = _train(anny_model, seed=seed, rounds=2)
        assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), ens.members[k].state_dict().values()))
    again, stats = train_ensemble(ps, anny_model, 2, seed=3, checkpoint=ck, **kw)  # both finished: no training
    assert [s["resumed_at_round"] for s in stats["members"]] == [2, 2]
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ens.state_dict().values()))
    import pytest

    with pytest.raises(ValueError, match="prototype"):
        train_ensemble(ps, anny_model, 2, prototypes=torch.zeros(2, anny_model.num_body_joints, 3), **kw)


def test_a_file_that_is_not_a_regressor_is_one_clear_error(tmp_path):
    from fit3d.data.writers import write_torch
    from fit3d.priors.io import load_prior

    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(ValueError, match="notes.txt is not a torch file"):
        load_regressor(tmp_path / "notes.txt")
    write_torch(tmp_path / "gmm.pt", {"kind": "gmm", "weights": torch.ones(2)})  # some other fit3d weights
    with pytest.raises(ValueError, match="gmm.pt is not a fit3d regressor"):
        load_regressor(tmp_path / "gmm.pt")
    save_regressor(KeypointRegressor(5, 3, 2, width=16, blocks=1, iterations=1), tmp_path / "reg.pt")
    with pytest.raises(ValueError, match="unknown prior kind"):
        load_prior(tmp_path / "reg.pt")
    with pytest.raises(ValueError, match="gmm.pt is not a fit3d gmm prior"):
        load_prior(tmp_path / "gmm.pt")


@pytest.mark.parametrize("size, named", [
    (dict(people_per_round=64), r"people_per_round \(64\) must be >= batch_size \(256\)"),
    (dict(people_per_round=64, batch_size=65), r"people_per_round \(64\) must be >= batch_size \(65\)"),
    (dict(rounds=0), "rounds must be >= 1, not 0"),
])
def test_a_training_of_no_step_is_a_value_error(size, named):
    """Fewer people per round than a batch made 0 steps: OneCycleLR's 'Expected positive integer total_steps'."""
    from fit3d.training.regressor import train_ensemble, train_regressor

    with pytest.raises(ValueError, match=named):  # refused before the pose set or the body model is read
        train_regressor({}, None, **size)
    with pytest.raises(ValueError, match=named):
        train_ensemble({}, None, members=2, **size)
