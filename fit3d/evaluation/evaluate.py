"""Score a folder of fits against ground truth: COCO JSON (2D) or a SPIN npz (3D + 2D).

Fits are matched to ground truth by the image's path relative to the image folder
(COCO ``file_name``, SPIN ``imgname``) and, by default, the annotation id (COCO ``id``; SPIN: the
file's ``annot_id`` column, which ``fit3d export --format spin`` writes, else the row index,
as :func:`fit3d.data.spin.read_spin` assigns). COCO annotation ids are unique
within a file; ids used more than once are flagged by the reader (as when fitting) and
those people are left out on both sides and counted as ``duplicate_ids``. A SPIN file's ids
need be unique only within an image (an export of fits from OpenPose numbers people per
image), since people are matched by image and id: only an ``(imgname, annot_id)`` pair used
more than once is a duplicate. 3D metrics (MPJPE, PA-MPJPE) need 3D ground truth: SPIN's
``S`` (24, 4) joints, which SPIN's own dataset files hold and ``fit3d export --format spin``
does not write; without it only the 2D metrics are computed. Fits of other people's numbering (a
detector's keypoints: OpenPose numbers people per image) are matched within each image by where
their keypoints lie instead (``match="keypoints"``, :func:`match_by_keypoints`). Metrics are
computed on the fitted people;
``share_fitted`` and ``share_valid`` say how many ground-truth people that is (``valid``: how many
fits are valid).
"""

from __future__ import annotations

import csv
import posixpath
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from fit3d.data.boxes import checked_bbox
from fit3d.data.coco import coco_image_key, coco_keypoints, json_image_size, load_coco
from fit3d.data.conventions import COCO17, LIMBS12
from fit3d.data.writers import read_fit, require_fit_files
from fit3d.evaluation import metrics as M

JOINT_SETS = {"limbs12": LIMBS12, "coco17": COCO17.names}


def load_fit_people(fits_dir: str | Path, unreadable: list[str] | None = None) -> dict[tuple[str, int], dict | None]:
    """``{(image path, annot_id): person}`` over every ``.npz`` of ``fits_dir``; None for
    keys that several people of one file share (duplicate annotation ids). Unreadable files are skipped
    (their paths, relative to ``fits_dir``, appended to ``unreadable``): their people count as not fitted.

    Raises:
        ValueError: ``fits_dir`` holds no per-image ``.npz``, or one image's people are in several
            fit files (two runs in one folder: which fit is scored would be a guess).
    """
    people: dict = {}
    source: dict[str, Path] = {}  # image -> the fit file its people came from
    for f in require_fit_files(fits_dir):
        try:
            d = read_fit(f)
            names = [str(n) for n in d["keypoint_names"]]
            rows = [(int(d["annot_id"][i]), dict(
                status=str(d["status"][i]), valid=bool(d["valid"][i]), names=names,
                keypoints_3d=d["keypoints_3d"][i], keypoints_2d_fit=d["keypoints_2d_fit"][i],
                keypoints_2d=d["keypoints_2d"][i] if "keypoints_2d" in d else None,  # (match="keypoints")
            )) for i in range(len(d["annot_id"]))]
        except Exception:  # noqa: BLE001 - a corrupt output is not a fitted person
            if unreadable is not None:
                unreadable.append(f.relative_to(fits_dir).as_posix())
            continue
        image = str(d["image"])
        if source.setdefault(image, f) != f:
            raise ValueError(f"the people of image {image} are in two fit files, {source[image].relative_to(fits_dir)} "
                             f"and {f.relative_to(fits_dir)} (two runs in one folder?): evaluate one run's folder")
        for aid, person in rows:
            key = (image, aid)
            people[key] = None if key in people else person
    return people


def _gt_coco(path: Path, problems: list) -> list[dict]:
    """Ground-truth people of a COCO file, read and checked as ``fit3d`` reads its inputs
    (:func:`fit3d.data.coco.load_coco`): annotations that could not be fitted either
    (unreadable keypoints, non-integer ids, unknown images) are not ground truth; the reader's
    problems are appended to ``problems``."""
    coco, found = load_coco(path)
    problems.extend(found)
    rows: list[dict] = []
    for img_id, anns in coco.annotations.items():
        info = coco.images[img_id]
        size = json_image_size(info) or (np.inf, np.inf)  # no size: any box inside the image
        for i, a in anns:
            parsed = coco_keypoints(a, coco, problems, f"{path.name}#annotations[{i}]", json_image_size(info))
            if parsed is None:
                continue
            kp, conv, annot_id, _, _ = parsed  # (unusable coordinates unlabelled, as the reader stores them)
            rows.append(dict(image=coco_image_key(info["file_name"]), annot_id=annot_id, names=list(conv.names), keypoints_2d=kp,
                             bbox=checked_bbox(a.get("bbox"), kp, size)[0], joints_3d=None))
    count = Counter((r["image"], r["annot_id"]) for r in rows)  # people are matched by image and id
    for r in rows:
        r["duplicate"] = count[(r["image"], r["annot_id"])] > 1
    return rows


def _gt_spin(path: Path) -> list[dict]:
    """Ground-truth people of a SPIN ``.npz`` (:func:`fit3d.data.spin.load_spin_npz`): 2D ``part``,
    3D ``S`` when the file has it, the box SPIN's ``scale`` was made from (its side over
    :data:`~fit3d.data.spin.SPIN_SCALE_FACTOR`, as PCK's reference is the person's box); ``duplicate``
    when another row has the same image and id."""
    from fit3d.data.conventions import SPIN24
    from fit3d.data.spin import SPIN_SCALE_FACTOR, load_spin_npz, spin_annot_ids, spin_bbox, spin_keypoints

    d = load_spin_npz(path)
    # the person's box for PCK and matching: SPIN's scale holds its 1.2x crop (a COCO box is the person's)
    boxes = spin_bbox(d["center"], np.asarray(d["scale"], dtype=np.float64) / SPIN_SCALE_FACTOR)
    ids = spin_annot_ids(d)
    names = [posixpath.normpath(str(n)) for n in d["imgname"]]  # ('./a.jpg' is the reader's 'a.jpg')
    count = Counter(zip(names, ids.tolist()))  # people are matched by image and id
    rows = []
    for i, name in enumerate(names):
        kp, _ = spin_keypoints(d["part"][i])  # the annotations, as the SPIN reader reads part (not the detections)
        rows.append(dict(image=str(name), annot_id=int(ids[i]), names=list(SPIN24.names), keypoints_2d=kp,
                         bbox=boxes[i], joints_3d=d["S"][i] if "S" in d else None,
                         duplicate=count[(str(name), int(ids[i]))] > 1))
    return rows


def load_ground_truth(path: str | Path, problems: list | None = None) -> list[dict]:
    """Ground-truth people from a COCO ``.json`` or a SPIN ``.npz``.

    Args:
        problems: receives the :class:`~fit3d.data.records.InputProblem` of a COCO file's entries
            that are not ground truth (errors: unreadable keypoints, unknown images...; warnings).
    Raises:
        ValueError: unsupported file type.
    """
    path = Path(path)
    if path.suffix == ".json":
        return _gt_coco(path, [] if problems is None else problems)
    if path.suffix == ".npz":
        return _gt_spin(path)
    raise ValueError(f"ground truth must be a COCO .json or a SPIN .npz, not {path.name}")


def _pick(arr: np.ndarray, names: list[str], wanted) -> np.ndarray:
    return arr[[names.index(w) for w in wanted]]


#: ``match="keypoints"`` pairs a fitted person with a ground-truth one of its image when the median
#: distance between their common labelled keypoints is under this share of the ground truth's box
#: diagonal (a detection of that person is a few per cent off; another person's, tens).
MATCH_FRACTION = 0.15


def _keypoint_distance(fit: dict, gt: dict) -> float:
    """Median distance between the input keypoints of a fit row and a ground-truth row on the
    points both label (at least 3), over the ground truth's box diagonal; inf with fewer."""
    common = [n for n in gt["names"] if n in fit["names"]]
    if len(common) < 3 or fit["keypoints_2d"] is None:
        return float("inf")
    a = _pick(np.asarray(fit["keypoints_2d"], dtype=np.float64), fit["names"], common)
    b = _pick(np.asarray(gt["keypoints_2d"], dtype=np.float64), gt["names"], common)
    both = (a[:, 2] > 0) & (b[:, 2] > 0) & np.isfinite(a).all(1) & np.isfinite(b).all(1)
    diagonal = float(np.hypot(*np.asarray(gt["bbox"], dtype=np.float64)[2:]))
    if both.sum() < 3 or not diagonal > 0:
        return float("inf")
    return float(np.median(np.linalg.norm(a[both, :2] - b[both, :2], axis=1)) / diagonal)


def match_by_keypoints(fits: dict, ground_truth: list[dict]) -> dict:
    """The fit rows re-keyed by the ground-truth person each one is matched to: within each image,
    a one-to-one assignment (Hungarian, ``scipy.optimize.linear_sum_assignment``) minimising the
    :func:`_keypoint_distance` of the fit's input keypoints to the ground truth's, kept where it is
    under :data:`MATCH_FRACTION`. For fits whose ids are not the ground truth's: a detector's
    people (OpenPose numbers them per image), or another annotation of the same images.

    Args:
        fits: ``{(image, annot_id): row}`` (:func:`load_fit_people`; None rows are left out).
        ground_truth: rows of :func:`load_ground_truth` (duplicates are left out).
    Returns:
        ``{(image, ground-truth annot_id): row}`` for the matched rows, and ``{(image, ("unmatched",
        annot_id)): row}`` for the others (fitted people no ground truth matches).
    """
    from scipy.optimize import linear_sum_assignment

    by_image: dict[str, list] = {}
    for (image, aid), row in fits.items():
        if row is not None:
            by_image.setdefault(image, []).append((aid, row))
    gt_by_image: dict[str, list[dict]] = {}
    for g in ground_truth:
        if not g["duplicate"]:
            gt_by_image.setdefault(g["image"], []).append(g)
    out = {}
    for image, rows in by_image.items():
        gts = gt_by_image.get(image, [])
        cost = np.array([[_keypoint_distance(r, g) for g in gts] for _, r in rows]).reshape(len(rows), len(gts))
        matched = set()
        if cost.size:
            # capped at the threshold: a pair that cannot match costs what any unmatched one does, so the
            # assignment never moves a close fit onto a neighbour to avoid one (it maximised the pairs)
            capped = np.minimum(np.nan_to_num(cost, nan=MATCH_FRACTION, posinf=MATCH_FRACTION), MATCH_FRACTION)
            for i, j in zip(*linear_sum_assignment(capped)):
                if cost[i, j] < MATCH_FRACTION:
                    out[(image, gts[j]["annot_id"])] = rows[i][1]
                    matched.add(i)
        for i, (aid, row) in enumerate(rows):
            if i not in matched:
                out[(image, ("unmatched", aid))] = row
    return out


def evaluate(fits_dir: str | Path, gt_path: str | Path, joints: str = "limbs12",
             match: str = "ids") -> tuple[dict, list[dict]]:
    """``(summary, rows)``: the summary (means over fitted people; mm and px) and the per-person rows.

    The summary also says what could not be scored: ``unreadable_fits`` (files; their people
    count as not fitted), ``ground_truth_left_out`` (COCO entries that are no ground truth, with
    the reason), ``duplicate_ids``, ``fitted_without_common_keypoints`` (fits whose keypoint
    layout shares no name with the ground truth's: no 2D error), ``unscored_3d`` (fitted people with 3D
    ground truth without a finite MPJPE and PA-MPJPE: fitted joints not finite, fewer than 4 labelled 3D
    joints, no labelled hip for MPJPE's root, a joint of the set the fit lacks; left out of the 3D means,
    which a fitter with any therefore flatters), ``people_per_metric`` (the people behind each mean),
    ``nonfinite_points_2d`` (labelled ground-truth points whose fitted point is not
    finite: misses for PCK, left out of the 2D error), and what did not match:
    ``ground_truth_without_fit`` (people with no fit row at all, counted as not fitted; not
    skipped ones, which have a row; with ``match="keypoints"`` also those no fit row was paired
    with, e.g. people skipped for having too few keypoints to pair),
    ``images_without_fits`` (their images with no readable fit file: a
    run cut by ``--limit`` or ``--shard``, fits of other images, or an unreadable fit) and ``fitted_not_in_ground_truth``
    (fitted people whose image and annotation id no ground-truth entry has: other annotations,
    or people numbered per image, as OpenPose input is).

    ``joints``: the joint set of the 3D metrics (:data:`JOINT_SETS`; the summary's ``joints``); the
    2D metrics use every point the fit and the ground truth both have and the ground truth labels.

    ``match``: ``"ids"`` (by image and annotation id, as above) or ``"keypoints"`` (within each
    image, by where the fit's input keypoints lie: :func:`match_by_keypoints`; for fits of a
    detector's keypoints scored against annotations).

    Raises:
        KeyError: unknown joint set. ValueError: bad ground-truth file, no fit file in ``fits_dir``,
            fitted people of whom none matches a ground-truth person (another annotation file:
            nothing to score), or an unknown ``match``. FileNotFoundError: no ground-truth file at
            ``gt_path``.
    """
    if match not in ("ids", "keypoints"):
        raise ValueError(f"match must be 'ids' or 'keypoints', not {match!r}")
    if joints not in JOINT_SETS:
        raise KeyError(f"unknown joint set {joints!r}: one of {', '.join(JOINT_SETS)}")
    wanted = JOINT_SETS[joints]
    unreadable: list[str] = []
    fits = load_fit_people(fits_dir, unreadable)
    rows = []
    duplicates = no_common = nonfinite_2d = unscored_3d = 0
    problems: list = []
    seen, unmatched, gt_images = set(), 0, set()
    ground_truth = load_ground_truth(gt_path, problems)
    if match == "keypoints":
        fits = match_by_keypoints(fits, ground_truth)
    for g in ground_truth:
        key = (g["image"], g["annot_id"])
        seen.add(key)
        if key not in fits and not g["duplicate"]:
            unmatched += 1
            gt_images.add(g["image"])
        if g["duplicate"] or (key in fits and fits[key] is None):
            duplicates += 1
            continue
        f = fits.get(key)
        row = dict(image=g["image"], annot_id=g["annot_id"], fitted=bool(f and f["status"] == "fitted"),
                   valid=bool(f and f["valid"]))
        if row["fitted"]:
            common = [n for n in g["names"] if n in f["names"]]
            no_common += not common
            gt2 = torch.as_tensor(_pick(g["keypoints_2d"], g["names"], common))[None]
            p2 = torch.as_tensor(_pick(f["keypoints_2d_fit"], f["names"], common))[None]
            ok = torch.isfinite(p2).all(-1)
            nonfinite_2d += int((~ok & (gt2[..., 2] > 0)).sum())
            box = torch.as_tensor(g["bbox"])[None]
            far = torch.where(ok[..., None], p2, torch.full_like(p2, 1e9))  # a point not fitted: a miss for PCK
            seen2 = gt2.clone()
            seen2[..., 2] *= ok.to(gt2)  # ... and left out of the mean 2D error (it has no distance)
            row.update(error_2d_px=float(M.reprojection_px(torch.nan_to_num(p2), seen2)[0]),
                       pck_05=float(M.pck(far, gt2, box, 0.05)[0]), pck_10=float(M.pck(far, gt2, box, 0.1)[0]))
            if g["joints_3d"] is not None and all(w in g["names"] and w in f["names"] for w in wanted):
                S = _pick(g["joints_3d"], g["names"], wanted)
                P = _pick(f["keypoints_3d"], f["names"], wanted)
                conf = S[:, 3] > 0
                if conf.sum() >= 4 and np.isfinite(P).all():
                    gt3 = torch.as_tensor(S[None, :, :3], dtype=torch.float32)
                    pr3 = torch.as_tensor(P[None], dtype=torch.float32)
                    v = torch.as_tensor(conf[None])
                    hips = (wanted.index("left_hip"), wanted.index("right_hip"))
                    row.update(mpjpe=float(M.mpjpe(pr3, gt3, hips, v)[0]), pa_mpjpe=float(M.pa_mpjpe(pr3, gt3, v)[0]))
            if g["joints_3d"] is not None:  # 3D truth, no finite score: counted, never left out in silence
                unscored_3d += not all(np.isfinite(row.get(k, np.nan)) for k in ("mpjpe", "pa_mpjpe"))
        rows.append(row)
    n = len(rows)
    fitted = [r for r in rows if r["fitted"]]
    valid = sum(r["valid"] for r in rows)
    summary = dict(count=n, fitted=len(fitted), share_fitted=len(fitted) / n if n else 0.0,
                   share_valid=valid / n if n else 0.0, valid=valid, joints=joints,
                   duplicate_ids=duplicates, unreadable_fits=unreadable,
                   ground_truth_left_out=[f"{p.source}: {p.reason}" for p in problems if p.severity == "error"],
                   fitted_without_common_keypoints=no_common, ground_truth_without_fit=unmatched,
                   unscored_3d=unscored_3d, nonfinite_points_2d=nonfinite_2d,
                   images_without_fits=len(gt_images - {image for image, _ in fits}),
                   fitted_not_in_ground_truth=sum(1 for k, f in fits.items()
                                                  if k not in seen and f is not None and f["status"] == "fitted"))
    if not any(k in seen for k in fits) and summary["fitted_not_in_ground_truth"]:
        n = summary["fitted_not_in_ground_truth"]
        how = ("image and annotation id" if match == "ids" else "image and keypoints")
        raise ValueError(f"none of the {n} fitted people in {fits_dir} matches a ground-truth person of {gt_path} by "
                         f"{how}: is it the annotation file these fits were made from?"
                         + (" (fits of OpenPose or detector keypoints: --match keypoints)" if match == "ids" else ""))
    summary["people_per_metric"] = {}
    for k in ("mpjpe", "pa_mpjpe", "error_2d_px", "pck_05", "pck_10"):
        vals = [r[k] for r in fitted if k in r and np.isfinite(r[k])]
        summary[k] = float(np.mean(vals)) if vals else None
        summary["people_per_metric"][k] = len(vals)
    return summary, rows


def write_per_sample(rows: list[dict], path: str | Path) -> None:
    """One CSV row per ground-truth person, written atomically (a reader never sees half a file)."""
    import io

    from fit3d.data.writers import atomic_write_bytes

    keys = ["image", "annot_id", "fitted", "valid", "mpjpe", "pa_mpjpe", "error_2d_px", "pck_05", "pck_10"]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in keys})
    atomic_write_bytes(path, buf.getvalue().encode())
