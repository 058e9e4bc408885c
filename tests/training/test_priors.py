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
