"""fit3d.geometry: the special Procrustes against roma's."""

import roma
import torch

from fit3d.geometry import special_procrustes


def test_special_procrustes_equals_romas_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    # random matrices (half with det < 0: the SVD path), near-rotations (Newton's), one singular row
    m = torch.cat([torch.randn(300, 3, 3, generator=g, dtype=torch.float64),
                   torch.eye(3, dtype=torch.float64) + 0.3 * torch.randn(300, 3, 3, generator=g, dtype=torch.float64),
                   torch.diag(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))[None]])
    assert (torch.linalg.det(m) < 0).sum() > 100
    out = special_procrustes(m)
    assert torch.allclose(out, roma.special_procrustes(m), atol=1e-9)
    assert torch.allclose(out.transpose(-1, -2) @ out, torch.eye(3, dtype=m.dtype).expand_as(out), atol=1e-9)
    assert torch.allclose(torch.linalg.det(out), torch.ones(len(m), dtype=m.dtype), atol=1e-9)
    x = m[:-1].clone().requires_grad_(True)  # (the singular row has no unique gradient)
    w = torch.randn(x.shape, generator=g, dtype=x.dtype)
    ours, = torch.autograd.grad((special_procrustes(x) * w).sum(), x)
    ref, = torch.autograd.grad((roma.special_procrustes(x) * w).sum(), x)
    assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-8)
    assert torch.autograd.gradcheck(special_procrustes, (m[300:304].clone().requires_grad_(True),))


def test_special_procrustes_in_float32_is_within_its_precision():
    g = torch.Generator().manual_seed(1)
    m = torch.eye(3) + 0.5 * torch.randn(1000, 3, 3, generator=g)
    assert torch.allclose(special_procrustes(m), roma.special_procrustes(m.double()).float(), atol=1e-5)
