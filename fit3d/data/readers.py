"""Readers from annotation files to :class:`Person` records.

Two input formats:

* COCO keypoint JSON (``person_keypoints_*.json``): every annotated person with
  at least one labelled keypoint, grouped by image, keeping the annotation id.
  Read through ``pycocotools``.
* OpenPose JSON: one ``<image stem>_keypoints.json`` per image with a
  ``people`` list; ``pose_keypoints_2d`` holds 25 (BODY_25) or 18 (COCO-18)
  ``x, y, c`` triples.

Bad input never stops a run: a corrupt OpenPose file or a missing image becomes
an :class:`InputProblem` returned beside the records, which the pipeline writes
to the run summary.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fit3d.data.conventions import COCO17, OPENPOSE_BODY25, OPENPOSE_COCO18, KeypointConvention

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Person:
    """One annotated person.

    Attributes:
        image_key: identifier of the image (its file name without folder), used
            to name the output file.
        image_path: path of the image file (may not exist; see ``image_exists``).
        image_size: ``(width, height)`` in pixels.
        annot_id: annotation id (COCO ``id``; OpenPose: index in ``people``).
        bbox: ``(x, y, w, h)`` in pixels; from the annotation, or the box of the
            labelled keypoints when the format has none.
        keypoints_2d: ``(K, 3)`` float array ``x, y, confidence`` in pixels, in
            ``convention``. COCO visibility flags become confidences
            (0 unlabelled, 1 labelled, 2 visible -> 0, 1, 1).
        convention: the keypoint convention of ``keypoints_2d``.
        person_index: position of the person within its image.
    """

    image_key: str
    image_path: Path
    image_size: tuple[int, int]
    annot_id: int
    bbox: np.ndarray
    keypoints_2d: np.ndarray
    convention: KeypointConvention
    person_index: int = 0

    @property
    def num_visible(self) -> int:
        """Number of keypoints with finite coordinates and confidence > 0."""
        kp = self.keypoints_2d
        ok = np.isfinite(kp).all(axis=1) & (kp[:, 2] > 0)
        return int(ok.sum())


@dataclass
class InputProblem:
    """A piece of input that could not be used, and why."""

    source: str
    reason: str


@dataclass
class ImageRecord:
    """All people annotated in one image."""

    image_key: str
    image_path: Path
    image_size: tuple[int, int]
    people: list[Person] = field(default_factory=list)


def keypoint_bbox(keypoints_2d: np.ndarray) -> np.ndarray:
    """Box ``(x, y, w, h)`` around the keypoints with confidence > 0 (zeros if none)."""
    kp = keypoints_2d[np.isfinite(keypoints_2d).all(axis=1) & (keypoints_2d[:, 2] > 0)]
    if len(kp) == 0:
        return np.zeros(4, dtype=np.float32)
    lo, hi = kp[:, :2].min(0), kp[:, :2].max(0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], dtype=np.float32)


def read_coco(annotations: str | Path, images_dir: str | Path) -> tuple[list[ImageRecord], list[InputProblem]]:
    """Read a COCO person-keypoint JSON.

    Args:
        annotations: path of the JSON file.
        images_dir: folder holding the images named by ``file_name``.
    Returns:
        ``(images, problems)``: one :class:`ImageRecord` per image that has at
        least one person annotation with a labelled keypoint (crowd annotations
        excluded), sorted by file name; ``problems`` lists images whose file is
        missing (they are left out of ``images``).
    Raises:
        FileNotFoundError: the JSON file does not exist.
        ValueError: the JSON is corrupt or not COCO keypoint format.
    """
    from pycocotools.coco import COCO

    annotations = Path(annotations)
    images_dir = Path(images_dir)
    if not annotations.is_file():
        raise FileNotFoundError(f"annotation file not found: {annotations}")
    try:
        with open(annotations) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt COCO JSON {annotations}: {e}") from e
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{annotations} is not a COCO annotation file (needs 'images' and 'annotations')")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()

    records: list[ImageRecord] = []
    problems: list[InputProblem] = []
    for img_id in sorted(coco.imgs, key=lambda i: coco.imgs[i]["file_name"]):
        info = coco.imgs[img_id]
        anns = [
            a
            for a in coco.imgToAnns.get(img_id, [])
            if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0 and "keypoints" in a
        ]
        if not anns:
            continue
        path = images_dir / info["file_name"]
        if not path.is_file():
            problems.append(InputProblem(str(path), "image file not found"))
            continue
        rec = ImageRecord(Path(info["file_name"]).name, path, (int(info["width"]), int(info["height"])))
        for idx, a in enumerate(sorted(anns, key=lambda a: a["id"])):
            kp = np.asarray(a["keypoints"], dtype=np.float32).reshape(-1, 3)
            if kp.shape[0] != len(COCO17):
                problems.append(InputProblem(f"{path}#{a['id']}", f"expected 17 keypoints, got {kp.shape[0]}"))
                continue
            kp[:, 2] = (kp[:, 2] > 0).astype(np.float32)
            bbox = np.asarray(a.get("bbox") or keypoint_bbox(kp), dtype=np.float32)
            rec.people.append(
                Person(rec.image_key, path, rec.image_size, int(a["id"]), bbox, kp, COCO17, idx)
            )
        records.append(rec)
    return records, problems


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def find_image(images_dir: Path, stem: str) -> Path | None:
    """The image in ``images_dir`` whose name without suffix is ``stem``, if any."""
    for suffix in IMAGE_SUFFIXES:
        for cand in (images_dir / (stem + suffix), images_dir / (stem + suffix.upper())):
            if cand.is_file():
                return cand
    return None


def read_openpose(keypoints_dir: str | Path, images_dir: str | Path) -> tuple[list[ImageRecord], list[InputProblem]]:
    """Read a folder of OpenPose JSON files (``<stem>_keypoints.json`` or ``<stem>.json``).

    Args:
        keypoints_dir: folder of OpenPose output files.
        images_dir: folder of the images; ``<stem>.jpg`` (or .png, ...) is the
            image of ``<stem>_keypoints.json``. Its size is read from the file header.
    Returns:
        ``(images, problems)``: corrupt JSON, unknown layouts and missing images
        are listed in ``problems`` and skipped; the rest are read.
    Raises:
        FileNotFoundError: ``keypoints_dir`` is not a folder.
    """
    keypoints_dir, images_dir = Path(keypoints_dir), Path(images_dir)
    if not keypoints_dir.is_dir():
        raise FileNotFoundError(f"OpenPose keypoint folder not found: {keypoints_dir}")
    records: list[ImageRecord] = []
    problems: list[InputProblem] = []
    for jf in sorted(keypoints_dir.glob("*.json")):
        stem = jf.stem[: -len("_keypoints")] if jf.stem.endswith("_keypoints") else jf.stem
        try:
            with open(jf) as f:
                data = json.load(f)
            people = data["people"]
            if not isinstance(people, list):
                raise TypeError("'people' is not a list")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            problems.append(InputProblem(str(jf), f"corrupt OpenPose JSON: {e}"))
            continue
        image = find_image(images_dir, stem)
        if image is None:
            problems.append(InputProblem(str(jf), f"no image named {stem}.* in {images_dir}"))
            continue
        try:
            size = _image_size(image)
        except OSError as e:
            problems.append(InputProblem(str(image), f"unreadable image: {e}"))
            continue
        rec = ImageRecord(image.name, image, size)
        for idx, p in enumerate(people):
            flat = np.asarray(p.get("pose_keypoints_2d", []), dtype=np.float32)
            if flat.size == 3 * len(OPENPOSE_BODY25):
                conv = OPENPOSE_BODY25
            elif flat.size == 3 * len(OPENPOSE_COCO18):
                conv = OPENPOSE_COCO18
            else:
                problems.append(
                    InputProblem(f"{jf}#{idx}", f"pose_keypoints_2d has {flat.size} values; expected 75 or 54")
                )
                continue
            kp = flat.reshape(-1, 3)
            rec.people.append(Person(rec.image_key, image, size, idx, keypoint_bbox(kp), kp, conv, idx))
        if rec.people:
            records.append(rec)
    return records, problems


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


def load_inputs(images: str | Path, annotations: str | Path | None = None, keypoints_dir: str | Path | None = None,
                spin_npz: str | Path | None = None) -> tuple[list[ImageRecord], list[InputProblem], Path | None]:
    """The people of a folder of images, from the first source given: OpenPose ``keypoints_dir``,
    a SPIN-style ``spin_npz``, or COCO ``annotations`` (found by :func:`discover_annotations`
    when None).

    Returns:
        ``(records, problems, annotations_used)``: the image records, the input problems
        (see :func:`read_coco`), and the COCO JSON that was read (None for the other sources).
    Raises:
        FileNotFoundError: ``images`` is not a folder, a source is missing, or no
            COCO JSON was given or found. ValueError: a corrupt source file.
    """
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
