
import pytest
import roma
import torch

from fit3d.evaluation import metrics as M


def test_mpjpe_hand_computed():
    gt = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    pred = gt + torch.tensor([[[0.0, 0, 0], [0.003, 0, 0], [0, 0, 0.006]]])
    assert M.mpjpe(pred, gt).item() == pytest.approx(3.0, abs=1e-4)  # (0 + 3 + 6) / 3 mm
    # a global shift is removed by root alignment
    assert M.mpjpe(gt + 5.0, gt).item() == pytest.approx(0.0, abs=1e-3)
    v = torch.tensor([[True, True, False]])
    assert M.mpjpe(pred, gt, valid=v).item() == pytest.approx(1.5, abs=1e-4)


def test_pa_mpjpe_removes_similarity_and_is_bounded_by_mpjpe():
    g = torch.Generator().manual_seed(0)
    gt = torch.randn(8, 12, 3, generator=g)
    R = roma.random_rotmat(8, generator=g)
    moved = 1.7 * gt @ R.transpose(-1, -2) + 3.0
    assert M.pa_mpjpe(moved, gt).max() < 1e-2  # < 0.01 mm
    noisy = gt + 0.05 * torch.randn(8, 12, 3, generator=g)
    assert (M.pa_mpjpe(noisy, gt) <= M.mpjpe(noisy, gt) + 1e-4).all()
    # with a mask: the masked-out joints neither count nor move the alignment (they are far off here)
    v = torch.ones(8, 12, dtype=torch.bool)
    v[:, :3] = False
    off = noisy.clone()
    off[:, :3] += 10.0
    assert torch.allclose(M.pa_mpjpe(off, gt, valid=v), M.pa_mpjpe(noisy[:, 3:], gt[:, 3:]), atol=1e-3)
    # a mirrored pose: a reflection is not a rotation, so the error stays
    mirrored = gt * torch.tensor([-1.0, 1.0, 1.0])
    assert (M.pa_mpjpe(mirrored, gt) > 100.0).all()


def test_pve_reprojection_pck():
    gv = torch.zeros(1, 4, 3)
    pv = gv.clone()
    pv[0, 0, 0] = 0.004
    assert M.pve(pv, gv, torch.zeros(1, 3), torch.zeros(1, 3)).item() == pytest.approx(1.0, abs=1e-4)
    # the roots are aligned: a body moved with its root scores as before, a root moved alone scores its shift
    shift = torch.tensor([[0.3, -0.2, 1.0]])
    assert M.pve(pv + shift[:, None], gv, shift, torch.zeros(1, 3)).item() == pytest.approx(1.0, abs=1e-3)
    assert M.pve(gv, gv, torch.tensor([[0.0, 0.003, 0.004]]), torch.zeros(1, 3)).item() == pytest.approx(5.0, abs=1e-3)
    gt2 = torch.tensor([[[0.0, 0, 1], [10, 0, 1], [0, 10, 0]]])
    pr2 = torch.tensor([[[3.0, 4, 0], [10, 0, 0], [100, 100, 0]]])
    assert M.reprojection_px(pr2, gt2).item() == pytest.approx(2.5)  # (5 + 0) / 2, unlabelled ignored
    box = torch.tensor([[0.0, 0, 100, 60]])
    assert M.pck(pr2, gt2, box, 0.05).item() == pytest.approx(1.0)  # threshold 5 px: 5 <= 5
    assert M.pck(pr2, gt2, box, 0.04).item() == pytest.approx(0.5)
    assert M.pck(pr2, gt2, box, 0.1).item() == pytest.approx(1.0)


def test_torso_angle_sees_a_body_lying_where_it_stands_which_pa_mpjpe_aligns_away():
    g = torch.Generator().manual_seed(1)
    gt = torch.randn(4, 12, 3, generator=g)
    gt[:, 0], gt[:, 1] = torch.tensor([-0.2, -0.5, 3.0]), torch.tensor([0.2, -0.5, 3.0])  # shoulders (y down)
    gt[:, 2], gt[:, 3] = torch.tensor([-0.15, 0.0, 3.0]), torch.tensor([0.15, 0.0, 3.0])  # hips
    lying = gt @ roma.rotvec_to_rotmat(torch.tensor([torch.pi / 2, 0.0, 0.0])).T  # tipped into depth
    angle = M.torso_angle_deg(lying, gt, hips=(2, 3), shoulders=(0, 1))
    assert torch.allclose(angle, torch.full((4,), 90.0), atol=1e-3)
    assert M.pa_mpjpe(lying, gt).max() < 1e-2  # the same pose: PA-MPJPE cannot tell
    assert M.torso_angle_deg(gt + 1.0, gt, (2, 3), (0, 1)).max() < 1e-2  # translation-free


def test_masked_metrics_ignore_what_the_mask_leaves_out():
    """Found by a researcher's trial of the API: an unlabelled hip still set the MPJPE root (an
    identical pose scored 634 mm), a NaN in a masked-out joint or an unlabelled 2D keypoint made the
    result NaN, and PA-MPJPE of a person without valid joints raised."""
    g = torch.Generator().manual_seed(1)
    gt = torch.randn(2, 6, 3, generator=g)
    pred = gt.clone()
    v = torch.ones(2, 6, dtype=torch.bool)
    gt_hip_lost = gt.clone()
    gt_hip_lost[0, 4] = 0.0  # unlabelled left hip: its coordinates mean nothing
    v[0, 4] = False
    assert M.mpjpe(pred, gt_hip_lost, (4, 5), v).abs().max() < 1e-3  # the labelled hip is the root
    v_none = v.clone()
    v_none[1, 4:] = False  # no root joint labelled: cannot align
    assert torch.isnan(M.mpjpe(pred, gt, (4, 5), v_none)[1]) and not torch.isnan(M.mpjpe(pred, gt, (4, 5), v_none)[0])
    gt_nan = gt.clone()
    gt_nan[0, 4] = float("nan")
    assert torch.isfinite(M.mpjpe(pred, gt_nan, (4, 5), v)).all()
    kp = torch.tensor([[[0.0, 0, 1], [float("nan"), float("nan"), 0]]])
    assert M.reprojection_px(kp.clone(), kp).item() == 0.0
    few = torch.zeros(2, 6, dtype=torch.bool)
    few[0] = True
    few[1, :2] = True  # two joints fix no similarity: NaN, not an error
    out = M.pa_mpjpe(pred, gt, few)
    assert out[0] < 1e-2 and torch.isnan(out[1])
    with pytest.raises(ValueError, match=r"\(B, J, 3\)"):
        M.mpjpe(pred[0], gt[0])  # (J, 3): one person without its batch axis


def test_the_2d_metrics_and_torso_angle_check_shapes_and_every_metric_takes_numpy():
    """A researcher's trial: pck without confidences or with an unbatched box, and torso_angle_deg
    of mismatched shapes, raised IndexError; mpjpe of numpy arrays a TypeError."""
    import numpy as np

    rng = np.random.default_rng(0)
    gt = np.concatenate([rng.uniform(0, 100, (2, 17, 2)), np.ones((2, 17, 1))], -1).astype(np.float32)
    box = np.tile(np.float32([0, 0, 100, 100]), (2, 1))
    assert torch.allclose(M.pck(gt[..., :2], gt, box, 0.05), torch.ones(2))
    assert torch.allclose(M.reprojection_px(gt[..., :2], gt), torch.zeros(2))
    with pytest.raises(ValueError, match=r"gt_2d of shape \(B, K, 3\)"):
        M.pck(gt[..., :2], gt[..., :2], box, 0.05)
    with pytest.raises(ValueError, match=r"bbox of shape \(B, 4\) = \(2, 4\), got \(4,\)"):
        M.pck(gt[..., :2], gt, box[0], 0.05)
    with pytest.raises(ValueError, match=r"pred_2d of shape \(B, K, 2\)"):
        M.reprojection_px(gt[:, :5, :2], gt)
    j = rng.normal(size=(2, 17, 3)).astype(np.float32)
    assert float(M.mpjpe(j, j).abs().max()) == 0 and float(M.pa_mpjpe(j, j).abs().max()) < 1e-3
    assert float(M.torso_angle_deg(j, j, (11, 12), (5, 6)).max()) < 1e-2
    with pytest.raises(ValueError, match=r"one shape \(B, J, 3\)"):
        M.torso_angle_deg(j, j[:1], (11, 12), (5, 6))


def test_a_collapsed_prediction_scores_its_distance_not_nan():
    from fit3d.evaluation.metrics import pa_mpjpe

    gt = torch.randn(3, 12, 3, generator=torch.Generator().manual_seed(0))
    pred = gt.clone()
    pred[1] = 0.0  # every point in one place (a degenerate fit): no rotation to align
    pred[2] = 0.5
    err = pa_mpjpe(pred, gt)
    assert err[0] < 1e-3
    for i in (1, 2):  # the best similarity maps it onto the centroid: the points' mean distance to it
        want = (gt[i] - gt[i].mean(0)).norm(dim=-1).mean() * 1000
        assert torch.isfinite(err[i]) and err[i] == pytest.approx(float(want), rel=1e-4)
    for J in (9, 17, 24):  # float32 points at one place leave a spread of ~1e-7 after the mean (a review)
        same = torch.tensor([0.1, 0.2, 0.3]).expand(200, J, 3).clone() * torch.rand(200, 1, 1) * 5
        assert torch.isfinite(pa_mpjpe(same, torch.randn(200, J, 3))).all()
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, :2] = False  # the masked path per person gives the same
    assert torch.allclose(pa_mpjpe(pred, gt, mask)[1:], err[1:])


def test_pve_and_mpjpe_check_what_they_are_given():
    """Found by an audit: pve broadcast a batch of 1 against B and refused numpy; a root out of range
    was an IndexError."""
    import numpy as np

    from fit3d.evaluation.metrics import mpjpe, pve

    v = np.zeros((2, 10, 3))
    assert pve(v, v + 0.001, np.zeros((2, 3)), np.zeros((2, 3))).numpy() == pytest.approx([1.732, 1.732], rel=1e-3)
    with pytest.raises(ValueError, match="one shape"):
        pve(v, v[:1], np.zeros((2, 3)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="roots"):
        pve(v, v, np.zeros((1, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="root 12"):
        mpjpe(v, v, root=12)
