import pytest
import torch

from fit3d.regressors.functional import PerPersonLinear, fresh_grads, grads_in_place, layer_norm, linear


def test_per_person_linear_gradients():
    torch.manual_seed(0)
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(PerPersonLinear.apply, (x, w))


def test_per_person_equals_a_loop_of_shared_layers():
    torch.manual_seed(1)
    x = torch.randn(3, 6)
    w, b = torch.randn(3, 4, 6), torch.randn(3, 4)
    g, beta = torch.randn(3, 6), torch.randn(3, 6)
    y = linear(x, w, b)
    n = layer_norm(x, g, beta)
    for i in range(3):
        assert torch.allclose(y[i], torch.nn.functional.linear(x[i : i + 1], w[i], b[i])[0], atol=1e-6)
        ref = torch.nn.functional.layer_norm(x[i : i + 1], (6,), g[i], beta[i])[0]
        assert torch.allclose(n[i], ref, atol=1e-6)
    # shared weights take the ordinary path and give the same values as stacked copies
    assert torch.allclose(linear(x, w[0], b[0]), linear(x, w[0].expand(3, -1, -1), b[0]), atol=1e-6)
    assert torch.allclose(layer_norm(x, g[0], beta[0]), layer_norm(x, g[0].expand(3, -1), beta[0]), atol=1e-6)


def test_weight_gradient_is_each_persons_own():
    torch.manual_seed(2)
    x = torch.randn(3, 6)
    w = torch.randn(3, 4, 6, requires_grad=True)
    linear(x, w)[1].sum().backward()
    assert w.grad[0].abs().sum() == 0 and w.grad[2].abs().sum() == 0 and w.grad[1].abs().sum() > 0


def test_rows_per_person_gradients_and_values():
    """``(B, R, in)`` inputs: R rows through each person's own weights (flip averaging)."""
    torch.manual_seed(3)
    x = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(PerPersonLinear.apply, (x, w))
    b, g, beta = torch.randn(3, 4), torch.randn(3, 5), torch.randn(3, 5)
    y, n = linear(x.float(), w.float(), b), layer_norm(x.float(), g, beta)
    for i in range(3):
        for r in range(2):
            assert torch.allclose(y[i, r], torch.nn.functional.linear(x[i, r].float(), w[i].float(), b[i]), atol=1e-5)
            ref = torch.nn.functional.layer_norm(x[i, r].float()[None], (5,), g[i], beta[i])[0]
            assert torch.allclose(n[i, r], ref, atol=1e-5)


@pytest.mark.parametrize("rows", [None, 1, 2, 5])
def test_grads_in_place_equal_autograds(rows):
    """``grads_in_place``: ``backward()`` adds the same gradient into the kept ``.grad`` (twice:
    accumulated, as autograd does), for one row per person and for several."""
    torch.manual_seed(4)
    shape = (3, 6) if rows is None else (3, rows, 6)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(3, 4, 6, requires_grad=True)
    w2 = w.detach().clone().requires_grad_(True)
    grads_in_place([w2])
    buffer = w2.grad
    for _ in range(2):
        (linear(x, w) ** 2).sum().backward()
        (linear(x, w2) ** 2).sum().backward()
    assert w2.grad is buffer and torch.allclose(w2.grad, w.grad, atol=1e-5)
    with pytest.raises(ValueError, match="leaf"):
        grads_in_place([w2 * 2])


def test_grads_in_place_after_the_buffer_was_dropped():
    """``.grad`` set to None between forward and backward (``zero_grad(set_to_none=True)``): the
    gradient goes to autograd as usual instead of into the dropped buffer."""
    torch.manual_seed(5)
    x = torch.randn(3, 2, 6)
    w = torch.randn(3, 4, 6, requires_grad=True)
    w2 = w.detach().clone().requires_grad_(True)
    grads_in_place([w2])
    y = (linear(x, w2) ** 2).sum()
    w2.grad = None
    y.backward()
    (linear(x, w) ** 2).sum().backward()
    assert w2.grad is not None and torch.allclose(w2.grad, w.grad, atol=1e-5)


@pytest.mark.parametrize("rows", [None, 2])
def test_fresh_grads_write_over_the_last_steps_gradient(rows):
    """Inside ``fresh_grads`` each backward's gradient replaces the last (a weight used twice in one
    forward, as IEF's steps use theirs, gets both uses), with the buffer kept; a weight the backward
    did not reach is zeroed; a weight not prepared by grads_in_place is refused."""
    torch.manual_seed(6)
    shape = (3, 6) if rows is None else (3, rows, 6)
    w = torch.randn(3, 6, 6, requires_grad=True)
    w2, unused = w.detach().clone().requires_grad_(True), torch.randn(3, 6, 6, requires_grad=True)
    grads_in_place([w2, unused])
    buffer = w2.grad
    unused.grad.fill_(7.0)
    for step in range(3):
        x = torch.randn(*shape)
        w.grad = None
        (linear(linear(x, w), w) ** 2).sum().backward()
        with fresh_grads([w2, unused]):
            (linear(linear(x, w2), w2) ** 2).sum().backward()
        assert w2.grad is buffer and torch.allclose(w2.grad, w.grad, atol=1e-5), step
        assert not unused.grad.any()
    with pytest.raises(ValueError, match="grads_in_place"):
        with fresh_grads([w]):
            pass


@pytest.mark.parametrize("use", ["outside", "both"])
def test_fresh_grads_keep_the_gradient_of_uses_outside_linear(use):
    """A review: a prepared weight used only outside ``linear`` (an einsum of a custom regressor's
    ``forward_with``) got autograd's gradient added to the last step's buffer, which the exit then
    zeroed: it never learned. Used outside only or both ways, its gradient equals autograd's."""
    torch.manual_seed(7)
    w = torch.randn(3, 4, 5, requires_grad=True)
    w2 = w.detach().clone().requires_grad_(True)
    grads_in_place([w2])
    w2.grad.fill_(9.0)

    def loss(weight, x):
        out = torch.einsum("boi,bri->bro", weight, x).sum()
        return out + (linear(x, weight) ** 2).sum() if use == "both" else out

    for step in range(2):
        x = torch.randn(3, 2, 5)
        w.grad = None
        loss(w, x).backward()
        with fresh_grads([w2]):
            loss(w2, x).backward()
        assert torch.allclose(w2.grad, w.grad, atol=1e-5), step


def test_fresh_grads_after_the_buffer_was_dropped():
    """A review: ``.grad`` set to None after grads_in_place (``zero_grad()``'s default) made
    fresh_grads raise on every later step; the gradient now goes to autograd as usual."""
    torch.manual_seed(8)
    x = torch.randn(3, 2, 6)
    w = torch.randn(3, 4, 6, requires_grad=True)
    w2 = w.detach().clone().requires_grad_(True)
    grads_in_place([w2])
    w2.grad = None
    with fresh_grads([w2]):
        (linear(x, w2) ** 2).sum().backward()
    (linear(x, w) ** 2).sum().backward()
    assert torch.allclose(w2.grad, w.grad, atol=1e-5)
