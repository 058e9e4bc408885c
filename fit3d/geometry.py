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


def rotate(points: torch.Tensor, rotvec: torch.Tensor) -> torch.Tensor:
    """Rotate ``(B, N, 3)`` points by the ``(B, 3)`` axis-angle rotations."""
    R = roma.rotvec_to_rotmat(rotvec)
    return points @ R.transpose(-1, -2)


def compose_rotvec(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Axis-angle of ``R(second) @ R(first)`` (apply ``first`` then ``second``), ``(..., 3)``."""
    return roma.rotmat_to_rotvec(roma.rotvec_to_rotmat(second) @ roma.rotvec_to_rotmat(first))
