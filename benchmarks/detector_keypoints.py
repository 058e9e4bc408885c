"""Fits from a detector's keypoints, scored against human annotations of the same people.

MediaPipe Pose (BlazePose, 33 landmarks; ``pip install mediapipe==0.10.14``, whose wheel holds
the model: complexity 1 runs offline) detects one person per image of a COCO-format folder; its
landmarks are written as COCO JSON with BlazePose's names and the score in the visibility
flag's place (``--mode score``: kept as the confidence; ``--mode bin``: 2 at or above the
threshold, else 0), points under ``--thresholds`` dropped; ``fit3d eft|smplify`` fits them
(box built from the keypoints); each detection is matched to the annotated person whose
labelled points its confident landmarks lie closest to (median distance under 15 % of that
person's box diagonal), and the fit's reprojected COCO-17 points are compared with all of that
person's labelled points: mean distance as % of the annotated box diagonal, PCK at 5 %.

    python benchmarks/detector_keypoints.py --data path/to/coco_mini --split val \\
        --fitter eft --mode score --thresholds 0.0001,0.3 [--fit-args "--finetune all"]

README ("Keypoints from a detector") has the numbers of 2026-12-03.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
from pathlib import Path

import numpy as np

COCO17 = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
          "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
          "left_ankle", "right_ankle"]


def detect(images: Path, out: Path) -> dict:
    """MediaPipe Pose on every ``.jpg`` of ``images``: ``{names, images: [{file, width, height,
    landmarks: [[x px, y px, visibility, presence], ...] or None}]}``, cached in ``out``."""
    if out.exists():
        return json.loads(out.read_text())
    import cv2
    import mediapipe as mp

    res = {"names": [lm.name.lower() for lm in mp.solutions.pose.PoseLandmark], "images": []}
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, min_detection_confidence=0.5) as pose:
        for f in sorted(images.glob("*.jpg")):
            img = cv2.imread(str(f))
            h, w = img.shape[:2]
            r = pose.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            lms = None if not r.pose_landmarks else [[p.x * w, p.y * h, p.visibility, p.presence]
                                                     for p in r.pose_landmarks.landmark]
            res["images"].append(dict(file=f.name, width=w, height=h, landmarks=lms))
    out.write_text(json.dumps(res))
    return res


def write_coco(raw: dict, tau: float, mode: str, path: Path) -> None:
    """The detections as COCO JSON (no box: fit3d builds it from the kept points)."""
    images, anns = [], []
    for i, e in enumerate(raw["images"], 1):
        images.append(dict(id=i, file_name=e["file"], width=e["width"], height=e["height"]))
        if e["landmarks"] is None:
            continue
        kps = []
        for x, y, vis, _ in e["landmarks"]:
            kept = vis >= tau
            kps += [round(x, 2), round(y, 2), (2 if kept else 0) if mode == "bin" else (round(vis, 4) if kept else 0)]
        anns.append(dict(id=1000 + i, image_id=i, category_id=1, keypoints=kps, iscrowd=0))
    cat = dict(id=1, name="person", keypoints=raw["names"], skeleton=[])
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=[cat])))


def annotated_people(annotations: Path) -> dict:
    """file name -> [(keypoints (17, 3), bbox (4,))] of the non-crowd people with >= 4 labelled points."""
    g = json.loads(annotations.read_text())
    names = {im["id"]: im["file_name"] for im in g["images"]}
    out: dict = {}
    for a in g["annotations"]:
        kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
        if not a.get("iscrowd") and (kp[:, 2] > 0).sum() >= 4:
            out.setdefault(names[a["image_id"]], []).append((kp, np.asarray(a["bbox"], float)))
    return out


def score(raw: dict, people: dict, fits: Path) -> dict:
    """Matched detections, how many were not fitted, mean / median error (% of box diagonal), PCK@5 %."""
    idx = [raw["names"].index(n) for n in COCO17]
    errs, pck = [], []
    for e in raw["images"]:
        if e["landmarks"] is None:
            continue
        lm = np.asarray(e["landmarks"])[idx]
        best = None
        for kp, box in people.get(e["file"], []):
            m = (kp[:, 2] > 0) & (lm[:, 2] >= 0.5)
            if m.sum() >= 3:
                d = np.median(np.linalg.norm(kp[m, :2] - lm[m, :2], axis=1)) / np.hypot(box[2], box[3])
                best = (d, kp, box) if best is None or d < best[0] else best
        if best is None or best[0] > 0.15:
            continue
        f = fits / (e["file"] + ".npz")
        z = np.load(f, allow_pickle=False) if f.exists() else None
        if z is None or str(z["status"][0]) != "fitted":
            errs.append(np.nan)
            continue
        names = [str(n) for n in z["keypoint_names"]]
        fit = z["keypoints_2d_fit"][0][[names.index(n) for n in COCO17]]
        kp, box = best[1], best[2]
        m = kp[:, 2] > 0
        d = np.linalg.norm(fit[m, :2] - kp[m, :2], axis=1) / np.hypot(box[2], box[3])
        errs.append(d.mean())
        pck.append((d < 0.05).mean())
    e = np.asarray(errs)
    return dict(matched=len(e), unfitted=int(np.isnan(e).sum()), mean=float(np.nanmean(e) * 100),
                median=float(np.nanmedian(e) * 100), pck=float(np.mean(pck) * 100))


def main() -> None:
    """Detect, write, fit and score for each threshold (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True,
                    help="folder with <split>2017/ and person_keypoints_<split>2017*.json")
    ap.add_argument("--split", default="val")
    ap.add_argument("--fitter", default="eft", choices=["eft", "smplify"])
    ap.add_argument("--mode", default="score", choices=["score", "bin"])
    ap.add_argument("--thresholds", default="0.0001")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fit3d-detector-keypoints"))
    ap.add_argument("--fit-args", default="", help="further options of the fit command, e.g. '--finetune fast'")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    images = args.data / f"{args.split}2017"
    raw = detect(images, args.work / f"mediapipe_{args.split}.json")
    people = annotated_people(next(args.data.glob(f"person_keypoints_{args.split}2017*.json")))
    for tau in (float(t) for t in args.thresholds.split(",")):
        ann = args.work / f"{args.split}_{args.mode}_{tau}.json"
        write_coco(raw, tau, args.mode, ann)
        fits = args.work / f"fits_{args.fitter}_{args.split}_{args.mode}_{tau}"
        r = subprocess.run(["fit3d", args.fitter, "--images", str(images), "--annotations", str(ann), "--out",
                            str(fits), "--no-progress", "--workers", "1", "--overwrite", *shlex.split(args.fit_args)],
                           capture_output=True, text=True)
        s = score(raw, people, fits)
        print(f"{args.fitter} {args.split} {args.mode} threshold {tau}: exit {r.returncode}, {s['matched']} matched "
              f"({s['unfitted']} not fitted): mean {s['mean']:.2f} % of the box diagonal, median {s['median']:.2f} %, "
              f"PCK@5% {s['pck']:.1f}", flush=True)


if __name__ == "__main__":
    main()
