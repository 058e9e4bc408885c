import torch

from fit3d.priors import ArticulationPrior
from fit3d.training.priors import load_prior, save_prior


def test_articulation_round_trip(tmp_path):
    m = ArticulationPrior(num_joints=5, layers=3)
    f = tmp_path / "a.pt"
    save_prior(m, f)
    m2 = load_prior(f)
    x = torch.randn(2, 5, 3)
    assert torch.allclose(m(x), m2(x))


def test_a_vae_trains_on_fewer_poses_than_a_batch():
    """Fewer poses than ``batch_size``: one batch of them all (it used to train nothing)."""
    import numpy as np
    import pytest

    from fit3d.priors import VAEPrior
    from fit3d.training.priors import train_vae

    poses = np.random.default_rng(0).normal(0, 0.3, (40, 5, 3)).astype(np.float32)
    torch.manual_seed(0)
    untrained = VAEPrior(num_joints=5)  # the same initial weights as train_vae's (seed 0)
    m = train_vae(poses, epochs=30, batch_size=256, progress=False)
    x = torch.as_tensor(poses)
    assert m(x).mean() < untrained(x).mean()  # the training poses cost less than before training
    with pytest.raises(ValueError, match="no poses"):
        train_vae(poses[:0], progress=False)
