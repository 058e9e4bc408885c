"""Readers from annotation files to :class:`Person` records.

Input formats:

* COCO keypoint JSON (``person_keypoints_*.json``, and any dataset in COCO format:
  CrowdPose, MPII, Halpe, COCO-WholeBody, OCHuman): the keypoint layout is read from
  the annotation's category (its ``keypoints`` names, spelled as the dataset spells
  them, see :func:`fit3d.data.conventions.convention_from_names`); COCO-WholeBody's
  ``foot_kpts`` are appended as the six foot points.
* OpenPose JSON: one ``<image stem>_keypoints.json`` per image with a ``people`` list;
  ``pose_keypoints_2d`` holds 25 (BODY_25) or 18 (COCO-18) ``x, y, c`` triples.

Every input is accounted for. What cannot be used becomes an :class:`InputProblem`
(``severity="error"``: an image or annotation that could not be read; ``"warning"``:
used anyway, or left out by design, e.g. crowd regions) and the rest is read:

* image sizes come from the image file's header (no decoding); a JSON size that
  disagrees is a warning, a missing one is taken from the file;
* boxes that are missing, non-finite, empty or outside the image are rebuilt from the
  labelled keypoints (``Person.bbox_note`` says why);
* labelled keypoints with non-finite or far-off coordinates become unlabelled (one warning
  counts them; ``Person.keypoints_ignored``);
* keypoint values in a form the format does not define are read as given, with one warning
  counting them (``Person.keypoints_unusual``): numbers written as strings or booleans, and
  COCO visibility flags other than 0, 1, 2 (a flag above 0 is labelled, so detector scores
  such as 0.05 count as labelled; a negative flag is unlabelled);
* an image entry's ``cam_param`` (``focal``, ``princpt``) becomes its people's camera
  (:mod:`fit3d.data.intrinsics`); an unreadable one leaves the image's people unfitted;
* an image id given to several files (entries of two merged files whose ids collide) is an
  error: its annotations cannot be placed and are not fitted (never put on the wrong image);
* annotations that share an id are all kept, flagged ``duplicate_id`` (evaluation
  and exports reject them, since they cannot tell them apart);
* images are keyed by their path relative to the image folder (``sub/a.jpg``), so
  subfolders and extensions never collide;
* in a file whose categories include people (``name`` or ``supercategory`` "person",
  :data:`PERSON_CATEGORIES`), annotations of other keypoint categories (animals, objects)
  are left out with one warning per category; a file with no person category is read as
  people, with a warning naming its categories; annotations without keypoints of a category
  that is neither a person nor has keypoints (an instances file's cars) likewise.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fit3d.data.conventions import (COCO17, COCO23, FOOT6, OPENPOSE_BODY25, OPENPOSE_COCO18, KeypointConvention,
                                    convention_from_names)
from fit3d.data.intrinsics import coco_camera
from fit3d.data.keypoints import sanitize_keypoints

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

#: A COCO category whose ``name`` or ``supercategory`` (lower-cased) is one of these holds people
#: (COCO, CrowdPose, MPII, Halpe, COCO-WholeBody and OCHuman all say "person").
PERSON_CATEGORIES = frozenset({"person", "persons", "people", "human", "humans", "pedestrian"})


def is_person_category(category: dict) -> bool:
    """Whether a COCO ``categories`` entry names people (:data:`PERSON_CATEGORIES`)."""
    return any(str(category.get(k, "")).strip().lower() in PERSON_CATEGORIES for k in ("name", "supercategory"))


@dataclass
class Person:
    """One annotated person.

    Attributes:
        image_key: the image's path relative to the image folder (``sub/a.jpg``), which
            names the output file.
        image_path: path of the image file.
        image_size: ``(width, height)`` in pixels (from the image file).
        annot_id: annotation id (COCO ``id``; OpenPose: index in ``people``; SPIN: row).
        bbox: ``(x, y, w, h)`` in pixels; from the annotation, or the box of the
            labelled keypoints when the format has none or the annotation's is unusable.
        keypoints_2d: ``(K, 3)`` float array ``x, y, confidence`` in pixels, in
            ``convention``. COCO visibility flags become confidences
            (0 unlabelled, 1 labelled, 2 visible -> 0, 1, 1).
        convention: the keypoint convention of ``keypoints_2d``.
        person_index: position of the person within its image.
        bbox_note: why the box was rebuilt from the keypoints ("" when it was not).
        duplicate_id: another annotation of the file has the same id.
        camera: the input's intrinsics ``((fx, fy), (cx, cy))`` pixels (COCO ``cam_param``,
            SPIN ``cam_int`` / ``focal_length``: :mod:`fit3d.data.intrinsics`), None when it
            has none (the fit then uses the image diagonal and centre).
        keypoints_ignored: labelled keypoints of the input whose coordinates were unusable
            (non-finite, or beyond :data:`~fit3d.data.keypoints.MAX_KEYPOINT_PX`): the readers
            store them as unlabelled ``(0, 0, 0)`` (:func:`~fit3d.data.keypoints.sanitize_keypoints`),
            so fits and exports never see them, and count them here (one warning per input:
            :func:`keypoints_ignored_warning`).
        keypoints_unusual: values of the input's keypoints in a form its format does not define,
            read as given: numbers written as strings (``"12.5"``) or booleans, and COCO
            visibility flags other than 0, 1, 2 (one warning per input:
            :func:`unusual_keypoints_warning`).
    """

    image_key: str
    image_path: Path
    image_size: tuple[int, int]
    annot_id: int
    bbox: np.ndarray
    keypoints_2d: np.ndarray
    convention: KeypointConvention
    person_index: int = 0
    bbox_note: str = ""
    duplicate_id: bool = False
    camera: tuple[tuple[float, float], tuple[float, float]] | None = None
    keypoints_ignored: int = 0
    keypoints_unusual: int = 0

    @property
    def num_visible(self) -> int:
        """Number of keypoints with finite coordinates and confidence > 0."""
        kp = self.keypoints_2d
        ok = np.isfinite(kp).all(axis=1) & (kp[:, 2] > 0)
        return int(ok.sum())


@dataclass
class InputProblem:
    """A piece of input that could not be used (``severity="error"``) or was used with a
    caveat or left out by design (``"warning"``), and why."""

    source: str
    reason: str
    severity: str = "error"


@dataclass
class ImageRecord:
    """All people annotated in one image (possibly none)."""

    image_key: str
    image_path: Path
    image_size: tuple[int, int]
    people: list[Person] = field(default_factory=list)
    #: Sources of this image's annotations that were left out because they could not be read
    #: (each is also an :class:`InputProblem`): its output lacks those people, so a later run
    #: fits the image again (a fixed input then brings them in).
    dropped: list[str] = field(default_factory=list)


#: How much a box built from keypoints grows on every side, as a share of its size (so the box is
#: 1.2 x the keypoints' extent, as SPIN's boxes of keypoint-only datasets): boxes rebuilt for an
#: unusable annotation box and OpenPose people's boxes (:func:`fit3d.export.spin.expanded_boxes`
#: recognises them by it).
KEYPOINT_BOX_PAD = 0.1


def keypoint_bbox(keypoints_2d: np.ndarray, pad: float = 0.0) -> np.ndarray:
    """Box ``(x, y, w, h)`` around the keypoints with confidence > 0 (zeros if none),
    grown by ``pad`` times its size on every side."""
    kp = keypoints_2d[np.isfinite(keypoints_2d).all(axis=1) & (keypoints_2d[:, 2] > 0)]
    if len(kp) == 0:
        return np.zeros(4, dtype=np.float32)
    lo, hi = kp[:, :2].min(0), kp[:, :2].max(0)
    size = hi - lo
    lo, size = lo - pad * size, size * (1 + 2 * pad)
    return np.array([lo[0], lo[1], size[0], size[1]], dtype=np.float32)


#: A box more than this many times the image's larger side is not used (:func:`checked_bbox`).
MAX_BOX_TO_IMAGE = 4.0


def checked_bbox(bbox, keypoints_2d: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The annotation's box when it is usable, else the labelled keypoints' box (10 % padding).

    Not usable: missing, malformed, non-finite, empty, outside the image, more than
    :data:`MAX_BOX_TO_IMAGE` times the image's larger side (the regressor's crop and the
    validity test, 5 % of the box diagonal, would mean nothing), or holding none of the
    labelled keypoints (the box grown by half its size on each side: a box of another person).

    Returns:
        ``(bbox (4,), note)``: ``note`` is "" for the annotation's own box, else why it was rebuilt.
    """
    why = ""
    try:
        box = np.asarray(bbox, dtype=np.float64).reshape(4) if bbox is not None else None
    except (TypeError, ValueError):
        box, why = None, "malformed box"
    if box is None:
        why = why or "no box"
    elif not np.isfinite(box).all():
        why = "non-finite box"
    elif box[2] <= 1.0 or box[3] <= 1.0:
        why = "empty box"
    else:
        w, h = image_size
        labelled = keypoints_2d[(keypoints_2d[:, 2] > 0) & np.isfinite(keypoints_2d[:, :2]).all(-1), :2]
        lo, hi = box[:2] - 0.5 * box[2:], box[:2] + 1.5 * box[2:]
        if box[0] >= w or box[1] >= h or box[0] + box[2] <= 0 or box[1] + box[3] <= 0:
            why = "box outside the image"
        elif max(box[2], box[3]) > MAX_BOX_TO_IMAGE * max(w, h):
            why = f"box over {MAX_BOX_TO_IMAGE:g}x the image's size: {max(box[2], box[3]):.0f} px across"
        elif len(labelled) and not ((labelled >= lo) & (labelled <= hi)).all(-1).any():
            why = "box holds none of the labelled keypoints"
    if not why:
        return box.astype(np.float32), ""
    return keypoint_bbox(keypoints_2d, pad=KEYPOINT_BOX_PAD), f"box rebuilt from the keypoints ({why})"


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


def hashable(value):
    """A JSON value usable as a dict key (lists and objects by their JSON text)."""
    try:
        hash(value)
        return value
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)


def coco_image_key(file_name: str) -> str:
    """The output key (path relative to the image folder) of a COCO ``file_name``, as
    :func:`read_coco` computes it for an image inside the folder (``./a.jpg`` -> ``a.jpg``)."""
    root = Path("/__images__")
    return _key(root / file_name, root)


def _key(path: Path, images_dir: Path) -> str:
    """``path`` relative to ``images_dir`` (POSIX), or its file name when it lies elsewhere
    (both made absolute and ``..`` resolved first, textually: ``imgs/../other/x.jpg`` and, from
    ``images_dir`` ``.``, ``../x.jpg`` lie elsewhere, so no output key leaves the output folder)."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(images_dir)).as_posix()
    except ValueError:
        return path.name


def _open_image(path: Path, images_dir: Path, json_size, problems: list[InputProblem]) -> ImageRecord | None:
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
    return ImageRecord(_key(path, images_dir), path, size)


def unusual_values(values) -> int:
    """How many entries of a keypoint list are numbers in a form JSON keypoint formats do not
    use: strings (``"12.5"``) and booleans (NumPy reads both as numbers). 0 for a non-list."""
    return sum(isinstance(v, (str, bool)) for v in values) if isinstance(values, list) else 0


def parse_keypoints(values, n: int) -> np.ndarray:
    """``(n, 3)`` float32 keypoints ``x, y, v`` from a flat list of ``3 n`` numbers (None -> NaN;
    numbers written as strings or booleans are read as numbers: :func:`unusual_values` counts them).

    Raises:
        ValueError: not ``3 n`` numbers.
    """
    flat = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    if flat.ndim != 1:
        raise ValueError(f"expected a flat list of {3 * n} keypoint values ({n} keypoints: x, y, v each), got a "
                         f"nested list of shape {flat.shape}")
    if flat.size != 3 * n:
        raise ValueError(f"expected {3 * n} keypoint values ({n} keypoints), got {flat.size}")
    with np.errstate(over="ignore"):  # beyond float32: inf, set aside as unusable by sanitize_keypoints
        return flat.reshape(n, 3).astype(np.float32)


def category_conventions(data: dict, problems: list[InputProblem], source: str) -> dict:
    """``{category id: KeypointConvention}`` of a COCO-format file, from the categories'
    ``keypoints`` names (a warning in ``problems`` when none lists names: COCO-17 is assumed)."""
    out = {}
    cats = data.get("categories")
    for c in cats if isinstance(cats, list) else []:
        if isinstance(c, dict) and isinstance(c.get("keypoints"), list) and c["keypoints"]:
            conv = convention_from_names(c["keypoints"], name=str(c.get("name", "file")))
            out[hashable(c.get("id"))] = conv
            twice = [n for n, k in Counter(conv.names).items() if k > 1]
            if twice:  # e.g. "head" and "headtop": one model point, fed by the later of them
                raw = [str(r) for r, n in zip(c["keypoints"], conv.names) if n in twice]
                problems.append(InputProblem(f"{source} (category {c.get('id')})", f"keypoint names {', '.join(raw)} "
                                             f"all mean {', '.join(twice)}: only the last of them is used", "warning"))
    if not out:
        problems.append(InputProblem(source, "no category lists keypoint names: COCO-17 is assumed", "warning"))
    return out


def _left_out_categories(listed: list[dict], cats: dict, problems: list[InputProblem], source: str) -> dict:
    """``{category id: [name, 0, why]}`` of the categories whose annotations are left out (the
    count is filled by :func:`load_coco`): keypoint categories that are not people
    (:func:`is_person_category`) in a file that also has a person category, and categories that
    are neither people nor have keypoints (their annotations are left out when they have no
    keypoints: an instances file's cars). When no keypoint category names people, no keypoint
    category is left out (a custom name such as "athlete" is still a person) and each gets a
    warning."""
    keyed = {hashable(c.get("id")): c for c in listed if hashable(c.get("id")) in cats}
    others = {cid: c for cid, c in keyed.items() if not is_person_category(c)}
    out = {hashable(c.get("id")): [str(c.get("name")), 0, "not a person, no keypoints"] for c in listed
           if hashable(c.get("id")) not in cats and not is_person_category(c)}
    if len(others) == len(keyed):
        for cid, c in others.items():
            problems.append(InputProblem(f"{source} (category {cid})", f"category {str(c.get('name'))!r} is not named "
                                         "'person': its annotations are fitted as people", "warning"))
        return out
    return {**out, **{cid: [str(c.get("name")), 0, "not a person category"] for cid, c in others.items()}}


@dataclass
class CocoFile:
    """A COCO keypoint file checked at the JSON level (no image opened): what
    :func:`read_coco` fits and :mod:`fit3d.evaluation.evaluate` scores against.

    Attributes:
        path: the JSON file.
        images: image id -> its ``images`` entry (a dict with a string ``file_name``).
        annotations: image id -> ``[(index in the file, annotation)]``: the keypoint
            annotations of known images, crowd regions left out, in file order.
        ids: how often each annotation id occurs in the file.
        categories: category id -> :class:`KeypointConvention` (see :func:`category_conventions`).
    Ids are JSON values made hashable (lists and objects by their JSON text).
    """

    path: Path
    images: dict
    annotations: dict
    ids: Counter
    categories: dict


def load_coco(annotations: str | Path) -> tuple[CocoFile, list[InputProblem]]:
    """Read and check a COCO-format keypoint JSON; every entry that cannot be used is a problem.

    Returns:
        ``(coco, problems)``.
    Raises:
        FileNotFoundError: the JSON file does not exist.
        ValueError: the JSON is corrupt or not COCO format.
    """
    annotations = Path(annotations)
    if not annotations.is_file():
        raise FileNotFoundError(f"annotation file not found: {annotations}")
    try:
        with open(annotations, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt COCO JSON {annotations}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{annotations} is not a COCO annotation file (needs 'images' and 'annotations' lists)")
    problems: list[InputProblem] = []
    cats = category_conventions(data, problems, str(annotations))
    listed_cats = [c for c in data["categories"] if isinstance(c, dict)] if isinstance(data.get("categories"), list) \
        else []
    left_out = _left_out_categories(listed_cats, cats, problems, str(annotations))
    infos: dict = {}
    files: dict = {}  # image id -> the file names its entries give
    for i, info in enumerate(data["images"]):
        if not isinstance(info, dict) or "id" not in info or not isinstance(info.get("file_name"), str):
            problems.append(InputProblem(f"{annotations}#images[{i}]", "image entry without id or file_name"))
            continue
        infos.setdefault(hashable(info["id"]), info)
        files.setdefault(hashable(info["id"]), set()).add(info["file_name"])
    # one id for several files (e.g. two files merged whose ids collide): its annotations cannot be placed
    ambiguous = {k: sorted(v) for k, v in files.items() if len(v) > 1}
    for k in ambiguous:
        del infos[k]
    unplaced = Counter()
    by_image: dict = {}
    ids = Counter(hashable(a.get("id")) for a in data["annotations"] if isinstance(a, dict))
    for i, a in enumerate(data["annotations"]):
        src = f"{annotations}#annotations[{i}]"
        if not isinstance(a, dict):
            problems.append(InputProblem(src, "annotation is not an object"))
        elif hashable(a.get("image_id")) in ambiguous:
            unplaced[hashable(a.get("image_id"))] += 1
        elif hashable(a.get("image_id")) not in infos:
            problems.append(InputProblem(src, f"annotation of unknown image id {a.get('image_id')!r}"))
        elif a.get("iscrowd", 0):
            problems.append(InputProblem(f"{src} (id {a.get('id')})", "crowd region (iscrowd=1): not a person, not fitted",
                                         "warning"))
        elif (cid := hashable(a.get("category_id"))) in left_out and ("keypoints" not in a or cid in cats):
            left_out[cid][1] += 1  # (warned once per category below)
        else:  # with or without keypoints: coco_keypoints reports the unreadable ones per image
            by_image.setdefault(hashable(a["image_id"]), []).append((i, a))
    for k, names in ambiguous.items():
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        problems.append(InputProblem(f"{annotations} (image id {k})", f"image id {k} is given to {len(names)} different "
                                     f"files ({shown}): its {unplaced[k]} annotations cannot be placed and are not "
                                     "fitted, nor are those files unless another image id names them"))
    for cid, (name, n, why) in left_out.items():
        if n:
            problems.append(InputProblem(f"{annotations} (category_id {cid})", f"{n} annotations of category {name!r} "
                                         f"({why}): not fitted", "warning"))
    listed = {hashable(c.get("id")) for c in listed_cats}
    # keypoints under a category_id that gives no layout: with one layout they are read in it
    other = Counter(hashable(a.get("category_id")) for v in by_image.values() for _, a in v
                    if a.get("category_id") is not None and hashable(a.get("category_id")) not in cats
                    and "keypoints" in a)
    layouts = {c.names: c for c in cats.values()}
    for cid, n in other.items() if len(layouts) == 1 else ():  # (several layouts: coco_keypoints' errors)
        what = "a category that names no keypoints" if cid in listed else "a category_id that no category has"
        problems.append(InputProblem(f"{annotations} (category_id {cid})", f"{n} annotations with keypoints have "
                                     f"{what}: read in the only keypoint layout, "
                                     f"{next(iter(layouts.values())).name!r}", "warning"))
    for aid, n in ids.items():
        if n > 1:
            problems.append(InputProblem(f"{annotations} (id {aid})", f"annotation id {aid} used {n} times: all kept, "
                                         "flagged duplicate_id (evaluate and exports reject them)", "warning"))
    return CocoFile(annotations, infos, by_image, ids, cats), problems


def coco_keypoints(a: dict, coco: CocoFile, problems: list[InputProblem],
                   source: str) -> tuple[np.ndarray, KeypointConvention, int, int, int] | None:
    """``(keypoints_2d (K, 3), convention, annotation id, ignored, unusual)`` of one COCO annotation,
    confidences 0/1 from the visibility flags (COCO-WholeBody foot points appended), labelled points
    without usable coordinates unlabelled and counted in ``ignored``
    (:func:`~fit3d.data.keypoints.sanitize_keypoints`), values in forms COCO does not define
    (strings, booleans, visibility flags other than 0, 1, 2) counted in ``unusual``, or None with a
    problem when it has no keypoints, they are unreadable, its id is not an integer, or its
    ``category_id`` names no keypoint category while the categories give several keypoint
    layouts (with one layout, or none named, the annotation is read in it: :func:`load_coco`
    warns once per id that no category has)."""
    src = f"{source} (id {a.get('id')})"
    conv = coco.categories.get(hashable(a.get("category_id")))
    if conv is None and len({c.names for c in coco.categories.values()}) > 1:
        problems.append(InputProblem(src, f"category_id {a.get('category_id')!r} names no keypoint category: its "
                                     f"keypoint layout is unknown (categories {', '.join(map(str, coco.categories))})"))
        return None
    conv = conv or next(iter(coco.categories.values()), COCO17)
    if "keypoints" not in a:
        problems.append(InputProblem(src, "annotation without keypoints"))
        return None
    try:
        kp, unusual = parse_keypoints(a["keypoints"], len(conv)), unusual_values(a["keypoints"])
        if isinstance(a.get("foot_kpts"), list) and conv.names == COCO17.names:  # COCO-WholeBody
            kp, conv = np.concatenate([kp, parse_keypoints(a["foot_kpts"], len(FOOT6))]), COCO23
            unusual += unusual_values(a["foot_kpts"])
    except (ValueError, TypeError) as e:
        problems.append(InputProblem(src, f"unreadable keypoints: {e}"))
        return None
    aid = a.get("id")
    if isinstance(aid, bool) or not isinstance(aid, (int, float)) or not np.isfinite(aid) or aid != int(aid):
        problems.append(InputProblem(src, f"annotation id {aid!r} is not an integer"))
        return None
    flags = kp[:, 2]
    unusual += int((np.isfinite(flags) & ~np.isin(flags, (0, 1, 2))).sum())
    kp[:, 2] = np.where(np.isfinite(flags), (flags > 0).astype(np.float32), 0.0)
    kp, ignored = sanitize_keypoints(kp)
    return kp, conv, int(aid), ignored, unusual


def read_coco(annotations: str | Path, images_dir: str | Path) -> tuple[list[ImageRecord], list[InputProblem]]:
    """Read a COCO-format keypoint JSON (any keypoint layout named by its category).

    Args:
        annotations: path of the JSON file.
        images_dir: folder holding the images named by ``file_name`` (subfolders allowed).
    Returns:
        ``(images, problems)``: one :class:`ImageRecord` per readable image listed in the
        file (with no people when it has no keypoint annotation), sorted by path; the
        problems found (see the module docstring). Image entries that name one file share
        its record (their people fitted together, one warning).
    Raises:
        FileNotFoundError: the JSON file does not exist.
        ValueError: the JSON is corrupt or not COCO format.
    """
    images_dir = Path(images_dir)
    coco, problems = load_coco(annotations)
    records: list[ImageRecord] = []
    groups: dict[str, list] = {}  # the image file (normalised path) -> the image entries that name it
    for img_id, info in sorted(coco.images.items(), key=lambda kv: kv[1]["file_name"]):
        groups.setdefault(os.path.normpath(images_dir / info["file_name"]), []).append((img_id, info))
    keys: dict[str, str] = {}  # output key -> the file that has it
    for file, entries in groups.items():
        img_id, info = entries[0]
        path = images_dir / info["file_name"]
        key = _key(path, images_dir)
        anns = [a for i, _ in entries for a in coco.annotations.get(i, [])]
        ids = ", ".join(str(i) for i, _ in entries)
        if len(entries) > 1:  # one output file per image: the entries' people are fitted together
            problems.append(InputProblem(f"{coco.path} (image ids {ids})", f"{len(entries)} image entries name the "
                                         f"same file {key}: their annotations are fitted together, into one output",
                                         "warning"))
        if key in keys:  # e.g. /a/x.jpg and /b/x.jpg, both outside the image folder: one output name
            if anns:
                problems.append(InputProblem(f"{coco.path} (image ids {ids})", f"{file} would be written as {key}, "
                                             f"as {keys[key]} is: its {len(anns)} annotations are not fitted"))
            continue
        keys[key] = file
        if not anns:  # an image without people: counted, never opened
            records.append(ImageRecord(key, path, (0, 0)))
            continue
        rec = _open_image(path, images_dir, json_image_size(info), problems)
        if rec is None:  # one problem per image, naming the annotations it loses
            problems[-1].reason += f" ({len(anns)} annotations not fitted: ids " + \
                ", ".join(str(a.get("id")) for _, a in anns[:10]) + (", ..." if len(anns) > 10 else "") + ")"
            continue
        try:
            camera = coco_camera(info, rec.image_size)
        except ValueError as e:  # people fitted with a camera the file does not give would be wrong
            problems.append(InputProblem(f"{coco.path} (image id {img_id})", f"unreadable intrinsics: {e} "
                                         f"({len(anns)} annotations not fitted)"))
            continue
        for i, a in anns:  # in file order
            parsed = coco_keypoints(a, coco, problems, f"{coco.path}#annotations[{i}]")
            if parsed is None:
                rec.dropped.append(problems[-1].source)
                continue
            kp, conv, annot_id, ignored, unusual = parsed
            bbox, note = checked_bbox(a.get("bbox"), kp, rec.image_size)
            rec.people.append(Person(rec.image_key, rec.image_path, rec.image_size, annot_id, bbox, kp, conv,
                                     person_index=len(rec.people), bbox_note=note,
                                     duplicate_id=coco.ids[hashable(a.get("id"))] > 1, camera=camera,
                                     keypoints_ignored=ignored, keypoints_unusual=unusual))
        records.append(rec)
    return with_reader_checks(records, problems)


def json_image_size(info: dict) -> tuple[float, float] | None:
    """``(width, height)`` of a COCO image entry when both are numbers."""
    w, h = info.get("width"), info.get("height")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (w, h))
    return (w, h) if ok else None


def find_images(images_dir: Path, stem: str) -> list[Path]:
    """The images in ``images_dir`` whose name without suffix is ``stem``, in the order of
    :data:`IMAGE_SUFFIXES` (lower-case suffix first): the first is the one used."""
    found = []
    for suffix in IMAGE_SUFFIXES:
        for cand in (images_dir / (stem + suffix), images_dir / (stem + suffix.upper())):
            if cand.is_file() and not any(cand.samefile(f) for f in found):  # (a.jpg is a.JPG on some disks)
                found.append(cand)
    return found


def _openpose_stem(path: Path) -> str:
    """The image stem an OpenPose file names: ``a_keypoints.json`` and ``a.json`` -> ``a``."""
    return path.stem[: -len("_keypoints")] if path.stem.endswith("_keypoints") else path.stem


def _image_files(images_dir: Path) -> list[Path]:
    """Every image file (by :data:`IMAGE_SUFFIXES`, any case) under ``images_dir``."""
    return sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_openpose(keypoints_dir: str | Path, images_dir: str | Path) -> tuple[list[ImageRecord], list[InputProblem]]:
    """Read a folder of OpenPose JSON files (``<stem>_keypoints.json`` or ``<stem>.json``,
    subfolders mirrored in ``images_dir``).

    Args:
        keypoints_dir: folder of OpenPose output files.
        images_dir: folder of the images; ``<stem>.jpg`` (or .png, ...) is the
            image of ``<stem>_keypoints.json``.
    Returns:
        ``(images, problems)``: one record per readable file with an image (with no
        people when ``people`` is empty); corrupt JSON, unknown layouts and missing images are
        errors; a second file naming an image already read (``a.json`` beside OpenPose's own
        ``a_keypoints.json``, which is the one read), several images of one stem (the first of
        :data:`IMAGE_SUFFIXES` is used) and images that no keypoint file names (one warning
        counting them) are warnings.
    Raises:
        FileNotFoundError: ``keypoints_dir`` is not a folder or holds no JSON file.
    """
    keypoints_dir, images_dir = Path(keypoints_dir), Path(images_dir)
    if not keypoints_dir.is_dir():
        raise FileNotFoundError(f"OpenPose keypoint folder not found: {keypoints_dir}")
    records: list[ImageRecord] = []
    problems: list[InputProblem] = []
    used: dict[Path, Path] = {}  # image -> the keypoint file read for it
    # per image, OpenPose's own <stem>_keypoints.json first: a <stem>.json beside it is the one left out
    files = sorted(keypoints_dir.rglob("*.json"),
                   key=lambda f: (str(f.parent), _openpose_stem(f), not f.stem.endswith("_keypoints"), f.name))
    if not files:
        raise FileNotFoundError(f"no OpenPose JSON files (<image stem>_keypoints.json) in {keypoints_dir}")
    for jf in files:
        stem = _openpose_stem(jf)
        try:
            with open(jf, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict) or "people" not in data:
                raise TypeError("not an OpenPose keypoint file (needs an object with a 'people' list)")
            people = data["people"]
            if not isinstance(people, list):
                raise TypeError("'people' is not a list")
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
            problems.append(InputProblem(str(jf), f"corrupt OpenPose JSON: {e}"))
            continue
        sub = jf.parent.relative_to(keypoints_dir)
        found = find_images(images_dir / sub, stem)
        if not found:
            problems.append(InputProblem(str(jf), f"no image named {stem}.* in {images_dir / sub}"))
            continue
        image = found[0]
        if len(found) > 1:
            problems.append(InputProblem(str(jf), f"{len(found)} images are named {stem}.* "
                                         f"({', '.join(f.name for f in found)}): {image.name} is used", "warning"))
        if image in used:  # e.g. a.json beside a_keypoints.json: one output per image
            problems.append(InputProblem(str(jf), f"names the same image as {used[image]} ({_key(image, images_dir)}):"
                                         " not used (one keypoint file per image)", "warning"))
            continue
        used[image] = jf
        rec = _open_image(image, images_dir, None, problems)
        if rec is None:
            continue
        layouts = {len(OPENPOSE_BODY25): OPENPOSE_BODY25, len(OPENPOSE_COCO18): OPENPOSE_COCO18}
        sizes = [len(v) // 3 for p in people if isinstance(p, dict)
                 for v in [p.get("pose_keypoints_2d", p.get("pose_keypoints"))] if isinstance(v, list)]
        # a person without keypoints ([]) in the layout of the file's others (BODY_25 in a file of none)
        layouts[0] = next((layouts[k] for k in sizes if k in layouts and k), OPENPOSE_BODY25)
        for idx, p in enumerate(people):
            try:
                if not isinstance(p, dict):
                    raise TypeError(f"a person is a {type(p).__name__}, not an object")
                key = "pose_keypoints_2d" if "pose_keypoints_2d" in p or "pose_keypoints" not in p \
                    else "pose_keypoints"  # (OpenPose 1.0's name)
                if key not in p:
                    raise ValueError(f"no pose_keypoints_2d (keys: {', '.join(map(str, p)) or 'none'})")
                values = p[key]
                n = len(values) // 3 if isinstance(values, list) else -1
                conv = layouts.get(n)  # [] is a person without keypoints: skipped, as all-zero ones are
                if conv is None or len(values) % 3:
                    raise ValueError(f"{key} has {len(values) if isinstance(values, list) else 'no'} "
                                     "values; expected 75 (BODY_25) or 54 (COCO-18)")
                kp = parse_keypoints(values, n) if n else np.zeros((len(conv), 3), np.float32)
            except (ValueError, TypeError) as e:
                problems.append(InputProblem(f"{jf}#{idx}", str(e)))
                rec.dropped.append(f"{jf}#{idx}")
                continue
            kp, ignored = sanitize_keypoints(kp)
            box = keypoint_bbox(kp, pad=KEYPOINT_BOX_PAD)
            rec.people.append(Person(rec.image_key, image, rec.image_size, idx, box, kp, conv, len(rec.people),
                                     keypoints_ignored=ignored, keypoints_unusual=unusual_values(values)))
        records.append(rec)
    claimed = {(jf.parent.relative_to(keypoints_dir), _openpose_stem(jf)) for jf in files}  # readable or not
    unused = [p for p in _image_files(images_dir) if (p.parent.relative_to(images_dir), p.stem) not in claimed]
    if unused:  # OpenPose writes a file per frame, even without people: a missing one is a failed run
        problems.append(InputProblem(", ".join(_key(p, images_dir) for p in unused[:3]) + (" ..." if len(unused) > 3
                                     else ""), f"{len(unused)} image{'s have' if len(unused) != 1 else ' has'} "
                                     f"no keypoint file in {keypoints_dir}: not fitted", "warning"))
    return with_reader_checks(records, problems)


def discover_annotations(images_dir: str | Path) -> Path | None:
    """Find a COCO ``person_keypoints_*.json`` beside or above ``images_dir``.

    Looks in ``images_dir``, then its parent, then the grandparent. When several
    files match, one whose name contains the folder's name (``val2017``) wins.
    Returns ``None`` when nothing matches.
    """
    images_dir = Path(images_dir).resolve()
    for folder in (images_dir, images_dir.parent, images_dir.parent.parent):
        cands = sorted(folder.glob("person_keypoints_*.json"))
        if not cands:
            continue
        named = [c for c in cands if images_dir.name in c.name]
        return (named or cands)[0]
    return None


def input_sources(annotations=None, keypoints_dir=None, spin_npz=None) -> list[str]:
    """The people sources given, by their command-line names (``--annotations``, ``--keypoints``,
    ``--spin-npz``): :func:`load_inputs` reads exactly one."""
    given = dict(zip(("--annotations", "--keypoints", "--spin-npz"), (annotations, keypoints_dir, spin_npz)))
    return [name for name, v in given.items() if v is not None]


def load_inputs(images: str | Path, annotations: str | Path | None = None, keypoints_dir: str | Path | None = None,
                spin_npz: str | Path | None = None) -> tuple[list[ImageRecord], list[InputProblem], Path | None]:
    """The people of a folder of images, from the one source given: OpenPose ``keypoints_dir``,
    a SPIN-style ``spin_npz``, or COCO ``annotations`` (found by :func:`discover_annotations`
    when none is given).

    Returns:
        ``(records, problems, annotations_used)``: the image records, the input problems
        (see :func:`read_coco`), and the COCO JSON that was read (None for the other sources).
    Raises:
        FileNotFoundError: ``images`` is not a folder, a source is missing, or no
            COCO JSON was given or found. ValueError: a corrupt source file, or more than
            one source given (:func:`input_sources`).
    """
    sources = input_sources(annotations, keypoints_dir, spin_npz)
    if len(sources) > 1:
        raise ValueError(f"give one source of people, not {' and '.join(sources)}")
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"--images {images} is not a folder")
    if keypoints_dir is not None:
        return (*read_openpose(keypoints_dir, images), None)
    if spin_npz is not None:
        from fit3d.data.spin import read_spin

        return (*read_spin(spin_npz, images), None)
    if annotations is None:
        annotations = discover_annotations(images)
        if annotations is None:
            raise FileNotFoundError(
                f"no --annotations given and no person_keypoints_*.json beside or above {images}; "
                "pass --annotations FILE.json (COCO) or --keypoints DIR (OpenPose)"
            )
    return (*read_coco(annotations, images), Path(annotations))


def with_reader_checks(records: list[ImageRecord], problems: list[InputProblem]):
    """``(records, problems)`` with :func:`keypoints_outside_image`'s, :func:`keypoints_ignored_warning`'s,
    :func:`unusual_keypoints_warning`'s and :func:`boxes_rebuilt_warning`'s warnings added (if any):
    what every reader returns."""
    warnings = [w for w in (keypoints_outside_image(records), keypoints_ignored_warning(records),
                            unusual_keypoints_warning(records), boxes_rebuilt_warning(records)) if w]
    return records, problems + warnings


def boxes_rebuilt_warning(records: list[ImageRecord]) -> InputProblem | None:
    """One warning for all people whose annotated box was not used (``Person.bbox_note``,
    :func:`checked_bbox`): how many, by reason, a few examples; None when there are none."""
    hit = [(rec.image_key, p) for rec in records for p in rec.people if p.bbox_note]
    if not hit:
        return None
    reasons = Counter(p.bbox_note.partition("(")[2].rstrip(")").partition(":")[0] or p.bbox_note for _, p in hit)
    examples = ", ".join(f"{key} (id {p.annot_id})" for key, p in hit[:3]) + (" ..." if len(hit) > 3 else "")
    return InputProblem(examples, f"{len(hit)} {'person' if len(hit) == 1 else 'people'}: box rebuilt from the "
                        f"keypoints ({', '.join(f'{r}: {n}' for r, n in reasons.most_common())}); each fit's "
                        "bbox_note says why", "warning")


def _keypoint_count_warning(records: list[ImageRecord], count: str, what: str) -> InputProblem | None:
    """One warning for all people whose ``Person.<count>`` is above 0: "N people have M <what>",
    a few examples as the source; None when there are none."""
    hit = [(rec.image_key, p) for rec in records for p in rec.people if getattr(p, count)]
    if not hit:
        return None
    examples = ", ".join(f"{key} (id {p.annot_id})" for key, p in hit[:3]) + (" ..." if len(hit) > 3 else "")
    n = sum(getattr(p, count) for _, p in hit)
    return InputProblem(examples, f"{len(hit)} {'person has' if len(hit) == 1 else 'people have'} {n} "
                        f"{what.format(s='s' if n != 1 else '')}", "warning")


def keypoints_ignored_warning(records: list[ImageRecord]) -> InputProblem | None:
    """One warning for all people with labelled keypoints whose coordinates were unusable
    (``Person.keypoints_ignored``: non-finite or absurdly far, set to unlabelled): how many people
    and keypoints, a few examples; None when there are none. Such people are fitted from the rest
    of their keypoints (or skipped, with the count in the reason, when too few remain)."""
    return _keypoint_count_warning(records, "keypoints_ignored", "labelled keypoint{s} with non-finite or far-off "
                                   "coordinates: ignored (stored as unlabelled; the rest of each person's keypoints "
                                   "are used)")


def unusual_keypoints_warning(records: list[ImageRecord]) -> InputProblem | None:
    """One warning for all people whose keypoints hold values in a form the format does not define
    (``Person.keypoints_unusual``: numbers as strings or booleans, COCO visibility flags other than
    0, 1, 2), read as given: how many people and values, a few examples; None when there are none.
    A file converted by hand or holding detector scores as flags is the usual cause."""
    return _keypoint_count_warning(records, "keypoints_unusual", "keypoint value{s} in a form the format does not "
                                   "define (numbers written as strings or true/false, visibility flags other than "
                                   "0, 1, 2): read as numbers, a flag above 0 as labelled")


#: How far outside the image (a fraction of its larger side) a labelled keypoint may lie before
#: :func:`keypoints_outside_image` counts it: annotators place truncated joints a little outside.
OUTSIDE_MARGIN = 0.05


def keypoints_outside_image(records: list[ImageRecord], margin: float = OUTSIDE_MARGIN) -> InputProblem | None:
    """One warning for all people with labelled keypoints more than ``margin`` times the image's
    larger side outside it (how many, the farthest in pixels, a few examples), or None. Such
    keypoints are still fitted (some datasets label joints outside the frame); far outside, they
    are usually annotation errors, and the person's fit then reprojects badly (``valid`` False)."""
    people, farthest, examples = 0, 0.0, []
    for rec in records:
        if not rec.people:
            continue
        kp = np.concatenate([np.asarray(p.keypoints_2d, dtype=np.float64)[:, :3] for p in rec.people])
        owner = np.repeat(np.arange(len(rec.people)), [len(p.keypoints_2d) for p in rec.people])
        w, h = rec.image_size
        labelled = np.isfinite(kp).all(1) & (kp[:, 2] > 0)
        beyond = np.maximum(np.maximum(-kp[:, :2], kp[:, :2] - (w, h)), 0).max(1)
        far = labelled & (beyond > margin * max(w, h))
        if not far.any():
            continue
        who = np.unique(owner[far])
        people += len(who)
        farthest = max(farthest, float(beyond[far].max()))
        examples += [f"{rec.image_key} (id {rec.people[i].annot_id})" for i in who[: 3 - len(examples)]]
    if not people:
        return None
    return InputProblem(", ".join(examples) + (" ..." if people > len(examples) else ""),
                        f"{people} people have labelled keypoints outside their image (up to {farthest:.0f} px beyond "
                        "its border): fitted as given", "warning")
