import json

import torch

from fit3d.fitters import EFT, SMPLify
from fit3d.fitters.describe import describe_module, fingerprint
from fit3d.fitters.fallback import Fallback
from fit3d.fitters.follow import FollowConfig
from fit3d.pipeline.settings import normalised
from fit3d.regressors.flip import FlipAveraged
from fit3d.regressors.keypoint_regressor import KeypointRegressor


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


def test_fitter_settings_are_json_and_equal_for_equal_fitters(anny_model):
    """Two builds of the same EFT (flip-averaged, refined, following) or fallback describe
    themselves alike, as strict JSON that reads back as the record compares it; another rate differs."""
    K, J, S = len(anny_model.keypoint_convention), anny_model.num_body_joints, anny_model.num_betas
    torch.manual_seed(1)
    state = KeypointRegressor(K, J, S, width=16, blocks=1).state()

    def eft(lr=3e-5):
        reg = FlipAveraged(KeypointRegressor.from_state(state), anny_model)
        return EFT(anny_model, reg, steps=2, lr=lr, refine=True, follow=FollowConfig())

    a, b = eft().settings(), eft().settings()
    assert a == b and json.loads(json.dumps(a, allow_nan=False)) == normalised(a)
    assert eft(1e-4).settings()["lr"] == 1e-4 and eft(1e-4).settings() != a
    fb = Fallback(eft(), SMPLify(anny_model)).settings()
    assert fb["primary"] == a and fb["secondary"] == SMPLify(anny_model).settings()
    json.dumps(fb, allow_nan=False)

