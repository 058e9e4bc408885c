import pytest
import torch

from fit3d.fitters import losses as L
from fit3d.optim import BatchedAdam


def test_batched_adam_matches_torch_adam_and_freezes_rows():
    torch.manual_seed(0)
    x0 = torch.randn(3, 4)
    target = torch.randn(3, 4)
    a = x0.clone().requires_grad_(True)
    b = x0.clone().requires_grad_(True)
    ours = BatchedAdam([a], lr=0.1)
    ref = torch.optim.Adam([b], lr=0.1)
    active = torch.tensor([True, False, True])
    for _ in range(10):
        ((a - target) ** 2).sum().backward()
        ours.step(active)
        ref.zero_grad()
        ((b - target) ** 2).sum().backward()
        ref.step()
    assert torch.allclose(a[active], b[active], atol=1e-5)
    assert torch.equal(a[1], x0[1])


def test_batched_adam_subset_carries_on_as_if_uninterrupted():
    """Rows taken out of a BatchedAdam half-way end where the whole batch would have."""
    torch.manual_seed(1)
    x0, target = torch.randn(5, 3), torch.randn(5, 3)
    whole = x0.clone().requires_grad_(True)
    opt = BatchedAdam([whole], lr=0.1)
    part = x0.clone().requires_grad_(True)
    opt_part = BatchedAdam([part], lr=0.1)
    rows = torch.tensor([1, 4])
    for i in range(12):
        if i == 5:
            part = part.detach()[rows].requires_grad_(True)
            opt_part = opt_part.subset([part], rows)
        for x, o in ((whole, opt), (part, opt_part)):
            ((x - target[rows if x is part and i >= 5 else slice(None)]) ** 2).sum().backward()
            o.step(torch.ones(len(x), dtype=torch.bool))
    assert torch.allclose(part, whole[rows], atol=1e-6)


def test_gmof_is_robust():
    r2 = torch.tensor([0.0, 1.0, 1e6])
    out = L.gmof(r2, rho=10.0)
    assert out[0] == 0 and out[1] == pytest.approx(100 / 101)
    assert out[2] < 100.0  # bounded by rho^2


def test_reprojection_is_scale_invariant_and_confidence_weighted():
    proj = torch.tensor([[[10.0, 0.0], [0.0, 0.0]]])
    kp = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    a = L.reprojection(proj, kp, torch.tensor([100.0]))
    b = L.reprojection(proj * 2, kp, torch.tensor([200.0]))
    assert torch.allclose(a, b)
    r = 10 * L.NOMINAL_SCALE / 100
    assert a.item() == pytest.approx(L.gmof(torch.tensor(r * r), L.GMOF_RHO).item(), rel=1e-5)


def test_person_scale_and_face_orientation():
    kp = torch.tensor([[[0.0, 0.0, 1.0], [30.0, 40.0, 1.0], [1000.0, 1000.0, 0.0]]])
    s = L.person_scale(kp, torch.tensor([[0.0, 0.0, 6.0, 8.0]]))
    assert s.item() == pytest.approx(50.0)
    # nose in front of the ears, person 3 m away: facing the camera
    k3 = torch.tensor([[[0.0, 0.0, 2.9], [0.07, 0.0, 3.0], [-0.07, 0.0, 3.0]]])
    assert L.face_orientation(k3, torch.tensor([1.0]), 0, (1, 2)).item() == 0
    assert L.face_orientation(k3, torch.tensor([-1.0]), 0, (1, 2)).item() > 0.3


def test_upright_is_the_up_axis_share_along_the_optical_axis():
    """Zero for a body upright or rolled in the image plane, one for a body lying along the optical
    axis (its up axis along camera z), cos^2 between (a mutation check: penalising another axis
    passed every test)."""
    import math

    from fit3d.fitters.losses import upright

    orient = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.7], [math.pi / 2, 0.0, 0.0], [math.pi / 4, 0.0, 0.0],
                           [0.0, math.pi / 2, 0.0]])
    assert torch.allclose(upright(orient), torch.tensor([0.0, 0.0, 1.0, 0.5, 0.0]), atol=1e-6)


def test_a_row_frozen_then_active_again_keeps_its_own_step_count():
    """Found by a review: once every row was active again, the plain update took row 0's step count
    for all rows, so a row frozen at some step got another row's bias correction."""
    torch.manual_seed(2)
    x0, target = torch.randn(2, 3), torch.randn(2, 3)
    a = x0.clone().requires_grad_(True)
    ours = BatchedAdam([a], lr=0.1)
    b = x0[1:].clone().requires_grad_(True)
    ref = torch.optim.Adam([b], lr=0.1)
    masks = [[True, True], [True, False]] + [[True, True]] * 4
    for m in masks:
        ((a - target) ** 2).sum().backward()
        ours.step(torch.tensor(m))
        if m[1]:  # row 1 alone steps only when active
            ref.zero_grad()
            ((b - target[1:]) ** 2).sum().backward()
            ref.step()
        else:
            a.grad = None
    torch.testing.assert_close(a[1:].detach(), b.detach(), rtol=0, atol=1e-4)  # (the old update: ~1e-2 off)
