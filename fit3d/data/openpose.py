"""The OpenPose reader: one ``<image stem>_keypoints.json`` per image with a ``people`` list
(BODY_25, BODY_25B or COCO-18 ``pose_keypoints_2d``, OpenPose 1.0's ``pose_keypoints``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fit3d.data.boxes import KEYPOINT_BOX_PAD, keypoint_bbox
from fit3d.data.checks import with_reader_checks
from fit3d.data.conventions import OPENPOSE_BODY25, OPENPOSE_BODY25B, OPENPOSE_COCO18
from fit3d.data.images import IMAGE_SUFFIXES, files_under, find_images, image_files, image_key, open_image
from fit3d.data.keypoints import parse_keypoints, sanitize_keypoints, track_id, unusual_values
from fit3d.data.records import ImageRecord, InputProblem, Person


def _openpose_stem(path: Path) -> str:
    """The image stem an OpenPose file names: ``a_keypoints.json`` and ``a.json`` -> ``a``."""
    return path.stem[: -len("_keypoints")] if path.stem.endswith("_keypoints") else path.stem


def _video_hint(stem: str) -> str:
    """A hint for OpenPose's names of a video's frames (``<video>_<12-digit frame>_keypoints.json``),
    which frames extracted under other names do not match; "" for other names."""
    head, _, number = stem.rpartition("_")
    if head and len(number) == 12 and number.isdigit():
        return (f" (OpenPose names a video's frames <video>_<12-digit frame number>: extract them under those "
                f"names, e.g. ffmpeg -i {head}.mp4 -start_number 0 {head}_%012d.png)")
    return ""


#: OpenPose models whose people have 75 values (``--model_pose``), by ``--openpose-model`` name.
BODY25_MODELS = {"body_25": OPENPOSE_BODY25, "body_25b": OPENPOSE_BODY25B}

#: The 75 values of BODY_25 and BODY_25B are told apart by the median over a folder's people of
#: the mean distance from point 0 (the nose) to the labelled ones of points 1-4, over the distance
#: between the midpoints of points 5, 6 and 11, 12 (:func:`body25_ratio`). In BODY_25B points 1-4
#: are the eyes and ears beside the nose and 5, 6 / 11, 12 the shoulders / hips; in BODY_25 they
#: are the neck, right shoulder, elbow and wrist, and 5, 6 / 11, 12 a shoulder and elbow / an
#: ankle and hip. On ``coco_mini``'s annotated people written in each order: BODY_25B median 0.15
#: (90 % under 0.22), BODY_25 median 0.45 (least 0.21; a hand at the face goes lower). Read as
#: BODY_25, a median under the first bound is a warning; read as BODY_25B, one over the second.
#: The reader never re-reads on its own: each shard reads a part of the folder, and a guess must
#: not change a layout.
BODY25B_RATIO, BODY25_RATIO = 0.2, 0.3


def body25_convention(model: str):
    """The convention of ``model``'s 75-value people (:data:`BODY25_MODELS`).

    Raises:
        ValueError: an unknown ``model``.
    """
    if model not in BODY25_MODELS:
        raise ValueError(f"unknown OpenPose model {model!r}: one of {', '.join(BODY25_MODELS)}")
    return BODY25_MODELS[model]


def body25_ratio(keypoints: list[np.ndarray]) -> tuple[float | None, int]:
    """``(median ratio, people measured)`` of :data:`BODY25B_RATIO`'s statistic over the 75-value
    people ``keypoints`` (each ``(25, 3)``: x, y px and confidence, in the file's own order) with
    points 0, 5, 6, 11, 12 and at least two of 1-4 labelled; ``(None, 0)`` with none."""
    ratios = []
    for kp in keypoints:
        near = [i for i in (1, 2, 3, 4) if kp[i, 2] > 0]
        if len(near) >= 2 and (kp[[0, 5, 6, 11, 12], 2] > 0).all():
            xy = kp[:, :2].astype(np.float64)
            torso = np.linalg.norm((xy[5] + xy[6]) / 2 - (xy[11] + xy[12]) / 2)
            if torso > 0:
                ratios.append(np.mean([np.linalg.norm(xy[0] - xy[i]) for i in near]) / torso)
    return (float(np.median(ratios)) if ratios else None), len(ratios)


def read_openpose(keypoints_dir: str | Path, images_dir: str | Path, only: Callable[[str], bool] | None = None,
                  model: str = "body_25") -> tuple[list[ImageRecord], list[InputProblem]]:
    """Read a folder of OpenPose JSON files (``<stem>_keypoints.json`` or ``<stem>.json``,
    subfolders mirrored in ``images_dir``).

    Args:
        keypoints_dir: folder of OpenPose output files.
        images_dir: folder of the images; ``<stem>.jpg`` (or .png, ...) is the
            image of ``<stem>_keypoints.json``; a file named after the image's whole name
            (``a.jpg_keypoints.json``, ``a.jpg.json``) is that image's when no ``a.jpg.*`` exists.
        only: a test of image keys (one shard's, :func:`fit3d.pipeline.selection.in_shard`): the
            keypoint files of the images it refuses are not read, nor their images opened; each
            such image is a record without people, and its problems (and the images without a
            keypoint file that it refuses; a keypoint file without an image is the problem of
            the shard of its path without suffix, ``sub/stem``) are left to the job that reads it, as
            :func:`~fit3d.data.coco.read_coco` does. Each task of an array otherwise parsed every
            frame's file and opened every frame.
        model: the OpenPose model that wrote the 75-value people (:data:`BODY25_MODELS`:
            ``"body_25"``, OpenPose's default, or ``"body_25b"``); the same 75 values in another
            order, which nothing in the files tells apart: people that look like the other model
            (:func:`body25_ratio`) are a warning.
    Returns:
        ``(images, problems)``: one record per readable file with an image (with no
        people when ``people`` is empty); corrupt JSON, unknown layouts and missing images are
        errors; a second file naming an image already read (``a.json`` beside OpenPose's own
        ``a_keypoints.json``, which is the one read), several images of one stem (the first of
        :data:`~fit3d.data.images.IMAGE_SUFFIXES` is used) and images that no keypoint file names (one warning
        counting them) are warnings.
    Raises:
        FileNotFoundError: ``keypoints_dir`` is not a folder or holds no JSON file.
        ValueError: an unknown ``model``.
    """
    keypoints_dir, images_dir = Path(keypoints_dir), Path(images_dir)
    body25 = body25_convention(model)
    if not keypoints_dir.is_dir():
        raise FileNotFoundError(f"OpenPose keypoint folder not found: {keypoints_dir}")
    records: list[ImageRecord] = []
    problems: list[InputProblem] = []
    used: dict[Path, Path] = {}  # image -> the keypoint file read for it
    # per image, OpenPose's own <stem>_keypoints.json first: a <stem>.json beside it is the one left out
    files = sorted(files_under(keypoints_dir, (".json",)),  # (linked folders too)
                   key=lambda f: (str(f.parent), _openpose_stem(f), not f.stem.endswith("_keypoints"), f.name))
    if not files:
        raise FileNotFoundError(f"no OpenPose JSON files (<image stem>_keypoints.json) in {keypoints_dir}")
    for jf in files:
        stem = _openpose_stem(jf)
        sub = jf.parent.relative_to(keypoints_dir)
        found = find_images(images_dir / sub, stem)
        named = images_dir / sub / stem  # a file named after the image's whole name: a.jpg_keypoints.json
        if not found and Path(stem).suffix.lower() in IMAGE_SUFFIXES and named.is_file():
            found = [named]
        if only is not None and found and not only(key := image_key(found[0], images_dir)):  # another shard's
            if found[0] not in used:
                used[found[0]] = jf
                records.append(ImageRecord(key, found[0], (0, 0)))
            continue
        if only is not None and not found and not only((sub / stem).as_posix()):  # (its problem: one shard's)
            continue
        try:
            with open(jf, encoding="utf-8-sig") as f:
                data = json.load(f)
            if not isinstance(data, dict) or "people" not in data:
                raise TypeError("not an OpenPose keypoint file (needs an object with a 'people' list)")
            people = data["people"]
            if not isinstance(people, list):
                raise TypeError("'people' is not a list")
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
            problems.append(InputProblem(str(jf), f"corrupt OpenPose JSON: {e}"))
            continue
        if not found:
            problems.append(InputProblem(str(jf), f"no image named {stem}.* in {images_dir / sub}{_video_hint(stem)}"))
            continue
        image = found[0]
        if len(found) > 1:
            problems.append(InputProblem(str(jf), f"{len(found)} images are named {stem}.* "
                                         f"({', '.join(f.name for f in found)}): {image.name} is used", "warning"))
        if image in used:  # e.g. a.json beside a_keypoints.json: one output per image
            problems.append(InputProblem(str(jf), f"names the same image as {used[image]} ({image_key(image, images_dir)}):"
                                         " not used (one keypoint file per image)", "warning"))
            continue
        used[image] = jf
        rec = open_image(image, images_dir, None, problems)
        if rec is None:
            continue
        layouts = {len(body25): body25, len(OPENPOSE_COCO18): OPENPOSE_COCO18}
        sizes = [len(v) // 3 for p in people if isinstance(p, dict)
                 for v in [p.get("pose_keypoints_2d", p.get("pose_keypoints"))] if isinstance(v, list)]
        # a person without keypoints ([]) in the layout of the file's others (BODY_25 in a file of none)
        layouts[0] = next((layouts[k] for k in sizes if k in layouts and k), body25)
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
                    nested = isinstance(values, list) and values and all(isinstance(v, list) for v in values)
                    raise ValueError(f"{key} has {len(values) if isinstance(values, list) else 'no'} "
                                     "values; expected 75 (BODY_25) or 54 (COCO-18)"
                                     + (f" (a nested list of {len(values)} points: OpenPose writes them flat, x, y, "
                                        "confidence each)" if nested else ""))
                kp = parse_keypoints(values, n) if n else np.zeros((len(conv), 3), np.float32)
            except (ValueError, TypeError) as e:
                problems.append(InputProblem(f"{jf}#{idx}", str(e)))
                rec.dropped.append(f"{jf}#{idx}")
                continue
            kp, ignored = sanitize_keypoints(kp, rec.image_size)
            box = keypoint_bbox(kp, pad=KEYPOINT_BOX_PAD)
            rec.people.append(Person(rec.image_key, image, rec.image_size, idx, box, kp, conv, len(rec.people),
                                     keypoints_ignored=ignored, keypoints_unusual=unusual_values(values),
                                     track_id=track_id(p.get("person_id"))))
        records.append(rec)
    _warn_other_body25(records, problems, keypoints_dir, body25)
    claimed = {(jf.parent.relative_to(keypoints_dir), _openpose_stem(jf)) for jf in files}  # readable or not
    claimed |= {(image.parent.relative_to(images_dir), image.stem) for image in used}  # (a.jpg_keypoints.json: a)
    unused = [p for p in image_files(images_dir) if (p.parent.relative_to(images_dir), p.stem) not in claimed
              and (only is None or only(image_key(p, images_dir)))]
    if unused:  # OpenPose writes a file per frame, even without people: a missing one is a failed run
        problems.append(InputProblem(", ".join(image_key(p, images_dir) for p in unused[:3]) + (" ..." if len(unused) > 3
                                     else ""), f"{len(unused)} image{'s have' if len(unused) != 1 else ' has'} "
                                     f"no keypoint file in {keypoints_dir}: not fitted", "warning"))
    return with_reader_checks(records, problems)


def _warn_other_body25(records: list[ImageRecord], problems: list[InputProblem], keypoints_dir: Path,
                       body25) -> None:
    """Append a warning to ``problems`` when the 75-value people of ``records``, read as ``body25``
    (BODY_25 or BODY_25B), look like the other model (:func:`body25_ratio`)."""
    ratio, measured = body25_ratio([p.keypoints_2d for r in records for p in r.people if p.convention is body25])
    if ratio is None:
        return
    if body25 is OPENPOSE_BODY25 and ratio < BODY25B_RATIO:
        said, other, option = "BODY_25B", "BODY_25", "--openpose-model body_25b"
        why = "points 1-4 lie beside the nose, as BODY_25B's eyes and ears, not at the neck and right arm"
    elif body25 is OPENPOSE_BODY25B and ratio > BODY25_RATIO:
        said, other, option = "BODY_25", "BODY_25B", "--openpose-model body_25 (the default)"
        why = "points 1-4 lie away from the nose, as BODY_25's neck and right arm, not at the eyes and ears"
    else:
        return
    people = f"{measured} {'person' if measured == 1 else 'people'} measured"
    problems.append(InputProblem(str(keypoints_dir), f"the 75-value keypoints look like OpenPose's {said}, not "
                                 f"{other} ({people}: {why}): they are read as {other}; if they are {said}, rerun "
                                 f"with {option}", "warning"))
