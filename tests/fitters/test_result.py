import torch

from fit3d.fitters.result import VALID_ERROR_FRACTION, is_valid


def test_is_valid_threshold_nan_and_params():
    kp = torch.zeros(3, 2, 3)
    kp[:, 1] = torch.tensor([0.0, 0.0, 1.0])
    bbox = torch.tensor([[0.0, 0.0, 60.0, 80.0]]).repeat(3, 1)  # person scale: 100 px
    limit = VALID_ERROR_FRACTION * 100.0
    err = torch.tensor([limit, limit + 0.01, float("nan")])
    assert is_valid(err, kp, bbox).tolist() == [True, False, False]
    assert is_valid(err, kp, bbox, fraction=1.0).tolist() == [True, True, False]
    pose = torch.zeros(3, 4, 3)
    pose[0, 2, 1] = float("inf")
    assert is_valid(err, kp, bbox, fraction=1.0, params={"body_pose": pose}).tolist() == [False, True, False]
