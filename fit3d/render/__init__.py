"""Offscreen rendering of fits: overlays, side views, keypoints, HTML reports.

Headless by default: when the user has not chosen a PyOpenGL platform,
``PYOPENGL_PLATFORM=egl`` is set just before pyrender is imported, on first render
(Mesa's software EGL works on CPU machines, NVIDIA's EGL on GPU machines).
"""

from __future__ import annotations

from fit3d.render.camera import OPENCV_TO_OPENGL, opencv_camera_pose
from fit3d.render.overlay import PALETTE, Renderer, RenderError, draw_keypoints

__all__ = ["OPENCV_TO_OPENGL", "opencv_camera_pose", "PALETTE", "Renderer", "RenderError", "draw_keypoints"]
