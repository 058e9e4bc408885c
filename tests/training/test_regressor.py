import torch

from fit3d.regressors.keypoint_regressor import KeypointRegressor
from fit3d.training.regressor import load_regressor, save_regressor


def test_regressor_round_trip(tmp_path):
    torch.manual_seed(0)
    m = KeypointRegressor(23, 19, 6, width=32, blocks=1).eval()
    f = tmp_path / "r.pt"
    save_regressor(m, f)
    m2 = load_regressor(f)
    assert (m2.num_keypoints, m2.num_joints, m2.num_betas) == (23, 19, 6)
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
