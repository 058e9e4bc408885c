"""Image files: their size and format from the header (:func:`inspect_image`), the output key of
each (:func:`image_key`: its path relative to the image folder), and an :class:`~fit3d.data.records.ImageRecord` per
readable file (:func:`open_image`), every unreadable one an :class:`~fit3d.data.records.InputProblem`."""

from __future__ import annotations

import os
from pathlib import Path

from fit3d.data.records import ImageRecord, InputProblem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


#: The bytes a complete file of a format ends with (JPEG: the end-of-image marker; PNG: the
#: IEND chunk), and how far from the end :func:`inspect_image` looks for them.
END_MARKERS = {"JPEG": (b"\xff\xd9", 4096), "PNG": (b"IEND", 64)}


#: EXIF ``Orientation`` values (tag 0x0112) that turn the stored image a quarter turn: the image
#: as shown is ``height x width`` of the stored pixels.
QUARTER_TURNS = (5, 6, 7, 8)


def inspect_image(path: Path) -> tuple[tuple[int, int], str | None, bool]:
    """``((width, height), format, truncated)`` of an image file, in one open: the size and format
    from the header (Pillow, no decoding), as the image is shown (its EXIF orientation applied,
    as OpenCV's ``imread``, and so most training code, reads it: fit3d's pixels are that frame),
    and whether the file is cut short (an interrupted copy
    or download whose header still reads). A file whose tail holds its format's end marker
    (:data:`END_MARKERS`) is complete; one without it (also a complete file followed by other
    data, as phones' motion photos are) is decoded to be sure, so only such files pay for a
    decode. Formats without a marker here are never reported truncated.

    Raises:
        OSError: unreadable, not an image, or larger than Pillow opens (its decompression-bomb
            limit, twice ``PIL.Image.MAX_IMAGE_PIXELS``: training code cannot load it either).
    """
    from PIL import Image

    with open(path, "rb") as f:
        try:
            im = Image.open(f)
        except Image.DecompressionBombError as e:  # not an OSError
            raise OSError(f"too large to open: {e}") from e
        with im:
            size, fmt = im.size, im.format
            if im.getexif().get(0x0112) in QUARTER_TURNS:
                size = size[::-1]
        if fmt not in END_MARKERS:
            return size, fmt, False
        marker, tail = END_MARKERS[fmt]
        f.seek(0, 2)
        f.seek(max(0, f.tell() - tail))
        if marker in f.read():
            return size, fmt, False
        f.seek(0)
        try:
            with Image.open(f) as im:
                im.load()
        except (OSError, SyntaxError, ValueError):  # Pillow: "image file is truncated", broken data streams
            return size, fmt, True
        return size, fmt, False


def image_key(path: Path, images_dir: Path) -> str:
    """``path`` relative to ``images_dir`` (POSIX), or its file name when it lies elsewhere
    (both made absolute and ``..`` resolved first, textually: ``imgs/../other/x.jpg`` and, from
    ``images_dir`` ``.``, ``../x.jpg`` lie elsewhere, so no output key leaves the output folder)."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(images_dir)).as_posix()
    except ValueError:
        return path.name


def open_image(path: Path, images_dir: Path, json_size, problems: list[InputProblem]) -> ImageRecord | None:
    """The record of an image file (size from its header), or None with a problem."""
    if not path.is_file():
        problems.append(InputProblem(str(path), "a folder, not an image file" if path.is_dir() else "image file not found"))
        return None
    try:
        size, fmt, truncated = inspect_image(path)
    except (OSError, ValueError) as e:
        problems.append(InputProblem(str(path), f"unreadable image: {e}"))
        return None
    if truncated:  # the annotations still fit (only the size is needed), but training code cannot decode it
        problems.append(InputProblem(str(path), f"the {fmt} file looks cut short (no end marker): its people are "
                                                "fitted, but training code may fail to decode the image", "warning"))
    if json_size is not None and tuple(json_size) != tuple(size):
        problems.append(InputProblem(str(path), f"the annotations say {json_size[0]}x{json_size[1]}, the image is "
                                                f"{size[0]}x{size[1]}: the image's size is used", "warning"))
    return ImageRecord(image_key(path, images_dir), path, size)


def find_images(images_dir: Path, stem: str) -> list[Path]:
    """The images in ``images_dir`` whose name without suffix is ``stem``, in the order of
    :data:`IMAGE_SUFFIXES` (lower-case suffix first): the first is the one used."""
    found = []
    for suffix in IMAGE_SUFFIXES:
        for cand in (images_dir / (stem + suffix), images_dir / (stem + suffix.upper())):
            if cand.is_file() and not any(cand.samefile(f) for f in found):  # (a.jpg is a.JPG on some disks)
                found.append(cand)
    return found


def image_files(images_dir: Path) -> list[Path]:
    """Every image file (by :data:`IMAGE_SUFFIXES`, any case) under ``images_dir``."""
    return sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
