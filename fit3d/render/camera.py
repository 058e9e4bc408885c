"""The one place where the OpenCV camera frame meets OpenGL's.

Scenes are built in the OpenCV camera frame of the fit (x right, y down, z
forward, metres). An OpenGL camera looks down its -z axis with y up, so the
pyrender camera placed in that scene has the pose ``diag(1, -1, -1)`` (a
rotation of pi about x): its +y (up) is the scene's -y, its -z (forward) the
scene's +z. With ``pyrender.IntrinsicsCamera(fx, fy, cx, cy)`` a point then
lands on the pixel the pinhole model of :func:`fit3d.geometry.project` gives
(tested to a fraction of a pixel).
"""

from __future__ import annotations

import numpy as np

#: Pose (camera-to-scene) of a pyrender camera that sees like an OpenCV camera at the origin.
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def opencv_camera_pose(rotation: np.ndarray | None = None, center: np.ndarray | None = None) -> np.ndarray:
    """pyrender camera pose for an OpenCV camera with camera-to-scene ``rotation`` (3x3)
    at ``center`` (3,) in the scene (identity / origin: the fit's own camera)."""
    pose = np.eye(4)
    if rotation is not None:
        pose[:3, :3] = rotation
    if center is not None:
        pose[:3, 3] = center
    return pose @ OPENCV_TO_OPENGL
