"""Image files: their size and format from the header (:func:`inspect_image`), the output key of
each (:func:`image_key`: its path relative to the image folder), and an :class:`~fit3d.data.records.ImageRecord` per
readable file (:func:`open_image`), every unreadable one an :class:`~fit3d.data.records.InputProblem`."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import NamedTuple

from fit3d.data.records import ImageRecord, InputProblem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


#: The bytes a complete file of a format ends with (JPEG: the end-of-image marker; PNG: the
#: IEND chunk), and how far from the end :func:`inspect_image` looks for them.
END_MARKERS = {"JPEG": (b"\xff\xd9", 4096), "PNG": (b"IEND", 64)}


def declared_length(fmt: str | None, head: bytes) -> int | None:
    """The file length (bytes) that an image's first 64 bytes ``head`` declare, for an
    uncompressed BMP (the pixel data's offset plus its rows, each padded to 4 bytes); None for
    other formats and BMP variants (RLE-compressed, OS/2 headers), whose length the header does
    not fix. (Pillow reads a whole WebP to open it: a cut-short one does not open at all.)"""
    if fmt == "BMP" and len(head) >= 34 and int.from_bytes(head[14:18], "little") >= 40:
        offset = int.from_bytes(head[10:14], "little")
        width, height = (abs(int.from_bytes(head[i:i + 4], "little", signed=True)) for i in (18, 22))
        bits, compression = int.from_bytes(head[28:30], "little"), int.from_bytes(head[30:34], "little")
        if compression in (0, 3):  # BI_RGB, BI_BITFIELDS: rows of raw pixels
            return offset + (bits * width + 31) // 32 * 4 * height
    return None


#: EXIF ``Orientation`` values (tag 0x0112) that turn the stored image a quarter turn: the image
#: as shown is ``height x width`` of the stored pixels.
QUARTER_TURNS = (5, 6, 7, 8)
#: What each EXIF ``Orientation`` other than 1 does to the stored pixels to show them.
ORIENTATIONS = {2: "mirrored", 3: "turned 180 degrees", 4: "flipped upside down", 5: "mirrored and turned a quarter",
                6: "turned a quarter clockwise", 7: "mirrored and turned a quarter", 8: "turned a quarter anticlockwise"}


class ImageInfo(NamedTuple):
    """What :func:`inspect_image` reads of an image file."""

    size: tuple[int, int]  #: (width, height) as shown, pixels
    format: str | None  #: Pillow's format name (``JPEG``, ``PNG``...)
    truncated: bool  #: the file is cut short
    orientation: int  #: EXIF ``Orientation`` (1 when absent: stored as shown)


#: The transposition that shows an image stored with each EXIF ``Orientation`` (as Pillow's
#: ``ImageOps.exif_transpose`` applies it), by ``PIL.Image.Transpose`` member name.
SHOW_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
                  7: "TRANSVERSE", 8: "ROTATE_90"}


def shown(im):
    """A Pillow image as shown: turned by its EXIF orientation as :func:`inspect_image` reads it
    (a PNG's only from an ``eXIf`` chunk before the image data), so that renders use the frame the
    fits were made in."""
    from PIL import Image

    o = own_orientation(im)
    return im if o == 1 else im.transpose(getattr(Image.Transpose, SHOW_TRANSPOSE[o]))


def own_orientation(im) -> int:
    """The EXIF orientation fit3d must apply to an open Pillow image itself: :func:`_orientation`,
    except 1 for a TIFF where Pillow opens it at its size as shown and turns it as it decodes it
    (Pillow 13 does, :func:`pillow_turns_tiffs`: turning it again showed it turned twice)."""
    return 1 if im.format == "TIFF" and pillow_turns_tiffs() else _orientation(im)


@functools.lru_cache(maxsize=1)
def pillow_turns_tiffs() -> bool:
    """Whether the installed Pillow applies a TIFF's orientation itself (probed once, on a 2 x 1 TIFF
    of orientation 6 in memory: opened 1 x 2 when it does), whatever its version."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (2, 1)).save(buf, format="TIFF", tiffinfo={0x0112: 6})
    buf.seek(0)
    with Image.open(buf) as im:
        return im.size == (1, 2)


def _orientation(im) -> int:
    """The EXIF ``Orientation`` of an open Pillow image (1 when absent or invalid), read without
    decoding: a PNG's ``eXIf`` chunk only when it precedes the image data (Pillow's ``getexif``
    decodes a whole PNG to look after it)."""
    from PIL import Image

    if im.format == "PNG":
        exif = Image.Exif()
        if im.info.get("exif"):
            exif.load(im.info["exif"])
    else:
        exif = im.getexif()
    value = exif.get(0x0112, 1)
    return value if value in ORIENTATIONS else 1


def inspect_image(path: Path) -> ImageInfo:
    """The :class:`ImageInfo` of an image file, in one open: the size and format
    from the header (Pillow, no decoding), as the image is shown (its EXIF orientation applied,
    as OpenCV's ``imread``, and so most training code, reads it: fit3d's pixels are that frame),
    the orientation, and whether the file is cut short (an interrupted copy
    or download whose header still reads). A file whose tail holds its format's end marker
    (:data:`END_MARKERS`) is complete; one without it (also a complete file followed by other
    data, as phones' motion photos are) is decoded to be sure, so only such files pay for a
    decode. An uncompressed BMP is cut short when it is shorter than its header declares
    (:func:`declared_length`); other files are never reported truncated (a cut-short WebP does not
    open: an OSError).

    Pillow's DecompressionBombWarning (an image over ``PIL.Image.MAX_IMAGE_PIXELS``, ~89 million
    pixels, that it still opens) is not passed on: such images are read as any other.

    Raises:
        OSError: unreadable, not an image, or larger than Pillow opens (its decompression-bomb
            limit, twice ``PIL.Image.MAX_IMAGE_PIXELS``: training code cannot load it either).
    """
    from PIL import Image

    with open(path, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(f)
        except Image.DecompressionBombError as e:  # not an OSError
            raise OSError(f"too large to open: {e}") from e
        except Image.UnidentifiedImageError as e:  # (its message names the Python file object)
            raise OSError("not an image file Pillow can read (empty, another format or damaged)") from e
        with im:
            size, fmt, orientation = im.size, im.format, _orientation(im)
            if own_orientation(im) in QUARTER_TURNS:  # (a TIFF's size is already as shown)
                size = size[::-1]
        if fmt not in END_MARKERS:  # a BMP is cut short when it is shorter than its header says
            f.seek(0)
            length = declared_length(fmt, f.read(64))
            return ImageInfo(size, fmt, length is not None and f.seek(0, 2) < length, orientation)
        marker, tail = END_MARKERS[fmt]
        f.seek(0, 2)
        f.seek(max(0, f.tell() - tail))
        if marker in f.read():
            return ImageInfo(size, fmt, False, orientation)
        f.seek(0)
        try:
            with Image.open(f) as im:
                im.load()
        except (OSError, SyntaxError, ValueError):  # Pillow: "image file is truncated", broken data streams
            return ImageInfo(size, fmt, True, orientation)
        return ImageInfo(size, fmt, False, orientation)


def in_folder(path: Path, images_dir: Path) -> bool:
    """Whether ``path`` lies in ``images_dir`` (both made absolute and ``..`` resolved first,
    textually: ``imgs/../other/x.jpg`` and, from ``images_dir`` ``.``, ``../x.jpg`` lie elsewhere)."""
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(images_dir))


def image_key(path: Path, images_dir: Path) -> str:
    """``path`` relative to ``images_dir`` (POSIX), or its file name when it lies elsewhere
    (:func:`in_folder`), so that no output key leaves the output folder."""
    if not in_folder(path, images_dir):
        return path.name
    return Path(os.path.abspath(path)).relative_to(os.path.abspath(images_dir)).as_posix()


#: The longest file name (bytes) most file systems allow, and the most fit3d's per-image outputs
#: add to an image's name (``<name>.incomplete.json``, :func:`fit3d.data.writers.incomplete_path`;
#: ``<name>_<annotation id>[_<row>].obj`` of ``fit3d render --save-mesh`` adds up to 29 (ids of 19 digits,
#: a row of up to 4 where an id is used twice in the image).
MAX_NAME_BYTES, OUTPUT_SUFFIX_BYTES = 255, 29


def stored_size(orientation: int, shown: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` of the stored pixels of an image shown ``shown`` with EXIF ``orientation``."""
    return tuple(shown[::-1]) if orientation in QUARTER_TURNS else tuple(shown)


def orientation_warning(orientation: int, shown: tuple[int, int], json_size) -> str:
    """Why an image stored turned or mirrored (EXIF ``orientation`` other than 1) may hold
    keypoints in another frame than fit3d's (the image as shown, ``shown`` (width, height)): ``""``
    when the annotations' own size ``json_size`` is the size as shown and differs from the stored
    one (a quarter turn), i.e. the annotator saw the image as shown; else one line for the user
    (labelling tools differ on the frame they save). :func:`open_image` asks only when the
    annotations give a size (OpenPose's keypoints, without one, come from OpenCV's ``imread``,
    which shows the image as fit3d reads it)."""
    how = ORIENTATIONS[orientation]
    stored = stored_size(orientation, shown)
    if json_size is not None and tuple(json_size) == tuple(shown) != stored:
        return ""
    if json_size is not None and tuple(json_size) == stored != tuple(shown):
        return (f"EXIF orientation {orientation}: the file's pixels are stored {how} from how it is shown, and the "
                f"annotations give the stored size {stored[0]}x{stored[1]}: they are probably in the stored pixels' "
                f"frame, but fit3d reads keypoints in the frame as shown ({shown[0]}x{shown[1]}, as OpenCV's imread "
                "and training code read the image): fits would be turned; rotate the keypoints or strip the tag")
    return (f"EXIF orientation {orientation}: the file's pixels are stored {how} from how it is shown; fit3d reads its "
            f"keypoints in the frame as shown ({shown[0]}x{shown[1]}, as OpenCV's imread and training code read the "
            "image): if they were labelled on the stored pixels, the fits are turned")


def _parent_hint(path: Path, images_dir: Path) -> str:
    """For an image not found whose name starts with the images folder's own name (a SPIN
    ``imgname`` of ``val2017/a.jpg`` under ``--images .../val2017``) and that the folder's parent
    holds: a hint to give the parent; else ""."""
    try:
        rel = path.relative_to(images_dir)
    except ValueError:
        return ""
    if len(rel.parts) > 1 and rel.parts[0] == images_dir.name and (images_dir.parent / rel).is_file():
        return (f" (its name starts with the images folder's own name, {images_dir.name}/: give the folder above, "
                f"{images_dir.parent}, as the images folder)")
    return ""


def none_found_problem(missing: list[Path], opened: int, images_dir: str | Path, source: str,
                       search_limit: int = 100_000) -> InputProblem | None:
    """One warning for a reader none of whose images was found (``opened`` 0, ``missing`` the
    paths looked for): the input is probably for another folder. When the first missing image
    lies deeper below ``images_dir`` (its path as the input names it, under a subfolder), it says
    which folder to give instead (a walk of at most ``search_limit`` directory entries). None
    otherwise.

    Args:
        missing: the image paths not found. opened: images found and opened.
        images_dir: the ``--images`` folder. source: the option that named the images (``--annotations``).
    """
    if opened or not missing:
        return None
    images_dir = Path(images_dir)
    said = (f"none of the {len(missing)} images that {source} names is in {images_dir}: is {source} for another "
            "folder, or --images another folder?")
    try:
        rel = missing[0].relative_to(images_dir).parts  # the name as the input gives it (with its subfolders)
    except ValueError:
        rel = ()
    if rel and (root := _folder_holding(images_dir, rel, search_limit)) is not None:
        said += f" ({Path(*rel)} is under {root}: give --images {root})"
    return InputProblem(str(images_dir), said, "warning")


def _folder_holding(images_dir: Path, rel: tuple[str, ...], limit: int) -> Path | None:
    """The folder below ``images_dir`` under which the relative path ``rel`` is a file (names
    compared literally), or None; stops after ``limit`` directory entries."""
    seen, k = 0, len(rel) - 1  # k: the subfolders the input's name gives
    for folder, dirs, files in os.walk(images_dir):
        seen += len(dirs) + len(files)
        parts = Path(folder).parts
        if rel[-1] in files and (k == 0 or parts[-k:] == rel[:-1]):
            root = Path(*parts[:len(parts) - k])
            if root != images_dir:
                return root
        if seen > limit:
            return None
    return None


def open_image(path: Path, images_dir: Path, json_size, problems: list[InputProblem]) -> ImageRecord | None:
    """The record of an image file (size from its header), or None with a problem; a warning for an
    image stored turned or mirrored whose annotations may be in the stored frame
    (:func:`orientation_warning`), for one cut short, and for one whose size is not the
    annotations' (``json_size``)."""
    key = image_key(path, images_dir)
    if not path.is_file():
        problems.append(InputProblem(str(path), "a folder, not an image file" if path.is_dir() else
                                     "image file not found" + _parent_hint(path, Path(images_dir)), image=key))
        return None
    if len(os.fsencode(path.name)) > MAX_NAME_BYTES - OUTPUT_SUFFIX_BYTES:  # its outputs could never be written
        problems.append(InputProblem(str(path), f"the file name is {len(os.fsencode(path.name))} bytes: fit3d's "
                                                f"outputs add up to {OUTPUT_SUFFIX_BYTES} to it, past the "
                                                f"{MAX_NAME_BYTES} bytes file systems allow: rename the image",
                                     image=key))
        return None
    if path.name.startswith(".") or not path.suffix:  # (found by a review: fitted, then never listed again)
        problems.append(InputProblem(str(path), "fit3d names an image's fits after it (a.jpg.npz) and finds them by "
                                                "the image's extension: a name without one, or starting with '.', "
                                                "would be fitted and then never read back: rename the image",
                                     image=key))
        return None
    try:
        size, fmt, truncated, orientation = inspect_image(path)
    except (OSError, ValueError) as e:
        problems.append(InputProblem(str(path), f"unreadable image: {e}", image=key))
        return None
    turned = orientation_warning(orientation, size, json_size) if orientation != 1 and json_size is not None else ""
    if turned:
        problems.append(InputProblem(str(path), turned, "warning"))
    if truncated:  # the annotations still fit (only the size is needed), but training code cannot decode it
        problems.append(InputProblem(str(path), f"the {fmt} file looks cut short (no end marker): its people are "
                                                "fitted, but training code may fail to decode the image", "warning"))
    # (the stored size of an image stored turned: the orientation warning above says it)
    if json_size is not None and tuple(json_size) != tuple(size) and not (
            turned and tuple(json_size) == stored_size(orientation, size)):
        problems.append(InputProblem(str(path), f"the annotations say {json_size[0]}x{json_size[1]}, the image is "
                                                f"{size[0]}x{size[1]}: the image's size is used", "warning"))
    return ImageRecord(key, path, size)


def find_images(images_dir: Path, stem: str) -> list[Path]:
    """The images in ``images_dir`` whose name without suffix is ``stem``, in the order of
    :data:`IMAGE_SUFFIXES` (lower-case suffix first): the first is the one used."""
    found = []
    for suffix in IMAGE_SUFFIXES:
        for cand in (images_dir / (stem + suffix), images_dir / (stem + suffix.upper())):
            if cand.is_file() and not any(cand.samefile(f) for f in found):  # (a.jpg is a.JPG on some disks)
                found.append(cand)
    return found


def files_under(folder: Path, suffixes) -> list[Path]:
    """Every file under ``folder`` whose suffix (any case) is one of ``suffixes`` (lower-case,
    with the dot), sorted, following links to folders outside ``folder``: frames are often linked
    in from another disk (``frames/clip1 -> /data/clip1``), and ``Path.rglob`` does not follow
    them. A link to a folder inside ``folder`` (an alias, ``all -> train``, or a loop) is not
    followed: its files are listed under their own names. A real folder outside reached by two
    links is listed once, under the first in sorted order. Paths keep the names they are reached
    by, under ``folder``."""
    inside = (os.path.realpath(folder), os.path.abspath(folder))

    def alias(top: str) -> bool:  # a link to a folder inside (itself, or through another link)
        if top == os.fspath(folder) or not os.path.islink(top):
            return False
        target = os.path.abspath(os.path.join(os.path.dirname(top), os.readlink(top)))
        return any(Path(t).is_relative_to(r) for t in (target, os.path.realpath(top)) for r in inside)

    found, seen = [], set()
    for top, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen or alias(top):
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()  # (so that which name a twice-linked folder keeps does not depend on the disk)
        found += [Path(top) / n for n in names if Path(n).suffix.lower() in suffixes]
    return sorted(p for p in found if p.is_file())


def image_files(images_dir: Path) -> list[Path]:
    """Every image file (by :data:`IMAGE_SUFFIXES`, any case) under ``images_dir``, linked
    folders included (:func:`files_under`)."""
    return files_under(images_dir, IMAGE_SUFFIXES)
