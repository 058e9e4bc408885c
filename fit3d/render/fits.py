"""Render fits read back from their ``.npz`` files (never from a fitter's state)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from fit3d.data.writers import atomic_write_bytes, fit_files, read_fit
from fit3d.render.overlay import PALETTE, Renderer, draw_keypoints

log = logging.getLogger(__name__)


def fitted_vertices(fit: dict, body_model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full meshes of the fitted people of one ``.npz``.

    Returns:
        ``(person indices (N,), vertices (N, V, 3) metres, faces (F, 3))``.
    """
    ok = (fit["status"] == "fitted") & np.isfinite(fit["transl"]).all(1)
    idx = np.nonzero(ok)[0]
    faces = body_model.faces().cpu().numpy()
    if len(idx) == 0:
        return idx, np.zeros((0, 0, 3), np.float32), faces
    t = lambda k: torch.as_tensor(fit[k][idx], dtype=torch.float32, device=body_model.device)  # noqa: E731
    with torch.no_grad():
        out = body_model(t("global_orient"), t("body_pose"), t("betas"), t("transl"), return_vertices=True)
    return idx, out.vertices.cpu().numpy(), faces


def load_image(path: Path | None, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """``(image (H, W, 3) uint8, problem)``: the file's pixels and ``""``, or a grey canvas of
    ``size`` and why (``"image not found"``, ``"unreadable image: ..."``)."""
    from PIL import Image, ImageOps

    w, h = size
    grey = np.full((h, w, 3), 128, np.uint8)
    if path is None or not path.is_file():
        return grey, "image not found"
    try:
        with Image.open(path) as im:  # as shown: the frame of the fits (fit3d.data.images.inspect_image)
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB")), ""
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
        return grey, f"unreadable image: {e}"


def render_fit(fit: dict, image: np.ndarray, body_model, renderer: Renderer, side: bool = True,
               keypoints: bool = False) -> np.ndarray:
    """Overlay (and side view to its right) of one image's fits.

    Returns:
        ``(H, W, 3)`` or, with ``side``, ``(H, 2W, 3)`` uint8.
    """
    idx, verts, faces = fitted_vertices(fit, body_model)
    meshes = [(v, faces) for v in verts]
    colors = [PALETTE[i % len(PALETTE)] for i in idx]
    h, w = image.shape[:2]
    f, pp = (fit["focal_length"][0], fit["principal_point"][0]) if len(fit["focal_length"]) else (None, None)
    over = image.copy()
    if meshes:
        over = renderer.overlay(image, meshes, f, pp, colors=colors)
    if keypoints:
        for i in range(len(fit["status"])):
            fitted = fit["keypoints_2d_fit"][i] if fit["status"][i] == "fitted" else None
            over = draw_keypoints(over, fit["keypoints_2d"][i], fitted)
    if not side:
        return over
    if meshes:
        pivot = np.stack([fit["joints_3d"][i, 0] for i in idx]).mean(0)
        sv = renderer.side_view((w, h), meshes, pivot, f, pp, colors=colors)
    else:
        sv = np.full_like(image, 255)
    return np.concatenate([over, sv], axis=1)


def save_meshes(fit: dict, body_model, out_dir: Path, fmt: str = "obj") -> list[Path]:
    """Write one ``<image path>_<annot_id>.<fmt>`` mesh per fitted person (trimesh; subfolders
    of the image path mirrored under ``out_dir``); returns the paths."""
    import trimesh

    idx, verts, faces = fitted_vertices(fit, body_model)
    key = str(fit["image"])
    paths = []
    for i, v in zip(idx, verts):
        p = Path(out_dir) / f"{key}_{int(fit['annot_id'][i])}.{fmt}"
        data = trimesh.Trimesh(v, faces, process=False).export(file_type=fmt)
        atomic_write_bytes(p, data if isinstance(data, bytes) else data.encode())
        paths.append(p)
    return paths


def save_meshes_dir(fits_dir: str | Path, out_dir: str | Path, body_model, fmt: str = "obj",
                    names: list[str] | None = None) -> int:
    """:func:`save_meshes` for every ``.npz`` of ``fits_dir`` (or the images named by their
    relative path); returns the mesh count."""
    n = 0
    for f in fit_files(fits_dir):
        fit = read_fit(f)
        if names is None or str(fit["image"]) in set(names):
            n += len(save_meshes(fit, body_model, Path(out_dir), fmt))
    return n


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an ``(H, W, 3)`` uint8 image."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def render_dir(fits_dir: str | Path, images_dir: str | Path, out_dir: str | Path, body_model,
               side: bool = True, keypoints: bool = False, save_mesh: str | None = None,
               names: list[str] | None = None, progress: bool = True) -> dict:
    """Render every ``.npz`` of ``fits_dir`` to ``out_dir/<image path>.png``; each image is found
    through the path its record keeps (relative to ``images_dir``).

    Args:
        names: only the images with these relative paths (default: all).
        save_mesh: ``"obj"`` or ``"ply"`` to also write meshes.
    Returns:
        stats: ``images``, ``seconds``, ``images_per_s``, ``missing_images``, ``errors``.
    """
    fits_dir, images_dir, out_dir = Path(fits_dir), Path(images_dir), Path(out_dir)
    files = fit_files(fits_dir)
    wanted = None if names is None else set(names)
    renderer = Renderer()
    missing, errors = [], []
    t0 = time.perf_counter()
    it = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, unit="image", desc="fit3d render")
    done = 0
    try:
        for f in it:
            try:
                fit = read_fit(f)
            except Exception as e:
                errors.append(dict(file=str(f), reason=f"unreadable fit: {e}"))
                continue
            if wanted is not None and str(fit["image"]) not in wanted:
                continue
            image, problem = load_image(images_dir / str(fit["image"]), tuple(fit["image_size"]))
            if problem:
                missing.append(f"{images_dir / str(fit['image'])} ({problem})")
                log.warning("image %s: %s, rendering on grey", fit["image"], problem)
            atomic_write_bytes(out_dir / f"{fit['image']}.png",
                               png_bytes(render_fit(fit, image, body_model, renderer, side, keypoints)))
            if save_mesh:
                save_meshes(fit, body_model, out_dir, save_mesh)
            done += 1
    finally:
        renderer.close()
    dt = time.perf_counter() - t0
    return dict(images=done, seconds=round(dt, 3), images_per_s=round(done / dt, 3) if dt > 0 else 0.0,
                missing_images=missing, errors=errors)
