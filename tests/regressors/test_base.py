import numpy as np
import torch

from fit3d.data.batching import PersonBatch
from fit3d.data.boxes import KEYPOINT_BOX_PAD, keypoint_bbox
from fit3d.data.conventions import COCO17
from fit3d.regressors.base import REGRESSOR_BOX_PAD, regressor_box
from fit3d.regressors.keypoint_regressor import KeypointRegressor


def _batch(kp, bbox):
    B = len(kp)
    return PersonBatch(keypoints_2d=kp, bbox=bbox, focal_length=torch.full((B, 2), 800.0),
                       principal_point=torch.full((B, 2), 320.0), image_size=torch.full((B, 2), 640.0),
                       convention=COCO17)


def test_the_regressor_box_is_the_training_people_box_whatever_box_was_given():
    """The network trained on people boxed by their labelled keypoints padded 10 % (make_people); an
    annotation's silhouette box or a detector's moved and scaled its input (found in the twenty-eighth
    session: COCO's boxes differ from that box by 13-46 % in size for a quarter of the people)."""
    torch.manual_seed(0)
    kp = torch.cat([torch.rand(3, 17, 2) * 300 + 100, (torch.rand(3, 17, 1) > 0.3).float()], -1)
    kp[2, :, 2] = 0.0  # nobody labelled: the given box is kept
    given = torch.tensor([[50.0, 60.0, 500.0, 400.0], [120.0, 90.0, 200.0, 380.0], [10.0, 20.0, 30.0, 40.0]])
    box = regressor_box(_batch(kp, given))
    assert REGRESSOR_BOX_PAD == KEYPOINT_BOX_PAD
    for i in range(2):
        np.testing.assert_allclose(box[i].numpy(), keypoint_bbox(kp[i].numpy(), pad=KEYPOINT_BOX_PAD), rtol=1e-6)
    assert torch.equal(box[2], given[2])
    m = KeypointRegressor(17, 19, 6, width=32, blocks=2).eval()
    other = given[:2] + torch.tensor([[-40.0, 25.0, 90.0, -30.0]])
    a, b = _batch(kp[:2], given[:2]), _batch(kp[:2], other)
    assert torch.equal(m.features(a), m.features(b))
    with torch.no_grad():
        assert torch.equal(m.predict(a)["transl"], m.predict(b)["transl"])
