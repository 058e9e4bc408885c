import pytest
import torch

from fit3d.training.divergence import require_finite


def test_require_finite_names_the_training_and_passes_finite_weights():
    net = torch.nn.Linear(3, 2)
    require_finite(net, "x")
    with torch.no_grad():
        net.bias[1] = float("inf")
    with pytest.raises(ValueError, match="the thing's training diverged .*: lower lr"):
        require_finite(net, "the thing's training", "lower lr")


def test_a_diverging_prior_training_raises_instead_of_returning_nan_weights():
    from fit3d.training.priors import train_articulation, train_vae

    poses = torch.randn(64, 4, 3).numpy() * 0.3
    poses[5, 1, 0] = float("nan")  # (a pose set is checked when read; a caller's array is not)
    with pytest.raises(ValueError, match="VAE prior's training diverged"):
        train_vae(poses, epochs=2, batch_size=32, progress=False)
    with pytest.raises(ValueError, match="articulation prior's training diverged"):
        train_articulation(poses, steps=3, batch_size=32, progress=False)
