"""The COCO-format reader: any keypoint layout named by its category (COCO-17, CrowdPose, MPII,
Halpe, COCO-WholeBody's foot points, OCHuman), one :class:`~fit3d.data.records.ImageRecord` per
listed image; what it accounts for is listed in :mod:`fit3d.data.readers`."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fit3d.data.boxes import checked_bbox
from fit3d.data.checks import with_reader_checks
from fit3d.data.conventions import COCO17, COCO23, FOOT6, KeypointConvention, convention_from_names
from fit3d.data.images import image_key, in_folder, none_found_problem, open_image
from fit3d.data.intrinsics import coco_camera
from fit3d.data.keypoints import parse_keypoints, sanitize_keypoints, track_id, unusual_values, whole_number
from fit3d.data.records import ImageRecord, InputProblem, Person


#: A COCO category whose ``name`` or ``supercategory`` (lower-cased) is one of these holds people
#: (COCO, CrowdPose, MPII, Halpe, COCO-WholeBody and OCHuman all say "person").
PERSON_CATEGORIES = frozenset({"person", "persons", "people", "human", "humans", "pedestrian"})


def is_person_category(category: dict) -> bool:
    """Whether a COCO ``categories`` entry names people (:data:`PERSON_CATEGORIES`)."""
    return any(str(category.get(k, "")).strip().lower() in PERSON_CATEGORIES for k in ("name", "supercategory"))


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
    return image_key(root / file_name, root)


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
            if twice:  # e.g. "head" and "headtop": one model point, fed per person by the first labelled
                raw = [str(r) for r, n in zip(c["keypoints"], conv.names) if n in twice]
                problems.append(InputProblem(f"{source} (category {c.get('id')})", f"keypoint names {', '.join(raw)} "
                                             f"all mean {', '.join(twice)}: per person, the first of them that "
                                             "is labelled is used", "warning"))
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
        categories: category id -> :class:`~fit3d.data.conventions.KeypointConvention` (see :func:`category_conventions`).
    Ids are JSON values made hashable (lists and objects by their JSON text).
    """

    path: Path
    images: dict
    annotations: dict
    ids: Counter
    categories: dict


def _id_type_hint(image_id, by_text: dict) -> str:
    """Where an unknown image id is an image's id written as another type (``"197388"`` in
    ``images``, ``197388`` in ``annotations``), a hint saying so ("" otherwise); ``by_text``: the
    images' ids by their text (``{str(id): id}``, built once)."""
    same = by_text.get(str(image_id))
    if same is None or type(same) is type(image_id):
        return ""
    kind = {str: "a string", int: "an integer", float: "a number"}
    return (f" (an image has the id {same!r}: {kind.get(type(same), type(same).__name__)} in 'images', "
            f"{kind.get(type(image_id), type(image_id).__name__)} here; COCO's ids are integers in both)")


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
        with open(annotations, encoding="utf-8-sig") as f:  # (a byte-order mark, as Windows tools write: read)
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt COCO JSON {annotations}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        hint = ""
        if isinstance(data, list) and data and isinstance(data[0], dict) and "keypoints" in data[0] \
                and "image_id" in data[0]:  # a detector's output in COCO's results format
            hint = (": it is a list of detections (COCO's results format); put them under 'annotations' (each "
                    "with an 'id' and 'category_id'), beside the ground-truth file's 'images' (their file names) "
                    "and 'categories' (the keypoint names)")
        elif isinstance(data, dict) and isinstance(data.get("people"), list):  # one image's OpenPose file
            hint = (": it is an OpenPose keypoint file (a 'people' list): give the folder of those files with "
                    "--keypoints DIR")
        raise ValueError(f"{annotations} is not a COCO annotation file (needs 'images' and 'annotations' lists){hint}")
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
    by_text = None  # image ids by their text, for the unknown-id hint
    for i, a in enumerate(data["annotations"]):
        src = f"{annotations}#annotations[{i}]"
        if not isinstance(a, dict):
            problems.append(InputProblem(src, "annotation is not an object"))
        elif hashable(a.get("image_id")) in ambiguous:
            unplaced[hashable(a.get("image_id"))] += 1
        elif hashable(a.get("image_id")) not in infos:
            if by_text is None:  # (built once: every annotation misses when the types differ)
                by_text = {str(k): k for k in infos}
            problems.append(InputProblem(src, f"annotation of unknown image id {a.get('image_id')!r}"
                                         + _id_type_hint(a.get("image_id"), by_text)))
        elif _crowd(a.get("iscrowd", 0), f"{src} (id {a.get('id')})", problems):
            problems.append(InputProblem(f"{src} (id {a.get('id')})", "crowd region (iscrowd=1): a region of several people, not one, not fitted",
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


def coco_keypoints(a: dict, coco: CocoFile, problems: list[InputProblem], source: str,
                   image_size: tuple[float, float] | None = None
                   ) -> tuple[np.ndarray, KeypointConvention, int, int, int] | None:
    """``(keypoints_2d (K, 3), convention, annotation id, ignored, unusual)`` of one COCO annotation,
    confidences 0/1 from the visibility flags, or the value itself where it lies strictly between 0
    and 1 (a detector's score written in the flag's place, as COCO's results files and many pose
    estimators do: kept as the point's confidence, as OpenPose's are; COCO-WholeBody foot points
    appended), labelled points
    without usable coordinates unlabelled and counted in ``ignored``
    (:func:`~fit3d.data.keypoints.sanitize_keypoints`; with ``image_size``, points far outside the
    image too), values in forms COCO does not define (strings, booleans, visibility flags other
    than 0, 1, 2 and not a score, NaN) counted in ``unusual``, or None with a problem when it has no keypoints, they are unreadable, its id is not an integer, or its
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
        kp, raw = parse_keypoints(a["keypoints"], len(conv)), list(a["keypoints"])
    except (ValueError, TypeError) as e:
        assumed = "" if coco.categories else (" (no category of the file names its keypoints, so COCO-17 is assumed: "
                                              "give the category its layout's 'keypoints' names)")
        problems.append(InputProblem(src, f"unreadable keypoints: {e}{assumed}"))
        return None
    if isinstance(a.get("foot_kpts"), list) and conv.names == COCO17.names:  # COCO-WholeBody
        try:
            kp, conv = np.concatenate([kp, parse_keypoints(a["foot_kpts"], len(FOOT6))]), COCO23
            raw += a["foot_kpts"]
        except (ValueError, TypeError) as e:  # the body's keypoints are still good
            problems.append(InputProblem(src, f"unreadable foot_kpts ({e}): fitted without the feet", "warning"))
    aid = a.get("id")
    if not whole_number(aid):
        problems.append(InputProblem(src, f"annotation id {aid!r} is not an integer (of at most 64 bits, as fits store ids)"))
        return None
    flags = kp[:, 2]
    written_as_number = np.asarray([not isinstance(v, (str, bool)) for v in raw[2::3]], dtype=bool)
    score = np.isfinite(flags) & (flags > 0) & (flags < 1)  # a detector's score: kept as the confidence
    unusual = unusual_values(raw) + int(((~np.isfinite(flags) | (~np.isin(flags, (0, 1, 2)) & ~score))
                                         & written_as_number).sum())
    kp[:, 2] = np.where(np.isfinite(flags), np.where(score, flags, (flags > 0).astype(np.float32)), 0.0)
    kp, ignored = sanitize_keypoints(kp, image_size)
    return kp, conv, int(aid), ignored, unusual


def _crowd(value, src: str, problems: list[InputProblem]) -> bool:
    """Whether an annotation's ``iscrowd`` marks a crowd region: 1 (or true); 0, false or none do not.
    Another value (``"0"``, ``"1"``, 2: a converter's) is read as the number it writes, with a warning;
    one that is no number at all as no crowd (found by a review: ``"0"`` was taken for a crowd)."""
    if value is None or value is False or (whole_number(value) and value == 0):
        return False
    if value is True or (whole_number(value) and value == 1):
        return True
    try:
        crowd = float(str(value).strip()) != 0
    except ValueError:
        crowd = False
    problems.append(InputProblem(src, f"iscrowd {value!r} is not 0 or 1: read as {int(crowd)}", "warning"))
    return crowd


def read_coco(annotations: str | Path, images_dir: str | Path,
              only: Callable[[str], bool] | None = None) -> tuple[list[ImageRecord], list[InputProblem]]:
    """Read a COCO-format keypoint JSON (any keypoint layout named by its category).

    Args:
        annotations: path of the JSON file.
        images_dir: folder holding the images named by ``file_name`` (subfolders allowed).
        only: a test of image keys (e.g. one shard's, :func:`fit3d.pipeline.selection.shard_of`):
            the images it refuses are neither opened nor their annotations parsed; each is a record
            without people (as an image without annotations), and their problems are left to the
            job that reads them. A dataset-sized file's every image and person cost each task of an
            array ~55 s (COCO train) before it fitted its share.
    Returns:
        ``(images, problems)``: one :class:`~fit3d.data.records.ImageRecord` per readable image listed in the
        file (with no people when it has no keypoint annotation), sorted by path (files outside
        ``images_dir`` last: a name they share with a file inside is the inside file's); the
        problems found (see the module docstring). Image entries that name one file share
        its record (their people fitted together, one warning).
    Raises:
        FileNotFoundError: the JSON file does not exist.
        ValueError: the JSON is corrupt or not COCO format.
    """
    images_dir = Path(images_dir)
    coco, problems = load_coco(annotations)
    problems += unread_camera_keys(coco)
    records: list[ImageRecord] = []
    missing, opened = [], 0  # image files not found; images opened
    groups: dict[str, list] = {}  # the image file (normalised path) -> the image entries that name it
    for img_id, info in sorted(coco.images.items(), key=lambda kv: kv[1]["file_name"]):
        groups.setdefault(os.path.normpath(images_dir / info["file_name"]), []).append((img_id, info))
    keys: dict[str, str] = {}  # output key -> the file that has it
    inside = {file: in_folder(Path(file), images_dir) for file in groups}
    # files inside the image folder first: a key they share with a file elsewhere (written under its
    # file name) is theirs, the name training code finds under --images (the outside file was kept)
    for file, entries in sorted(groups.items(), key=lambda kv: not inside[kv[0]]):
        img_id, info = entries[0]
        path = images_dir / info["file_name"]
        key = image_key(path, images_dir)
        outside = not inside[file]
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
        if outside and anns and (only is None or only(key)):
            problems.append(InputProblem(f"{coco.path} (image ids {ids})", f"{info['file_name']} leads out of the "
                                         f"image folder: its fits are written as {key}, the name exports give it "
                                         "(relative to --images, where it is not: copy it there)", "warning"))
        if not anns or (only is not None and not only(key)):  # counted, never opened
            records.append(ImageRecord(key, path, (0, 0)))
            continue
        rec = open_image(path, images_dir, json_image_size(info), problems)
        opened += rec is not None
        if rec is None and not path.exists():
            missing.append(path)
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
            parsed = coco_keypoints(a, coco, problems, f"{coco.path}#annotations[{i}]", rec.image_size)
            if parsed is None:
                rec.dropped.append(problems[-1].source)
                continue
            kp, conv, annot_id, ignored, unusual = parsed
            bbox, note = checked_bbox(a.get("bbox"), kp, rec.image_size)
            rec.people.append(Person(rec.image_key, rec.image_path, rec.image_size, annot_id, bbox, kp, conv,
                                     person_index=len(rec.people), bbox_note=note,
                                     duplicate_id=coco.ids[hashable(a.get("id"))] > 1, camera=camera,
                                     keypoints_ignored=ignored, keypoints_unusual=unusual,
                                     track_id=track_id(a.get("track_id"))))
        records.append(rec)
    hint = none_found_problem(missing, opened, images_dir, "--annotations") if only is None else None  # (whole input)
    if hint:
        problems.append(hint)
    return with_reader_checks(records, problems)


def unread_camera_keys(coco: CocoFile) -> list[InputProblem]:
    """One warning for image-entry keys that look like intrinsics (containing ``cam``, ``intrinsic``
    or ``focal``) in entries without ``cam_param``, the key fit3d reads (a trial's ``cam_params``
    fell back to the image diagonal in silence); identifiers such as Human3.6M's ``cam_idx`` are
    not intrinsics. Names the keys and how many images have them; [] when none."""
    found: dict[str, int] = {}
    for info in coco.images.values():
        if "cam_param" in info:
            continue
        for k in info:
            if (isinstance(k, str) and any(w in k.lower() for w in ("cam", "intrinsic", "focal"))
                    and not k.lower().endswith(("_idx", "_id", "_ids", "_name", "_index"))):
                found[k] = found.get(k, 0) + 1
    if not found:
        return []
    keys = ", ".join(f"{k!r} ({n} image{'s' if n != 1 else ''})" for k, n in sorted(found.items()))
    return [InputProblem(str(coco.path), f"image entries hold {keys}, which fit3d does not read: intrinsics are read "
                         "from 'cam_param' {\"focal\": [fx, fy], \"princpt\": [cx, cy]}; these images are fitted "
                         "with the image diagonal as focal length and the centre as principal point", "warning")]


def json_image_size(info: dict) -> tuple[float, float] | None:
    """``(width, height)`` of a COCO image entry when both are numbers."""
    w, h = info.get("width"), info.get("height")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (w, h))
    return (w, h) if ok else None
