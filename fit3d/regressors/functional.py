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
serves training, inference and fine-tuning.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


class PerPersonLinear(torch.autograd.Function):
    """``y[b] = weight[b] @ x[b]``: ``x (B, in)``, ``weight (B, out, in)`` -> ``(B, out)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        # (B, 1, in) @ (B, in, out): about twice as fast on a CPU as (B, out, in) @ (B, in, 1)
        return torch.bmm(x.unsqueeze(1), weight.transpose(1, 2)).squeeze(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad.unsqueeze(1), weight).squeeze(1) if ctx.needs_input_grad[0] else None
        grad_w = grad.unsqueeze(-1) * x.unsqueeze(1) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x (B, in)`` through a linear layer: ``weight (out, in)`` shared or ``(B, out, in)`` per person,
    ``bias (out,)`` or ``(B, out)``; returns ``(B, out)``.

    Raises:
        RuntimeError: the sizes do not match (``B`` or ``in``).
    """
    y = PerPersonLinear.apply(x, weight) if weight.dim() == 3 else F.linear(x, weight)
    return y if bias is None else y + bias


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm (Ba, Kiros, Hinton 2016) over the last dimension of ``x (B, C)``, with ``weight, bias``
    of ``(C,)`` (shared) or ``(B, C)`` (per person); returns ``(B, C)``.

    Raises:
        RuntimeError: the sizes do not match.
    """
    if weight.dim() == 1 and bias.dim() == 1:
        return F.layer_norm(x, x.shape[-1:], weight, bias, eps)
    return F.layer_norm(x, x.shape[-1:], eps=eps) * weight + bias
