"""pyrender offscreen rendering of fitted meshes over their image, and side views.

Meshes are given in the fit's OpenCV camera frame (metres); the camera is the
fit's own full-frame pinhole (``focal_length``, ``principal_point`` from the
``.npz``). One colour per person, the same in every view.
"""

from __future__ import annotations

import math
import os

import numpy as np

from fit3d.render.camera import opencv_camera_pose

#: Person colours (RGB in [0, 1]), cycled; person i always gets PALETTE[i % len].
PALETTE = (
    (0.65, 0.74, 0.86),
    (0.95, 0.62, 0.45),
    (0.55, 0.85, 0.55),
    (0.90, 0.80, 0.40),
    (0.80, 0.55, 0.85),
    (0.45, 0.85, 0.85),
    (0.95, 0.55, 0.65),
    (0.70, 0.70, 0.70),
)

EGL_HELP = (
    "offscreen rendering needs EGL: install your system's EGL and Mesa drivers "
    "(Debian/Ubuntu: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri) or NVIDIA's driver; "
    "fit3d sets PYOPENGL_PLATFORM=egl unless you set PYOPENGL_PLATFORM yourself"
)


class RenderError(RuntimeError):
    """Rendering is impossible here (no EGL / OpenGL context)."""


def _pyrender():
    """pyrender, imported headless: when the user has not chosen a PyOpenGL platform,
    ``PYOPENGL_PLATFORM=egl`` is set first (Mesa's software EGL works on CPU machines, NVIDIA's
    EGL on GPU machines). Only rendering sets it: importing :mod:`fit3d.render` changes no
    environment variable."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    import pyrender

    return pyrender


class Renderer:
    """Reusable offscreen renderer (one OpenGL context, resized per image).

    Raises:
        RenderError: on first use, when no EGL context can be created (the
            message names the system packages to install).
    """

    def __init__(self) -> None:
        self._renderer = None

    def _get(self, width: int, height: int):
        if self._renderer is None:
            try:
                pyrender = _pyrender()
                self._renderer = pyrender.OffscreenRenderer(int(width), int(height))
            except Exception as e:  # ImportError, OpenGL.error..., RuntimeError from EGL
                raise RenderError(f"{EGL_HELP} (cause: {type(e).__name__}: {e})") from e
        # pyrender rebuilds its framebuffer when the viewport size changes
        self._renderer.viewport_width, self._renderer.viewport_height = int(width), int(height)
        return self._renderer

    def close(self) -> None:
        """Release the OpenGL context."""
        if self._renderer is not None:
            self._renderer.delete()
            self._renderer = None

    def render(
        self,
        meshes: list[tuple[np.ndarray, np.ndarray]],
        size: tuple[int, int],
        focal_length: np.ndarray,
        principal_point: np.ndarray,
        camera_rotation: np.ndarray | None = None,
        camera_center: np.ndarray | None = None,
        colors: list[tuple[float, float, float]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render meshes with an OpenCV-style pinhole camera.

        Args:
            meshes: ``[(vertices (V, 3) metres, faces (F, 3))]`` in the scene (OpenCV) frame.
            size: ``(width, height)`` pixels.
            focal_length: ``(2,)`` ``fx, fy`` pixels. principal_point: ``(2,)`` pixels.
            camera_rotation, camera_center: camera-to-scene pose; default the fit's camera.
            colors: one RGB per mesh (default :data:`PALETTE`).
        Returns:
            ``(rgb (H, W, 3) uint8, depth (H, W) float32, 0 where empty)``.
        Raises:
            RenderError: pyrender cannot be imported or no offscreen context can be made.
        """
        w, h = size
        renderer = self._get(w, h)  # first: a pyrender that cannot be imported is a RenderError there
        import trimesh

        pyrender = _pyrender()
        scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 0.0], ambient_light=[0.35, 0.35, 0.35])
        for i, (v, f) in enumerate(meshes):
            color = (colors or PALETTE)[i % len(colors or PALETTE)]
            mat = pyrender.MetallicRoughnessMaterial(
                metallicFactor=0.1, roughnessFactor=0.7, alphaMode="OPAQUE", baseColorFactor=(*color, 1.0)
            )
            tm = trimesh.Trimesh(np.asarray(v, dtype=np.float64), np.asarray(f), process=False)
            scene.add(pyrender.Mesh.from_trimesh(tm, material=mat, smooth=True))
        fx, fy = (float(x) for x in focal_length)
        cx, cy = (float(x) for x in principal_point)
        pose = opencv_camera_pose(camera_rotation, camera_center)
        cam = pyrender.IntrinsicsCamera(fx, fy, cx, cy, *clip_range(meshes, pose))
        scene.add(cam, pose=pose)
        for angle in (-0.6, 0.0, 0.6):  # three lights around the camera
            lp = pose.copy()
            c, s = math.cos(angle), math.sin(angle)
            lp[:3, :3] = pose[:3, :3] @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
            scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=2.0), pose=lp)
        color, depth = renderer.render(scene, flags=pyrender.RenderFlags.RGBA)
        return np.ascontiguousarray(color[..., :3]), depth.astype(np.float32)

    def overlay(self, image: np.ndarray, meshes, focal_length, principal_point, colors=None, alpha: float = 0.85):
        """The meshes drawn over ``image`` ``(H, W, 3)`` uint8 with the fit's camera."""
        h, w = image.shape[:2]
        rgb, depth = self.render(meshes, (w, h), focal_length, principal_point, colors=colors)
        m = (depth > 0)[..., None] * alpha
        return (image * (1 - m) + rgb * m).astype(np.uint8)

    def side_view(self, size, meshes, pivot: np.ndarray, focal_length, principal_point, colors=None, angle_deg=90.0):
        """The meshes seen from a camera turned ``angle_deg`` about the vertical axis
        (the image's -y) through ``pivot`` (3,), at the same distance, or farther when that
        is what it takes for every mesh to be in view (people spread in depth lie side by
        side in this view), centred on the meshes (:func:`side_framing`), on white."""
        a = math.radians(angle_deg)
        R = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        points = np.concatenate([np.asarray(v, dtype=np.float64)[::7] for v, _ in meshes] or [np.zeros((0, 3))])
        f = np.asarray(focal_length, dtype=np.float64)
        k, pp = side_framing(points, R, pivot, f, np.asarray(principal_point, dtype=np.float64), size)
        center = pivot + k * (R @ (np.zeros(3) - pivot))
        rgb, depth = self.render(meshes, size, f, pp, R, center, colors)
        out = np.full_like(rgb, 255)
        mask = depth > 0
        out[mask] = rgb[mask]
        return out


def clip_range(meshes, pose: np.ndarray) -> tuple[float, float]:
    """``(znear, zfar)`` metres that hold every vertex of ``meshes`` seen from the camera at
    ``pose`` (camera-to-scene, OpenGL axes: the camera looks down its -z): people a kilometre
    or more away (a tiny person under a long focal length) are drawn, and the near plane moves
    out with them (the depth buffer's precision goes by the ratio of the two)."""
    pts = [np.asarray(v, dtype=np.float64).reshape(-1, 3) for v, _ in meshes]
    pts = np.concatenate(pts) if pts else np.zeros((0, 3))
    depth = -((pts - pose[:3, 3]) @ pose[:3, :3])[:, 2]  # distance along the viewing axis
    depth = depth[np.isfinite(depth) & (depth > 0)]
    if len(depth) == 0:
        return 0.05, 1000.0
    near = max(0.05, 0.5 * float(depth.min()))
    return near, max(1000.0, 2.0 * float(depth.max()), 10.0 * near)


def side_framing(points: np.ndarray, rotation: np.ndarray, pivot: np.ndarray, focal_length: np.ndarray,
                 principal_point: np.ndarray, size: tuple[int, int], margin: float = 0.03,
                 factors=(1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0),
                 closer=(0.5, 0.25, 0.1, 0.05, 0.025, 0.01)) -> tuple[float, np.ndarray]:
    """How the side camera frames ``points`` ``(N, 3)`` (metres, scene frame): the smallest of
    ``factors`` by which its distance to ``pivot`` must grow for the points' projected extent
    to fit inside the image, ``margin`` of its size from the border (the largest factor when
    none does), and the principal point ``(2,)`` that centres that extent. Points that fit at
    the first factor with room to spare (small or far people) are seen from closer: the smallest
    of ``closer`` at which they still fill at most half the image.

    The camera is the one :meth:`Renderer.side_view` places: camera-to-scene ``rotation``
    ``(3, 3)``, centre ``pivot + factor * rotation @ -pivot``, OpenCV pinhole intrinsics
    ``focal_length`` ``(2,)`` and ``principal_point`` ``(2,)`` pixels, ``size`` ``(W, H)``.
    """
    size = np.asarray(size, dtype=np.float64)
    if len(points) == 0:
        return factors[0], principal_point

    def extent(k: float):  # (lo, hi) pixels of the points seen from factor k; None: some behind the camera
        x = (points - (pivot + k * (rotation @ -pivot))) @ rotation  # camera frame: R^T (X - C)
        if (x[:, 2] <= 0.05).any():
            return None
        uv = focal_length * x[:, :2] / x[:, 2:] + principal_point
        return uv.min(0), uv.max(0)

    for k in factors:
        box = extent(k)
        if box is None:
            continue
        if ((box[1] - box[0]) <= (1 - 2 * margin) * size).all() or k == factors[-1]:
            if k == factors[0]:
                for nearer in closer:
                    seen = extent(nearer)
                    if seen is None or ((seen[1] - seen[0]) > 0.5 * (1 - 2 * margin) * size).any():
                        break
                    k, box = nearer, seen
            return k, principal_point + size / 2 - (box[0] + box[1]) / 2
    return factors[-1], principal_point


def draw_keypoints(image: np.ndarray, keypoints_2d: np.ndarray | None, fitted_2d: np.ndarray | None, color=(255, 255, 255)):
    """Input keypoints as circles, reprojected keypoints as crosses (PIL), of one person: the
    markers are a 150th of the image's smaller side, or a 25th of the person's extent when that is
    smaller (at least 1 px), so that the markers of a small person do not hide it.

    Args:
        image: ``(H, W, 3)`` uint8.
        keypoints_2d: ``(K, 3)`` pixels + confidence (drawn where confidence > 0), or None.
        fitted_2d: ``(K, 2)`` pixels (drawn where finite), or None.
    Returns:
        A new ``(H, W, 3)`` uint8 image.
    """
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    d = ImageDraw.Draw(im)
    r = max(2, round(min(image.shape[:2]) / 150))
    points = [np.zeros((0, 2))]
    if keypoints_2d is not None:
        kp = np.asarray(keypoints_2d, dtype=np.float64)
        points.append(kp[kp[:, 2] > 0, :2])
    if fitted_2d is not None:
        points.append(np.asarray(fitted_2d, dtype=np.float64)[:, :2])
    points = np.concatenate(points)
    points = points[np.isfinite(points).all(1)]
    if len(points) > 1:  # small people: markers a 25th of the person's size, that do not hide them
        r = max(1, min(r, round(float(np.linalg.norm(points.max(0) - points.min(0))) / 25)))
    if keypoints_2d is not None:
        for x, y, c in keypoints_2d:
            if c > 0 and np.isfinite(x) and np.isfinite(y):
                d.ellipse([x - r, y - r, x + r, y + r], outline=(0, 255, 0), width=max(1, r // 2))
    if fitted_2d is not None:
        for x, y in fitted_2d:
            if np.isfinite(x) and np.isfinite(y):
                d.line([x - r, y - r, x + r, y + r], fill=color, width=max(1, r // 2))
                d.line([x - r, y + r, x + r, y - r], fill=color, width=max(1, r // 2))
    return np.asarray(im)
