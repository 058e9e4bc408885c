import torch

from fit3d.fitters.describe import describe_module, fingerprint
from fit3d.regressors.keypoint_regressor import KeypointRegressor
from fit3d.regressors.flip import FlipAveraged


def test_fingerprint_follows_the_weights_not_the_object(anny_model):
    """The same weights built twice give the same fingerprint; one changed value gives another;
    a flip-averaged regressor is its inner regressor's weights."""
    K, J, S = len(anny_model.keypoint_convention), anny_model.num_body_joints, anny_model.num_betas
    torch.manual_seed(0)
    a = KeypointRegressor(K, J, S, width=16, blocks=1)
    b = KeypointRegressor.from_state(a.state())
    assert fingerprint(a) == fingerprint(b) and len(fingerprint(a)) == 12
    with torch.no_grad():
        b.inp.weight[0, 0] += 1e-6
    assert fingerprint(a) != fingerprint(b)
    flip = FlipAveraged(a, anny_model)
    assert fingerprint(flip) == fingerprint(a)
    assert describe_module(flip) == dict(kind="FlipAveraged", weights=fingerprint(a))
    assert fingerprint(None) is None and describe_module(None) is None
