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
    for params in (dict(m.named_parameters()), m.fine_tuning_params()):
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
