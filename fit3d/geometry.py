"""Camera projection and rotation helpers (OpenCV frame: x right, y down, z forward)."""

from __future__ import annotations

import roma
import torch

#: Smallest depth (metres) used when dividing by z, so points behind the camera
#: give large but finite reprojections instead of NaN.
MIN_DEPTH = 1e-2


def project(points: torch.Tensor, focal_length: torch.Tensor, principal_point: torch.Tensor) -> torch.Tensor:
    """Pinhole projection.

    Args:
        points: ``(B, N, 3)`` camera-frame points, metres.
        focal_length: ``(B, 2)`` ``fx, fy`` pixels.
        principal_point: ``(B, 2)`` ``cx, cy`` pixels.
    Returns:
        ``(B, N, 2)`` pixels.
    """
    xy, z = points.split([2, 1], dim=-1)  # one backward (a concatenation) instead of two zero-filled slices
    return xy / z.clamp(min=MIN_DEPTH) * focal_length[:, None, :] + principal_point[:, None, :]


def keypoint_extent(xy: torch.Tensor, labelled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The corners of the box around each person's labelled image points.

    Args:
        xy: ``(B, K, 2)`` pixels. labelled: ``(B, K)`` bool, the points to take.
    Returns:
        ``(lo (B, 2), hi (B, 2))`` pixels; ``+inf`` / ``-inf`` for a person with no labelled point.
    """
    inf = torch.full_like(xy, float("inf"))
    return (torch.where(labelled[..., None], xy, inf).amin(-2), torch.where(labelled[..., None], xy, -inf).amax(-2))


def broadcast_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for matrices of a small inner size ``n`` (3 or 4) as one broadcast product
    ``(..., M, n, P)`` summed over ``n``: two elementwise kernels instead of a batched matrix
    product.

    Args:
        a: ``(..., M, n)``. b: ``(..., n, P)``; the leading dimensions broadcast as ``@``'s do.
    Returns:
        ``(..., M, P)``, equal to ``a @ b`` up to rounding.
    Raises:
        ValueError: inner sizes that differ or float32 with float64, which ``@`` refuses and the
            broadcast would accept silently, or a 1-D operand (``@`` reads it as a vector).
    """
    if a.dim() < 2 or b.dim() < 2 or a.shape[-1] != b.shape[-2] or a.dtype != b.dtype:
        raise ValueError(f"broadcast_matmul of {a.dtype} {tuple(a.shape)} and {b.dtype} {tuple(b.shape)}: "
                         "two matrices of one dtype whose inner sizes agree")
    return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)


def small_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for the many tiny products of fitting (3x3 rotations and 3x4 transforms of every
    bone of every row): :func:`broadcast_matmul` on CUDA, ``@`` elsewhere.

    On an H200, cuBLAS's batched kernels for such products (32x32 tiles for 3x4 outputs) took
    73 % of SMPLify's kernel time at 16,384 people (``benchmarks/profile_fit.py``, 2026-12-04);
    on the CPU torch's batched product is the faster one.

    Args:
        a: ``(..., M, n)``. b: ``(..., n, P)``, broadcasting as ``@``.
    Returns:
        ``(..., M, P)``.
    """
    return broadcast_matmul(a, b) if a.is_cuda else a @ b


def rotate(points: torch.Tensor, rotvec: torch.Tensor) -> torch.Tensor:
    """Rotate ``(B, N, 3)`` points by the ``(B, 3)`` axis-angle rotations."""
    R = roma.rotvec_to_rotmat(rotvec)
    return points @ R.transpose(-1, -2)


def compose_rotvec(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Axis-angle of ``R(second) @ R(first)`` (apply ``first`` then ``second``), ``(..., 3)``."""
    return roma.rotmat_to_rotvec(roma.rotvec_to_rotmat(second) @ roma.rotvec_to_rotmat(first))


def _cofactor(x: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` cofactor matrices, ``det(x) x^-T``, as cross products of the rows."""
    r0, r1, r2 = x[..., 0, :], x[..., 1, :], x[..., 2, :]
    return torch.stack([torch.linalg.cross(r1, r2, dim=-1), torch.linalg.cross(r2, r0, dim=-1),
                        torch.linalg.cross(r0, r1, dim=-1)], -2)


def _skew(u: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` -> ``(..., 3, 3)`` cross-product matrices ``[u]x``."""
    z = torch.zeros_like(u[..., 0])
    return torch.stack([torch.stack([z, -u[..., 2], u[..., 1]], -1), torch.stack([u[..., 2], z, -u[..., 0]], -1),
                        torch.stack([-u[..., 1], u[..., 0], z], -1)], -2)


#: Scaled Newton steps of :func:`special_procrustes` (quadratic convergence: float32 precision
#: is reached within 5 steps for anny's rest orientations, condition numbers up to ~5e3). Rows
#: that are then not orthogonal to :data:`_ORTHOGONAL_EPS` times their dtype's eps, not finite,
#: or with ``det <= 0`` are taken from an SVD instead.
_NEWTON_STEPS = 5
_ORTHOGONAL_EPS = 30.0


class _SpecialProcrustes(torch.autograd.Function):
    """:func:`special_procrustes` with an analytic backward."""

    @staticmethod
    def forward(ctx, m: torch.Tensor) -> torch.Tensor:
        # The polar factor does not depend on a positive scale: normalise so that nothing overflows.
        # Only elementwise operations and exact maxima, so that a row's result does not depend on
        # how many threads, or which batch, computed it (workers must write what one process does).
        x = m / m.abs().amax((-1, -2), keepdim=True).clamp_min(torch.finfo(m.dtype).tiny)
        for step in range(_NEWTON_STEPS):  # Higham's scaled Newton iteration for the polar factor
            c = _cofactor(x)
            det = (x[..., 0, :1] * c[..., 0, :1] + x[..., 0, 1:2] * c[..., 0, 1:2]
                   + x[..., 0, 2:] * c[..., 0, 2:])[..., None]  # (..., 1, 1), written out (see above)
            if step == 0:
                proper = det[..., 0, 0] > 0  # (the sign of det(m); NaN: not)
            g = det.abs().clamp_min(1e-30).pow(-1.0 / 3.0)
            x = 0.5 * (g * x + c / (g * det))
        eye = torch.eye(3, dtype=m.dtype, device=m.device)
        err = (x.transpose(-1, -2) @ x - eye).abs().amax((-1, -2))
        bad = ~proper | ~(err <= _ORTHOGONAL_EPS * torch.finfo(m.dtype).eps)  # (NaN: bad)
        if bool(bad.any()):  # improper or ill-conditioned: the special Procrustes from an SVD
            x = x.clone()
            finite = torch.isfinite(m).flatten(-2).all(-1)
            x[bad & ~finite] = float("nan")  # (the SVD raises on them: one such matrix stopped the batch)
            bad = bad & finite
            if bool(bad.any()):
                u, _, vh = torch.linalg.svd(m[bad])
                d = torch.ones_like(u[..., 0])
                d[..., 2] = torch.linalg.det(u @ vh).sign()
                x[bad] = (u * d[..., None, :]) @ vh
        ctx.save_for_backward(m, x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # R^T M = S is symmetric; dR = R [w]x with (tr(S) I - S) w = axial(R^T dM - dM^T R), so
        # dL/dM = R [u]x with u = (tr(S) I - S)^-1 axial(R^T G) (G = dL/dR; axial of the skew part x2).
        m, r = ctx.saved_tensors
        s = r.transpose(-1, -2) @ m
        s = 0.5 * (s + s.transpose(-1, -2))
        p = torch.diagonal(s, dim1=-2, dim2=-1).sum(-1)[..., None, None] * torch.eye(3, dtype=m.dtype,
                                                                                  device=m.device) - s
        x = r.transpose(-1, -2) @ grad
        g = torch.stack([x[..., 2, 1] - x[..., 1, 2], x[..., 0, 2] - x[..., 2, 0], x[..., 1, 0] - x[..., 0, 1]], -1)
        u, info = torch.linalg.solve_ex(p, g[..., None])
        u = u[..., 0]
        singular = info != 0
        if bool(singular.any()):  # (e.g. m = -I or of rank 1: the rotation is not unique) least squares
            u = u.clone()
            u[singular] = (torch.linalg.pinv(p[singular]) @ g[singular][..., None])[..., 0]
        return r @ _skew(u)


def special_procrustes(m: torch.Tensor) -> torch.Tensor:
    """The rotation nearest to each ``(..., 3, 3)`` matrix (``argmax_R tr(R^T m)`` over SO(3), as
    ``roma.special_procrustes``), for many small matrices at once.

    The forward is Higham's scaled Newton iteration for the orthogonal polar factor (Higham,
    "Computing the polar decomposition", SIAM J. Sci. Stat. Comput. 1986), elementwise products
    only; rows with ``det(m) <= 0`` or that have not converged come from an SVD, rows that are not
    finite give NaN (the others are unaffected: one diverged person of a batch). The backward is
    the polar factor's closed-form derivative (a 3x3 solve per matrix). On a CPU both are a few
    times cheaper than an SVD or eigen-decomposition per matrix and its backward, with the same
    values and gradients to float32 precision (tested against roma).

    Args:
        m: ``(..., 3, 3)``; half precision is computed in float32.
    Returns:
        ``(..., 3, 3)`` rotation matrices, ``m``'s dtype.
    """
    if m.dtype in (torch.float16, torch.bfloat16):
        return _SpecialProcrustes.apply(m.float()).to(m.dtype)
    return _SpecialProcrustes.apply(m)
