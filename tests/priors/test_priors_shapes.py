import pytest
import torch

from fit3d.priors import GMMPrior, L2Prior


def test_every_prior_refuses_a_pose_that_is_not_b_j_3():
    gmm = GMMPrior(torch.zeros(2, 6), torch.eye(6).repeat(2, 1, 1), torch.full((2,), 0.5))
    for prior in (gmm, L2Prior(), L2Prior(torch.ones(2))):
        assert prior(torch.zeros(4, 2, 3)).shape == (4,)
        for bad in (torch.zeros(2, 3), torch.zeros(4, 2, 2), torch.zeros(4, 6)):
            with pytest.raises(ValueError, match=r"shape \(B, J, 3\)"):
                prior(bad)
    with pytest.raises(ValueError, match=r"scores poses of 2 joints"):
        L2Prior(torch.ones(2))(torch.zeros(4, 5, 3))
    with pytest.raises(ValueError, match=r"1 or 2 joints"):  # a GMM scores its own dims or a leading marginal
        gmm(torch.zeros(4, 3, 3))
    assert gmm(torch.zeros(4, 1, 3)).shape == (4,)
    big = GMMPrior(torch.zeros(2, 57), torch.eye(57).repeat(2, 1, 1), torch.full((2,), 0.5))
    with pytest.raises(ValueError, match=r"scores poses of 1 to 19 joints, got \(4, 23, 3\)"):  # (a user's trial:
        big(torch.zeros(4, 23, 3))  # every count from 1 to 19 was listed)


def test_learned_priors_refuse_another_models_joints(anny_model):
    from fit3d.priors import ArticulationPrior, BendPrior, VAEPrior

    J = anny_model.num_body_joints
    for prior in (VAEPrior(J, hidden=16, latent=4).eval(), ArticulationPrior(J, hidden=8, layers=2),
                  BendPrior(anny_model)):
        assert prior(torch.zeros(3, J, 3)).shape == (3,)
        with pytest.raises(ValueError, match="joints"):
            prior(torch.zeros(3, J + 4, 3))
