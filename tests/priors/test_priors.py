import pytest
import torch

from fit3d.priors import BendPrior, L2Prior, build_prior


def test_l2_prior():
    p = L2Prior()
    pose = torch.zeros(2, 19, 3)
    pose[1, 0, 0] = 0.5
    assert p(pose).tolist() == [0.0, 0.25]
    with pytest.raises(KeyError):
        build_prior("nope")


def test_bend_prior_penalises_hyperextension_only(anny_model):
    bend = BendPrior(anny_model)
    axes = anny_model.hinge_axes()
    names = list(anny_model.joint_names[1:])
    pose = torch.zeros(3, 19, 3)
    pose[1, names.index("left_knee")] = axes["left_knee"] * 1.0  # natural flexion
    pose[2, names.index("left_knee")] = -axes["left_knee"] * 0.5  # hyperextension
    cost = bend(pose)
    assert cost[0] == 0 and cost[1] < 1e-6 and cost[2] > 0.2
    pose.requires_grad_(True)
    bend(pose).sum().backward()
    assert torch.isfinite(pose.grad).all()
