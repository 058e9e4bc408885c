"""A batched Adam whose per-person updates are independent.

Adam is element-wise, so one Adam over ``(B, ...)`` tensors whose loss is a sum
of per-person losses is B independent Adams. What plain ``torch.optim.Adam``
cannot do is stop one person early: a zero gradient still moves a parameter
through the momentum. :class:`BatchedAdam` takes a ``(B,)`` mask of the people
still optimising and leaves the others (values and moments) untouched.
Kingma & Ba, ICLR 2015.
"""

from __future__ import annotations

import torch


class BatchedAdam:
    """Adam over tensors with a leading batch dimension, with per-row freezing.

    Args:
        params: tensors ``(B, ...)`` with ``requires_grad``.
        lr: learning rate.
        betas: Adam's moment decay rates.
        eps: Adam's epsilon.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = params
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        B = params[0].shape[0]
        self.t = torch.zeros(B, device=params[0].device, dtype=params[0].dtype)
        self.uniform = True  # every row has taken every step (one step count): the plain update applies

    def subset(self, params: list[torch.Tensor], rows: torch.Tensor) -> "BatchedAdam":
        """An optimiser over ``params`` (the ``rows`` of this one's tensors, same order) that
        carries on with those rows' moments and step counts."""
        opt = BatchedAdam.__new__(BatchedAdam)
        opt.params, opt.lr, opt.b1, opt.b2, opt.eps = params, self.lr, self.b1, self.b2, self.eps
        opt.m = [m[rows].clone() for m in self.m]
        opt.v = [v[rows].clone() for v in self.v]
        opt.t = self.t[rows].clone()
        opt.uniform = self.uniform
        return opt

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """Update the rows where ``active`` (``(B,)`` bool) is true, from ``p.grad``. A row
        frozen at some step and active again later goes on with its own step count (its bias
        correction), as an Adam of that row alone would."""
        if self.uniform and bool(active.all()):
            return self._step_all()
        self.uniform = False  # (from here on the rows' step counts may differ: the masked update)
        self.t += active.to(self.t)
        t = self.t.clamp(min=1)
        c1 = 1 - self.b1**t
        c2 = 1 - self.b2**t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            a = active.view(shape)
            g = p.grad
            m.copy_(torch.where(a, self.b1 * m + (1 - self.b1) * g, m))
            v.copy_(torch.where(a, self.b2 * v + (1 - self.b2) * g * g, v))
            update = self.lr * (m / c1.view(shape)) / ((v / c2.view(shape)).sqrt() + self.eps)
            p.sub_(torch.where(a, update, torch.zeros_like(update)))
            p.grad = None

    def _step_all(self) -> None:
        """Every row active and none ever frozen (``uniform``): they share one step count, and
        the update is plain in-place Adam (no masks, no temporaries)."""
        self.t += 1
        t = float(self.t[0])
        c1, c2 = 1 - self.b1**t, 1 - self.b2**t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            denom = (v / c2).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / c1)
            p.grad = None
