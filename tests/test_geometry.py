"""fit3d.geometry: the special Procrustes against roma's."""

import roma
import torch

import pytest

from fit3d.geometry import broadcast_matmul, small_matmul, special_procrustes


def test_special_procrustes_equals_romas_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    # random matrices (half with det < 0: the SVD path), near-rotations (Newton's), one singular row
    m = torch.cat([torch.randn(300, 3, 3, generator=g, dtype=torch.float64),
                   torch.eye(3, dtype=torch.float64) + 0.3 * torch.randn(300, 3, 3, generator=g, dtype=torch.float64),
                   torch.diag(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))[None]])
    assert (torch.linalg.det(m) < 0).sum() > 100
    out = special_procrustes(m)
    assert torch.allclose(out, roma.special_procrustes(m), rtol=0, atol=1e-12)
    eye = torch.eye(3, dtype=m.dtype).expand_as(out)
    assert torch.allclose(out.transpose(-1, -2) @ out, eye, rtol=0, atol=1e-12)
    assert torch.allclose(torch.linalg.det(out), torch.ones(len(m), dtype=m.dtype), rtol=0, atol=1e-12)
    x = m[:-1].clone().requires_grad_(True)  # (the singular row has no unique gradient)
    w = torch.randn(x.shape, generator=g, dtype=x.dtype)
    ours, = torch.autograd.grad((special_procrustes(x) * w).sum(), x)
    ref, = torch.autograd.grad((roma.special_procrustes(x) * w).sum(), x)
    assert torch.allclose(ours, ref, rtol=0, atol=2e-7 * ref.abs().max())  # (roma: an eigen-decomposition)
    assert torch.autograd.gradcheck(special_procrustes, (m[300:304].clone().requires_grad_(True),))


def test_special_procrustes_in_float32_is_within_its_precision():
    g = torch.Generator().manual_seed(1)
    m = torch.eye(3) + 0.5 * torch.randn(1000, 3, 3, generator=g)
    assert torch.allclose(special_procrustes(m), roma.special_procrustes(m.double()).float(), rtol=0, atol=2e-6)


def test_special_procrustes_edge_cases():
    # scales that overflow a determinant in float32, and an ill-conditioned rotation: not NaN
    q = roma.random_rotmat(1, generator=torch.Generator().manual_seed(2))[0]
    m = torch.stack([torch.eye(3), 1e14 * torch.eye(3), 1e-14 * q, q @ torch.diag(torch.tensor([1.0, 1.0, 1e-8]))])
    out = special_procrustes(m)
    assert torch.allclose(out, roma.special_procrustes(m.double()).float(), rtol=0, atol=1e-5)
    # matrices whose nearest rotation is not unique: finite gradients, not an error for the batch
    x = torch.stack([-torch.eye(3), torch.diag(torch.tensor([1.0, 1.0, -1.0])), torch.ones(3, 3),
                     torch.eye(3)]).requires_grad_(True)
    special_procrustes(x).sum().backward()
    assert x.grad.isfinite().all()
    # half precision is computed in float32, batch shapes are kept
    h = special_procrustes((2 * torch.eye(3)).expand(2, 5, 3, 3).half())
    assert h.dtype == torch.float16 and h.shape == (2, 5, 3, 3) and torch.equal(h.float(), torch.eye(3).expand(2, 5, 3, 3))


def test_special_procrustes_of_a_non_finite_matrix_is_nan_and_the_others_are_kept():
    """Found by a review: the SVD that takes the rows Newton's iteration cannot do raised on a
    non-finite matrix, so one diverged person (NaN betas) stopped the body model for the batch."""
    from fit3d.body_models.anny_model import AnnyModel

    q = roma.random_rotmat(3, generator=torch.Generator().manual_seed(3))
    m = torch.cat([q, torch.full((1, 3, 3), float("nan")), torch.diag(torch.tensor([3.0, 2.0, -1.0]))[None]])  # improper: SVD
    m[1, 0, 0] = float("inf")
    out = special_procrustes(m)
    assert out[[1, 3]].isnan().all() and torch.allclose(out[[0, 2, 4]], roma.special_procrustes(m[[0, 2, 4]]),
                                                         atol=1e-5)
    model = AnnyModel()
    betas = torch.zeros(3, model.num_betas)
    betas[1] = float("nan")
    body = model(torch.zeros(3, 3), torch.zeros(3, model.num_body_joints, 3), betas, torch.tensor([[0, 0, 4.0]] * 3))
    assert body.keypoints_3d[[0, 2]].isfinite().all() and body.keypoints_3d[1].isnan().all()


@pytest.mark.parametrize("shapes", [((5, 7, 3, 3), (5, 7, 3, 4)), ((5, 7, 1, 3), (7, 3, 3)), ((7, 3, 3), (5, 7, 3, 3)),
                                    ((5, 23, 3), (5, 3, 3)), ((2, 4, 4), (2, 4, 1))])
def test_broadcast_matmul_equals_matmul_with_gradients(shapes):
    """The elementwise product fitting uses on CUDA: ``@``'s values, broadcasting and gradients."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes)
    want = a @ b
    got = broadcast_matmul(a, b)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want)
    w = torch.randn(want.shape, generator=g, dtype=torch.float64)
    ga = torch.autograd.grad((want * w).sum(), (a, b))
    gb = torch.autograd.grad((got * w).sum(), (a, b))
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)
    torch.testing.assert_close(small_matmul(a, b), want)  # (the CPU's path: ``@`` itself)


def test_broadcast_matmul_refuses_what_matmul_refuses():
    """The GPU's product must not accept a shape mistake that ``@`` (the CPU's) would catch."""
    for a, b in ((torch.ones(2, 3, 1), torch.ones(2, 3, 3)),
                 (torch.ones(2, 3, 3), torch.ones(2, 3, 3, dtype=torch.float64))):
        with pytest.raises(RuntimeError):
            a @ b
        with pytest.raises(ValueError, match="inner sizes agree"):
            broadcast_matmul(a, b)
    with pytest.raises(ValueError, match="two matrices"):  # (``@`` reads a vector: another shape out)
        broadcast_matmul(torch.ones(3), torch.ones(3, 3))
