import torch

from fit3d.fitters.fallback import Fallback
from fit3d.fitters.result import FitResult


class _Stub:
    """A fitter whose people reproject with the given errors (one value per person id, the
    person id read from the keypoints' first x) and whose fits are ``value``."""

    def __init__(self, errors, valid, value, steps):
        self.errors, self.valid, self.value, self.steps = errors, valid, value, steps
        self.seen = []
        self.extra_defaults = {"k": -1}

    def __call__(self, batch):
        ids = batch.keypoints_2d[:, 0, 0].long()
        self.seen.append(ids.tolist())
        B = len(ids)
        f = lambda *s: torch.full((B, *s), self.value)  # noqa: E731
        return FitResult(global_orient=f(3), body_pose=f(2, 3), betas=f(4), transl=f(3), joints_3d=f(3, 3),
                         keypoints_3d=f(17, 3), keypoints_2d_fit=f(17, 2), reproj_error_px=self.errors[ids],
                         valid=self.valid[ids], loss=f(), iterations=torch.full((B,), self.steps),
                         convention=batch.convention, extras={"k": ids * 10})


def test_the_secondary_fit_is_kept_only_where_it_reprojects_ratio_times_closer(monkeypatch):
    from fit3d.data.batching import PersonBatch
    from fit3d.data.conventions import get_convention

    B = 6
    kp = torch.ones(B, 17, 3)
    kp[:, 0, 0] = torch.arange(B)
    kp[5, :10, 2] = 0  # person 5: 7 labelled keypoints, too few for the secondary
    batch = PersonBatch(keypoints_2d=kp, bbox=torch.ones(B, 4), focal_length=torch.ones(B, 2),
                        principal_point=torch.zeros(B, 2), image_size=torch.full((B, 2), 100.0),
                        convention=get_convention("coco17"))
    primary = _Stub(torch.tensor([10.0, 10.0, 10.0, 1.0, float("nan"), 10.0]), torch.ones(B, dtype=torch.bool),
                    1.0, 30)
    # person 0: 5x closer (kept); 1: 4x (not); 2: 10x but not valid; 3: worse; 4: the primary's fit is not
    # finite (NaN error): any valid fit beats it
    secondary = _Stub(torch.tensor([1.9, 2.5, 1.0, 0.5, 1.0, 0.1]),
                      torch.tensor([True, True, False, True, True, True]), 2.0, 100)
    res = Fallback(primary, secondary, ratio=5.0, min_keypoints=12)(batch)
    assert secondary.seen == [[0, 1, 2, 3, 4]]
    assert res.extras["fallback"].tolist() == [True, False, False, False, True, False]
    assert res.transl[:, 0].tolist() == [2.0, 1.0, 1.0, 1.0, 2.0, 1.0]
    assert res.reproj_error_px[0] == 1.9 and res.iterations.tolist() == [130, 30, 30, 30, 130, 30]
    assert res.extras["k"].tolist() == [0, 10, 20, 30, 40, 50]  # the primary's extras, for every person
    f = Fallback(primary, secondary)
    assert f.extra_defaults == {"k": -1, "fallback": False} and f.name == "primary+secondary"


def test_the_secondary_counts_usable_keypoints_as_follow_does(smpl_like_dir):
    """Found by a review: labelled points with NaN coordinates, and SMPL's hips (weight 0), counted toward
    the secondary's 12."""
    from fit3d.body_models import build_body_model
    from fit3d.data.batching import PersonBatch
    from fit3d.data.conventions import get_convention

    B = 3
    kp = torch.ones(B, 17, 3)
    kp[:, 0, 0] = torch.arange(B)
    kp[1, 1:5, :2] = float("nan")  # 17 labelled, 13 usable: still enough
    kp[2, 1:6, :2] = float("nan")  # 12 usable
    batch = PersonBatch(keypoints_2d=kp, bbox=torch.ones(B, 4), focal_length=torch.ones(B, 2),
                        principal_point=torch.zeros(B, 2), image_size=torch.full((B, 2), 100.0),
                        convention=get_convention("coco17"))
    primary = _Stub(torch.full((B,), 10.0), torch.ones(B, dtype=torch.bool), 1.0, 30)
    secondary = _Stub(torch.full((B,), 1.0), torch.ones(B, dtype=torch.bool), 2.0, 100)
    Fallback(primary, secondary, min_keypoints=13)(batch)
    assert secondary.seen == [[0, 1]]
    secondary.seen.clear()
    secondary.body_model = build_body_model("smpl", smpl_like_dir)  # its COCO hips weigh 0
    Fallback(primary, secondary, min_keypoints=13)(batch)
    assert secondary.seen == [[0]]  # person 1: 13 usable, 11 of them the model fits
