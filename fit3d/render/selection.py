"""Which images of a fit folder to render: the worst fits, a random sample, or a list.

A dataset-scale run holds far more images than anyone looks at; reviewing pseudo-ground
truth means looking at its failures (the worst reprojection errors, as ``fit3d report``
orders them) and at an unbiased sample of the rest. These return the names of fit files
(:func:`fit3d.data.writers.fit_name`: the image's path relative to the images folder, for the files
a run writes), for :func:`fit3d.render.fits.render_dir`'s ``names``.
"""

from __future__ import annotations

import numbers
import os
import random
from pathlib import Path

from fit3d.data.writers import fit_name, require_fit_files
from fit3d.render.report import collect_people


def _check_count(count) -> None:
    """Raise ValueError unless ``count`` is a whole number >= 1 (not a bool)."""
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
        raise ValueError(f"count must be a whole number >= 1, not {count!r}")


def worst_images(fits_dir: str | Path, count: int) -> list[str]:
    """``count`` images, those of the worst fitted people (``fit3d report``'s order: highest mean
    reprojection error in pixels first; people not fitted and unreadable files are not counted),
    each image once, worst first (an image of several bad fits counts once, so the list reaches
    further down); fewer when the folder has fewer images with a fitted person.

    Raises:
        ValueError: ``count`` is not a whole number >= 1, or ``fits_dir`` holds no per-image ``.npz``.
    """
    _check_count(count)
    out: dict[str, None] = {}  # (ordered, each image once)
    for row in collect_people(fits_dir):
        if row["status"] != "fitted":
            break  # (fitted people come first)
        out.setdefault(row["file"], None)
        if len(out) == count:
            break
    return list(out)


def sample_images(fits_dir: str | Path, count: int, seed: int = 0) -> list[str]:
    """``count`` images drawn at random without replacement among the folder's fits (the same
    ones for the same folder and ``seed``), in the folder's order; all of them when it holds
    fewer. Names come from the fit files' paths (``<image path>.npz``): nothing is opened.

    Raises:
        ValueError: ``count`` is not a whole number >= 1, or ``fits_dir`` holds no per-image ``.npz``.
    """
    _check_count(count)
    files = require_fit_files(fits_dir)
    chosen = sorted(random.Random(seed).sample(range(len(files)), min(count, len(files))))
    return [fit_name(fits_dir, files[i]) for i in chosen]


def listed_images(path: str | Path, images_dir: str | Path | None = None) -> list[str]:
    """Image paths, relative to the images folder, one per line of the text file ``path``
    (blank lines and lines starting with ``#`` skipped; surrounding spaces stripped), each once,
    in the file's order. An absolute path inside ``images_dir`` is taken relative to it.

    Raises:
        OSError: the file cannot be read.
        ValueError: it names no image, or is not UTF-8 text.
    """
    names: dict[str, None] = {}
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:  # (e.g. an image given in the list's place: the codec's words alone)
        raise ValueError(f"{path} is not a text file listing image paths (one per line, relative to the "
                         f"images folder): {e.reason} at byte {e.start}") from e
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name = Path(line)
            if images_dir is not None and name.is_absolute():
                try:
                    # (absolute, links not followed: as the fits name their images, fit3d.data.images.image_key)
                    name = Path(os.path.abspath(name)).relative_to(os.path.abspath(images_dir))
                except ValueError:  # (outside the folder: named as given, and said to have no fit)
                    pass
            names.setdefault(name.as_posix(), None)
    if not names:
        raise ValueError(f"{path} names no image (one relative image path per line)")
    return list(names)
