import pytest
import torch

from fit3d.regressors.keypoint_regressor import KeypointRegressor


def _regressor(prototypes=None):
    torch.manual_seed(0)
    m = KeypointRegressor(23, 19, 6, width=32, blocks=2, prototypes=prototypes)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return m.eval()


@pytest.mark.parametrize("with_prototypes", [False, True])
def test_forward_with_per_person_copies_equals_forward(with_prototypes):
    m = _regressor(torch.randn(4, 19, 3) * 0.3 if with_prototypes else None)
    x = torch.randn(5, 23 * 3 + 3)
    ref = m(x)
    params = m.fine_tuning_params()
    stacked = {k: v.unsqueeze(0).expand(5, *v.shape) for k, v in params.items()}
    mixed = {k: (stacked[k] if k.startswith(("ief", "inp")) else v) for k, v in params.items()}
    for p in (params, stacked, mixed):
        out = m.forward_with(p, x)
        for k in ("global_orient", "body_pose", "betas", "cam"):
            assert torch.allclose(out[k], ref[k], atol=1e-5), k


def test_fine_tuning_params_split_ief_input_layer():
    m = _regressor()
    p = m.fine_tuning_params()
    assert "ief.0.weight" not in p
    w = m.ief[0].weight
    assert torch.equal(torch.cat([p["ief.0.weight.h"], p["ief.0.weight.p"]], -1), w)
    assert p["ief.0.weight.h"].shape == (32, 32)


def _reference_forward(m, x):
    """The regressor's math written with its modules (independent of forward_with)."""
    h = m.trunk(m.inp(x))
    p = m.init_params.expand(x.shape[0], -1)
    for _ in range(m.iterations):
        p = p + m.ief(torch.cat([h, p], -1))
    return p


def test_forward_equals_the_modules_math():
    from fit3d.priors.rotations import sixd_to_rotmat

    m = _regressor()
    x = torch.randn(5, 23 * 3 + 3)
    p = _reference_forward(m, x)
    out = m(x)
    rot = sixd_to_rotmat(p[:, : 6 + 6 * 19].reshape(-1, 20, 6))
    import roma

    assert torch.allclose(out["global_orient"], roma.rotmat_to_rotvec(rot[:, 0]), atol=1e-5)
    assert torch.allclose(out["body_pose"], roma.rotmat_to_rotvec(rot[:, 1:]), atol=1e-5)
    assert torch.allclose(out["betas"], p[:, 6 + 6 * 19 : 6 + 6 * 19 + 6], atol=1e-6)


def test_per_person_gradients_equal_one_module_per_person():
    m = _regressor()
    x = torch.randn(3, 23 * 3 + 3)
    split = m.fine_tuning_params()
    stacked = {k: v.detach().unsqueeze(0).repeat(3, *([1] * v.dim())).requires_grad_(True) for k, v in split.items()}
    out = m.forward_with(stacked, x)
    (out["body_pose"].square().sum() + out["cam"].sum()).backward()
    for i in range(3):
        m.zero_grad()
        o = m(x[i : i + 1])
        (o["body_pose"].square().sum() + o["cam"].sum()).backward()
        g = dict((k, v.grad) for k, v in m.named_parameters())
        whole = torch.cat([stacked["ief.0.weight.h"].grad[i], stacked["ief.0.weight.p"].grad[i]], -1)
        assert torch.allclose(whole, g["ief.0.weight"], atol=1e-5)
        for k in ("inp.weight", "trunk.0.net.0.weight", "trunk.1.net.3.weight", "ief.2.weight", "ief.4.bias"):
            assert torch.allclose(stacked[k].grad[i], g[k], atol=1e-5), k


def test_features_see_whether_a_point_is_labelled_not_its_score():
    """A detector's graded scores must not shrink the points toward the box centre: the network
    was trained on labels (0 or 1); a score above 0 reads as labelled, 0 as unlabelled."""
    from fit3d.data.batching import PersonBatch
    from fit3d.data.conventions import COCO17

    torch.manual_seed(0)
    kp = torch.cat([torch.rand(2, 17, 2) * 200 + 250, torch.ones(2, 17, 1)], -1)
    kp[:, 3, 2] = 0.0
    scored = kp.clone()
    scored[:, :, 2] = torch.where(kp[:, :, 2] > 0, torch.rand(2, 17) * 0.9 + 0.05, 0.0)

    def batch(k):
        return PersonBatch(keypoints_2d=k, bbox=torch.tensor([[250.0, 250.0, 200.0, 200.0]]).repeat(2, 1),
                           focal_length=torch.full((2, 2), 800.0), principal_point=torch.full((2, 2), 320.0),
                           image_size=torch.full((2, 2), 640.0), convention=COCO17)

    m = KeypointRegressor(17, 19, 6, width=32, blocks=2)
    labels, detector = m.features(batch(kp)), m.features(batch(scored))
    assert torch.equal(labels, detector)
    assert torch.equal(labels[:, 2 * 17:3 * 17], (kp[:, :, 2] > 0).float())
    assert (labels[:, 6:8] == 0).all()  # the unlabelled point's position is zeroed
