"""Layers whose weights may differ per person: what batched EFT runs every step.

EFT (Joo et al., 3DV 2021) fine-tunes one copy of a regressor per person. With
``B`` copies stacked, a linear layer's weight is ``(B, out, in)`` and each
person's input row meets only its own copy. ``torch.func.vmap`` turns that into
batched matrix products whose weight gradient is a ``k = 1`` ``bmm`` written in
the transposed layout and then copied; on a CPU that outer product and its copy
were most of EFT's time. :class:`PerPersonLinear` computes the same values with
the gradient written directly in the weight's layout as a broadcast product.

Every function takes weights either shared (the usual shapes) or per person
(one more leading ``B`` dimension) and picks the right product, so one forward
serves training, inference and fine-tuning. Inputs are ``(B, in)`` (one row per
person) or ``(B, R, in)`` (``R`` rows per person through the same weights, e.g. a
person and its mirror image: :mod:`fit3d.regressors.flip`).
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn import functional as F


#: The attribute :func:`grads_in_place` sets on a weight.
_IN_PLACE = "_fit3d_grad_in_place"
#: The attribute :func:`fresh_grads` sets on such a weight: its ``.grad`` holds a finished step's
#: gradient, which the next contribution overwrites instead of adding to.
_STALE = "_fit3d_grad_stale"


class PerPersonLinear(torch.autograd.Function):
    """``y[b] = weight[b] @ x[b]``: ``x (B, in)`` or ``(B, R, in)``, ``weight (B, out, in)`` ->
    ``(B, out)`` or ``(B, R, out)``. A weight prepared by :func:`grads_in_place` gets its
    gradient added into its ``.grad`` during the backward (None is returned for it)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``(B, out)`` or ``(B, R, out)``: each person's rows times its own weight."""
        ctx.save_for_backward(x, weight)
        rows = x if x.dim() == 3 else x.unsqueeze(1)
        # (B, 1, in) @ (B, in, out): about twice as fast on a CPU as (B, out, in) @ (B, in, 1)
        y = torch.bmm(rows, weight.transpose(1, 2))
        return y if x.dim() == 3 else y.squeeze(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        """The input's gradient ``(B, [R,] in)``, and the weight's ``(B, out, in)`` (None when it is
        added into the weight's ``.grad`` in place, :func:`grads_in_place`)."""
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        rows = x if x.dim() == 3 else x.unsqueeze(1)
        g = grad if x.dim() == 3 else grad.unsqueeze(1)
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(g, weight)
            grad_x = grad_x if x.dim() == 3 else grad_x.squeeze(1)
        if ctx.needs_input_grad[1]:
            # the buffer the leaf holds now (grads_in_place); none: returned for autograd as usual
            sink = weight.grad if getattr(weight, _IN_PLACE, False) else None
            if sink is not None:  # added where the leaf keeps it: no new tensor
                for r in range(rows.shape[1]):  # one broadcast outer product per row
                    if getattr(weight, _STALE, False):  # the step's first: written over the last step's
                        torch.mul(g[:, r, :, None], rows[:, r, None, :], out=sink)
                        setattr(weight, _STALE, False)
                    else:
                        sink.addcmul_(g[:, r, :, None], rows[:, r, None, :])
            elif x.dim() == 2:  # one row: an outer product, written in the weight's layout
                grad_w = grad.unsqueeze(-1) * x.unsqueeze(1)
            else:
                grad_w = torch.bmm(g.transpose(1, 2), rows)
        return grad_x, grad_w


def grads_in_place(weights) -> None:
    """Give each per-person weight leaf of ``weights`` (an iterable of tensors) a zero ``.grad``
    into which :func:`linear` adds its gradient directly during ``backward()``, instead of
    returning a new ``(B, out, in)`` tensor for autograd to add there: a fresh tensor of that
    size costs more to allocate than to fill on a CPU (EFT, :mod:`fit3d.fitters.eft`).

    ``loss.backward()`` gives the same ``.grad``; zero it between steps with
    ``optimizer.zero_grad(set_to_none=False)``, or run the backward inside :func:`fresh_grads`,
    which writes over it (with ``.grad`` set to None, the next backward returns the gradient to
    autograd as usual, which allocates it again). Side effects, since
    autograd never sees these gradients: ``torch.autograd.grad`` returns none for these weights
    and still adds into their ``.grad`` when it differentiates through them for other inputs, and
    hooks registered on the weights do not see them. Use it only on weights that an optimiser
    steps from ``.grad``.

    Raises:
        ValueError: a weight is not a leaf that requires grad (checked for all before any is changed).
    """
    weights = list(weights)
    if not all(w.is_leaf and w.requires_grad for w in weights):
        raise ValueError("grads_in_place needs leaf tensors that require grad")
    for w in weights:
        w.grad = torch.zeros_like(w)
        setattr(w, _IN_PLACE, True)


@contextlib.contextmanager
def fresh_grads(weights):
    """Around one ``backward()``: the :func:`grads_in_place` weights of ``weights`` (an iterable)
    get this backward's gradient in their ``.grad``, written over what it held rather than added
    (what zeroing it first gives, without the pass over memory that zeroing costs: the weights of
    EFT's per-person copies are most of its memory traffic). A weight the backward did not reach
    has its ``.grad`` zeroed on exit. A weight also (or only) used outside :func:`linear` gets that
    use's gradient from autograd after its :func:`linear` uses wrote theirs (autograd accumulates
    into a leaf last): added to them, or, where no :func:`linear` use wrote, to a zeroed buffer (a
    hook on the weight zeroes a buffer still holding the last step's before autograd adds).

    Raises:
        ValueError: a weight was not prepared by :func:`grads_in_place`.
    """
    weights = list(weights)
    if not all(getattr(w, _IN_PLACE, False) for w in weights):
        raise ValueError("fresh_grads needs weights prepared by grads_in_place")

    def settle(w: torch.Tensor) -> None:  # the last step's gradient still in the buffer: zero it
        if getattr(w, _STALE, False):
            if w.grad is not None:  # (None: set so since, autograd allocates a new one)
                w.grad.zero_()
            setattr(w, _STALE, False)

    def hook(w: torch.Tensor):
        def before_autograd_adds(g: torch.Tensor) -> torch.Tensor:
            settle(w)
            return g
        return before_autograd_adds

    handles = []
    for w in weights:
        setattr(w, _STALE, True)
        handles.append(w.register_hook(hook(w)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for w in weights:
            settle(w)


def _per_row(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-person vector ``(B, C)`` broadcast over ``x``'s rows when ``x`` is ``(B, R, C)``."""
    return v.unsqueeze(1) if x.dim() == 3 and v.dim() == 2 else v


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x (B, in)`` or ``(B, R, in)`` through a linear layer: ``weight (out, in)`` shared or
    ``(B, out, in)`` per person, ``bias (out,)`` or ``(B, out)``; returns ``(B, out)`` or ``(B, R, out)``.

    Raises:
        RuntimeError: the sizes do not match (``B`` or ``in``).
    """
    y = PerPersonLinear.apply(x, weight) if weight.dim() == 3 else F.linear(x, weight)
    return y if bias is None else y + _per_row(bias, x)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm (Ba, Kiros, Hinton 2016) over the last dimension of ``x (B, C)`` or ``(B, R, C)``, with
    ``weight, bias`` of ``(C,)`` (shared) or ``(B, C)`` (per person); returns ``x``'s shape.

    Raises:
        RuntimeError: the sizes do not match.
    """
    if weight.dim() == 1 and bias.dim() == 1:
        return F.layer_norm(x, x.shape[-1:], weight, bias, eps)
    return F.layer_norm(x, x.shape[-1:], eps=eps) * _per_row(weight, x) + _per_row(bias, x)
