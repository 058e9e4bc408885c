"""Loss terms of the fitters, each ``(B,)`` per person.

Reprojection residuals are measured in *nominal pixels*: pixels rescaled so
that the person's scale (the larger of its box diagonal and its keypoints'
box diagonal) is :data:`NOMINAL_SCALE` px. The same weights then work for a
60-px and a 600-px person.
"""

from __future__ import annotations

import torch

from fit3d.geometry import keypoint_extent

#: Person scale, in nominal pixels, that residuals are normalised to.
NOMINAL_SCALE = 200.0
#: Geman-McClure scale (nominal pixels): residuals well above this count little.
GMOF_RHO = 40.0


def gmof(squared_residual: torch.Tensor, rho: float) -> torch.Tensor:
    """Geman-McClure robust cost ``rho^2 r^2 / (rho^2 + r^2)`` of squared residuals ``r^2``
    (Geman & McClure 1987; SMPLify's ``GMoF``), elementwise: any shape in, the same shape out, in
    the residuals' squared units (``rho`` in their units: nominal pixels for :func:`reprojection`)."""
    return rho**2 * squared_residual / (rho**2 + squared_residual)


def person_scale(keypoints_2d: torch.Tensor, bbox: torch.Tensor) -> torch.Tensor:
    """``(B,)`` pixels: max of the box diagonal and the diagonal of the visible keypoints' box."""
    vis = keypoints_2d[..., 2] > 0
    lo, hi = keypoint_extent(keypoints_2d[..., :2], vis)
    kp_diag = torch.where(vis.any(1), (hi - lo).norm(dim=-1), torch.zeros_like(lo[:, 0]))
    box_diag = bbox[:, 2:].norm(dim=-1)
    return torch.maximum(torch.maximum(kp_diag, box_diag), torch.ones_like(box_diag))


def reprojection(
    projected: torch.Tensor,
    keypoints_2d: torch.Tensor,
    scale: torch.Tensor,
    rho: float = GMOF_RHO,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Confidence-weighted mean GMoF reprojection cost.

    Args:
        projected: ``(B, K, 2)`` pixels.
        keypoints_2d: ``(B, K, 3)`` target pixels and confidence.
        scale: ``(B,)`` person scale in pixels (:func:`person_scale`).
        mask: optional ``(K,)`` bool or float weights of the keypoints (e.g. the body
            model's :meth:`~fit3d.body_models.base.BodyModel.keypoint_weights`).
    Returns:
        ``(B,)`` cost in nominal px^2.
    """
    conf = keypoints_2d[..., 2]
    if mask is not None:
        conf = conf * mask.to(conf)
    r = (projected - keypoints_2d[..., :2]) * (NOMINAL_SCALE / scale)[:, None, None]
    cost = gmof(r.pow(2).sum(-1), rho)
    return (conf * cost).sum(-1) / conf.sum(-1).clamp(min=1e-6)


def depth(transl_z: torch.Tensor, init_z: torch.Tensor) -> torch.Tensor:
    """``((z - z0) / z0)^2``: keeps the root depth near its initial estimate (SMPLify's stage-1 term).
    ``transl_z``, ``init_z``: ``(B,)`` metres; returns ``(B,)``, unitless (relative, so a person 300 m
    away is held as firmly as one at 3 m)."""
    return ((transl_z - init_z) / init_z.clamp(min=1e-3)).pow(2)


def shape(betas: torch.Tensor) -> torch.Tensor:
    """``|betas|^2``: ``betas (B, S)`` -> ``(B,)`` (SMPLify's shape prior)."""
    return betas.pow(2).sum(-1)


def face_orientation(
    keypoints_3d: torch.Tensor, evidence: torch.Tensor, nose: int, ears: tuple[int, int], margin: float = 0.3
) -> torch.Tensor:
    """Penalty for facing the wrong way given which face keypoints are labelled.

    The head's forward direction is ``nose - mid(ears)``; its cosine with the
    camera ray to the nose is < 0 when the face looks at the camera.
    ``evidence`` is +1 where nose or eyes are labelled (face seen), -1 where only
    ears are (back of the head seen), 0 otherwise. Cost: ``relu(e * cos - margin)^2``,
    so profiles (``cos ~ 0``) cost nothing.

    Args:
        keypoints_3d: ``(B, K, 3)`` camera frame.
        evidence: ``(B,)`` in {-1, 0, 1}.
    Returns:
        ``(B,)``.
    """
    head = keypoints_3d[:, nose]
    forward = torch.nn.functional.normalize(head - 0.5 * (keypoints_3d[:, ears[0]] + keypoints_3d[:, ears[1]]), dim=-1)
    ray = torch.nn.functional.normalize(head, dim=-1)
    cos = (forward * ray).sum(-1)
    return torch.relu(evidence * cos - margin).pow(2)


def upright(global_orient: torch.Tensor) -> torch.Tensor:
    """``(B,)`` squared camera-z component of the body's up axis (canonical +Y).

    Zero when the body stands in a plane parallel to the image (upright or
    rolled in the image plane), 1 when it lies along the optical axis. A weak
    weight removes the tilt-in-depth ambiguity of truncated and sitting people,
    whose 2D keypoints barely change when the whole body leans towards or away
    from the camera.
    """
    import roma

    up = roma.rotvec_to_rotmat(global_orient)[..., :, 1]
    return up[..., 2].pow(2)


def rms_residual(projected: torch.Tensor, keypoints_2d: torch.Tensor, scale: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(B,)`` confidence-weighted RMS reprojection residual in nominal pixels (no robust cost);
    ``mask``: optional ``(K,)`` keypoint weights, as :func:`reprojection`'s."""
    conf = keypoints_2d[..., 2]
    if mask is not None:
        conf = conf * mask.to(conf)
    r2 = ((projected - keypoints_2d[..., :2]) * (NOMINAL_SCALE / scale)[:, None, None]).pow(2).sum(-1)
    return ((conf * r2).sum(-1) / conf.sum(-1).clamp(min=1e-6)).sqrt()
