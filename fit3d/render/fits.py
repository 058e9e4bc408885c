"""Render fits read back from their ``.npz`` files (never from a fitter's state)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from fit3d.data.writers import atomic_write_bytes, fit_files, fit_name, output_path, read_fit
from fit3d.render.overlay import PALETTE, Renderer, draw_keypoints

log = logging.getLogger(__name__)


#: What a render reads of a fit file (:func:`read_fit`); a ``.npz`` without them is no fit file.
RENDER_FIELDS = ("image", "image_size", "status", "annot_id", "global_orient", "body_pose", "betas", "transl",
                 "joints_3d", "focal_length", "principal_point", "keypoints_2d", "keypoints_2d_fit")


def read_render_fit(path: Path) -> dict:
    """:func:`read_fit`, checked to hold :data:`RENDER_FIELDS`.

    Raises:
        OSError / ValueError: unreadable, corrupt, or not a fit file (a field missing).
    """
    fit = read_fit(path)
    missing = [k for k in RENDER_FIELDS if k not in fit]
    if missing:
        raise ValueError(f"not a fit file (no {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''})")
    return fit


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


#: The longest side, in pixels, a render is drawn at: a larger image is drawn scaled down, its fits
#: with it (:func:`scaled_fit`), since the offscreen renderer's buffers grow with the pixel count (a
#: 12000 x 9000 photo took 12 GB at full size).
MAX_RENDER_SIDE = 4096
#: :func:`load_image`'s problem for an image that is not there (rendered on grey: a run folder
#: rendered without its images); every other problem makes ``fit3d render`` exit 3.
IMAGE_NOT_FOUND = "image not found"
#: :func:`load_image`'s note for a file cut short (drawn as far as it decodes, exit 0).
TRUNCATED_NOTE = "the file is cut short: drawn as far as it decodes"


def to_rgb(im):
    """An RGB copy of a Pillow image; integer and float greyscale (``I;16``, ``I``, ``F``: 12- and
    16-bit photos, depth-like TIFFs) stretched from their own minimum to maximum (Pillow's
    ``convert("RGB")`` clips them: a 16-bit photo came out white, a float one black)."""
    from PIL import Image

    if im.mode.startswith(("I", "F")):
        a = np.asarray(im, dtype=np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (a.min(), a.max()) if a.size else (0.0, 1.0)
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def load_image(path: Path | None, size: tuple[int, int], max_side: int = MAX_RENDER_SIDE
               ) -> tuple[np.ndarray, str, float]:
    """``(image (H, W, 3) uint8, problem, scale)``: the file's pixels as shown (EXIF orientation
    applied as :func:`fit3d.data.images.inspect_image` reads it: the frame of the fits), ``""`` (or a
    note for a file cut short, drawn as far as it decodes, as the fitting commands fit its people
    with a warning) and the scale it was drawn at (1, or less for an image larger than
    ``max_side``); else a grey canvas and why: :data:`IMAGE_NOT_FOUND`, ``"unreadable image: ..."``,
    or an image whose size is not ``size``, the ``(width, height)`` the fits were made on (another
    file under the same name: its fits would be drawn out of place)."""
    from PIL import Image, ImageFile

    from fit3d.data.images import own_orientation, shown, stored_size

    w, h = size
    scale = min(1.0, max_side / max(w, h, 1))

    def grey(problem):
        return np.full((max(1, round(h * scale)), max(1, round(w * scale)), 3), 128, np.uint8), problem, scale

    if path is None or not path.is_file():
        return grey(IMAGE_NOT_FOUND)
    note = ""
    try:
        with Image.open(path) as im:
            o = own_orientation(im)  # compared in the file's own frame: decoding comes before turning
            if im.size != stored_size(o, (w, h)):
                sw, sh = stored_size(o, im.size)
                return grey(f"the image is {sw}x{sh}, its fits were made on a {w}x{h} image")
            try:
                im.load()
            except OSError as e:  # cut short: Pillow decodes what is there only when told to
                if "truncated" not in str(e):
                    raise
                before, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, True
                try:
                    im.load()
                finally:
                    ImageFile.LOAD_TRUNCATED_IMAGES = before
                note = TRUNCATED_NOTE
            im = shown(im)
            if scale < 1.0:
                im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
            return np.asarray(to_rgb(im)), note, scale
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
        return grey(f"unreadable image: {e}")


def scaled_fit(fit: dict, scale: float) -> dict:
    """``fit`` as seen in its image scaled by ``scale``: the 2D keypoints, focal length, principal
    point and image size times ``scale`` (fit3d's pixel coordinates are continuous, pixel edges on
    whole numbers, as the default principal point ``(W/2, H/2)`` and Pillow's resize have them); 3D
    as it is."""
    if scale == 1.0:
        return fit
    out = dict(fit)
    for k in ("keypoints_2d", "keypoints_2d_fit"):
        if k in fit:
            a = np.array(fit[k], dtype=np.float64)
            a[..., :2] *= scale
            out[k] = a
    out["focal_length"] = np.asarray(fit["focal_length"], np.float64) * scale
    out["principal_point"] = np.asarray(fit["principal_point"], np.float64) * scale
    out["image_size"] = np.round(np.asarray(fit["image_size"]) * scale).astype(np.int64)
    return out


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
        # one camera draws the overlay: people fitted with other intrinsics (a SPIN file's per-person
        # cam_int) are moved to where that camera sees them as their own did (a trial: drawn half-size)
        seen = [(in_camera(v, fit["focal_length"][i], fit["principal_point"][i], f, pp), faces)
                for i, v in zip(idx, verts)]
        over = renderer.overlay(image, seen, f, pp, colors=colors)
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


def in_camera(vertices: np.ndarray, focal_length, principal_point, to_focal_length, to_principal_point) -> np.ndarray:
    """``vertices`` ``(V, 3)`` (metres, OpenCV camera frame) seen through the pinhole camera
    ``(focal_length, principal_point)`` (pixels), moved so that the camera ``(to_focal_length,
    to_principal_point)`` projects each to the same pixel at the same depth (``x' = (f x + (c -
    c') z) / f'`` per axis): a drawing aid for one overlay of people fitted with different
    intrinsics, not a rigid motion. Unchanged when the cameras are equal."""
    f, c = np.asarray(focal_length, np.float64), np.asarray(principal_point, np.float64)
    f2, c2 = np.asarray(to_focal_length, np.float64), np.asarray(to_principal_point, np.float64)
    if np.array_equal(f, f2) and np.array_equal(c, c2):
        return vertices
    v = np.asarray(vertices, np.float64)
    xy = (f * v[:, :2] + (c - c2) * v[:, 2:3]) / f2
    return np.concatenate([xy, v[:, 2:3]], 1).astype(np.asarray(vertices).dtype)


def save_meshes(fit: dict, body_model, out_dir: Path, fmt: str = "obj", key: str | None = None) -> list[Path]:
    """Write one ``<key>_<annot_id>.<fmt>`` mesh per fitted person (trimesh; ``key``: the fit's
    name, by default its image path, subfolders mirrored under ``out_dir``; an annotation id used by
    several people of the image adds the person's row, ``<key>_<annot_id>_<row>``, so that none
    overwrites another); returns the paths."""
    import trimesh

    idx, verts, faces = fitted_vertices(fit, body_model)
    key = str(fit["image"]) if key is None else key
    ids = [int(a) for a in fit["annot_id"]]
    paths = []
    for i, v in zip(idx, verts):
        name = f"{key}_{ids[i]}" + (f"_{i}" if ids.count(ids[i]) > 1 else "")
        p = Path(out_dir) / f"{name}.{fmt}"
        data = trimesh.Trimesh(v, faces, process=False).export(file_type=fmt)
        atomic_write_bytes(p, data if isinstance(data, bytes) else data.encode())
        paths.append(p)
    return paths


def save_meshes_dir(fits_dir: str | Path, out_dir: str | Path, body_model, fmt: str = "obj",
                    names: list[str] | None = None) -> int:
    """:func:`save_meshes` for every ``.npz`` of ``fits_dir`` (or the images named by their
    relative path); returns the mesh count."""
    n = 0
    for f in _named_fit_files(fits_dir, names):
        n += len(save_meshes(read_render_fit(f), body_model, Path(out_dir), fmt, key=fit_name(fits_dir, f)))
    return n


def _named_fit_files(fits_dir: Path, names: list[str] | None) -> list[Path]:
    """The fit files named (:func:`~fit3d.data.writers.fit_name`: ``<name>.npz``, those that exist),
    or, ``names`` None, every fit file of ``fits_dir``: a job renders its own images without opening
    the rest of a folder other jobs fit into."""
    if names is None:
        return fit_files(fits_dir)
    return [f for f in (output_path(fits_dir, k) for k in sorted(set(names))) if f.is_file()]


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
    """Render every ``.npz`` of ``fits_dir`` to ``out_dir/<name>.png``
    (:func:`~fit3d.data.writers.fit_name`: the image's relative path for the files a run writes); each
    image is found through the path its record keeps (relative to ``images_dir``).

    Args:
        names: only the fit files of these names (default: all).
        save_mesh: ``"obj"`` or ``"ply"`` to also write meshes.
    Returns:
        stats: ``images``, ``seconds``, ``images_per_s``, ``missing_images`` (rendered on grey, or
        cut short and drawn as far as they decode),
        ``errors`` (``{file, reason}``: unreadable fits, not rendered; unreadable images and images
        of another size than their fits', rendered on grey). Images larger than
        :data:`MAX_RENDER_SIDE` are drawn scaled down.
    """
    fits_dir, images_dir, out_dir = Path(fits_dir), Path(images_dir), Path(out_dir)
    files = _named_fit_files(fits_dir, names)
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
                fit = read_render_fit(f)
            except Exception as e:
                errors.append(dict(file=str(f), reason=f"unreadable fit: {e}"))
                continue
            image, problem, scale = load_image(images_dir / str(fit["image"]), tuple(int(v) for v in fit["image_size"]))
            if problem in (IMAGE_NOT_FOUND, TRUNCATED_NOTE):
                missing.append(f"{images_dir / str(fit['image'])} ({problem})")
            elif problem:  # drawn on grey all the same, but the run says so (exit 3)
                errors.append(dict(file=str(images_dir / str(fit["image"])), reason=f"{problem}: rendered on grey"))
            if problem:
                log.warning("image %s: %s", fit["image"], problem if problem == TRUNCATED_NOTE else
                            f"{problem}, rendering on grey")
            name = fit_name(fits_dir, f)
            atomic_write_bytes(out_dir / f"{name}.png",
                               png_bytes(render_fit(scaled_fit(fit, scale), image, body_model, renderer, side,
                                                    keypoints)))
            if save_mesh:
                save_meshes(fit, body_model, out_dir, save_mesh, key=name)
            done += 1
    finally:
        renderer.close()
    dt = time.perf_counter() - t0
    return dict(images=done, seconds=round(dt, 3), images_per_s=round(done / dt, 3) if dt > 0 else 0.0,
                missing_images=missing, errors=errors)
