"""Whole-process throughput of the fitting commands: ``fit3d eft|smplify`` on N people.

What a user waits for: Python start, model load, reading the annotations and
image headers, fitting, writing every ``.npz`` and the summary. The data set is
N synthetic people of the held-out test subjects (realistic annotator noise), one
per image, written as a COCO keypoint file whose category names the keypoints
(fit3d reads layouts by name) with blank JPEG images of the right size. Each
command runs in a fresh process (after one warm-up process that imports torch and
loads the body model, so that no command pays for a cold file cache), with
``--overwrite``; wall time is measured around it and the fit count read from its
``summary.json``.

    python benchmarks/bench_process.py [--people 500] [--commands "eft;eft --finetune fast;smplify"]

The last column is each command's whole-process fits/s over the first command's, measured in
the same run (so put the reference first, e.g. ``"eft --workers 1;eft"``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_dataset(root: Path, people: int, seed: int = 3) -> Path:
    """``root/images/*.jpg`` and ``root/annotations.json`` for ``people`` synthetic people; returns the JSON."""
    import numpy as np
    from PIL import Image

    from fit3d.body_models import build_body_model
    from fit3d.evaluation.benchmark import make_benchmark
    from fit3d.mocap import bundled_pose_set
    from fit3d.mocap.pose_set import load_pose_set

    body = build_body_model("anny")
    bench = make_benchmark(load_pose_set(bundled_pose_set()), body, n=people, seed=seed, split="test",
                           with_vertices=False)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    blank: dict[tuple[int, int], Image.Image] = {}
    for i in range(people):
        w, h = (int(v) for v in bench["image_size"][i])
        name = f"{i:06d}.jpg"
        blank.setdefault((w, h), Image.new("RGB", (w, h))).save(root / "images" / name, quality=50)
        kp = np.asarray(bench["keypoints_2d"][i], dtype=float)
        labelled = kp[:, 2] > 0
        flat = np.concatenate([kp[:, :2], np.where(labelled, 2, 0)[:, None]], 1).reshape(-1)
        images.append(dict(id=i, file_name=name, width=w, height=h))
        annotations.append(dict(id=i, image_id=i, category_id=1, iscrowd=0, keypoints=flat.round(2).tolist(),
                                num_keypoints=int(labelled.sum()), bbox=[float(v) for v in bench["bbox"][i]]))
    categories = [dict(id=1, name="person", keypoints=[str(n) for n in bench["keypoint_names"]], skeleton=[])]
    path = root / "annotations.json"
    path.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return path


def run(command: str, root: Path, annotations: Path, out: Path) -> dict:
    """One fitting command as a fresh process; wall seconds, people fitted and fits/s."""
    args = [sys.executable, "-m", "fit3d.cli.main", *shlex.split(command), "--images", str(root / "images"),
            "--annotations", str(annotations), "--out", str(out), "--no-progress", "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    this = summary.get("this_run", {})
    fitted = this.get("people_fitted", 0)
    return dict(command=command, exit_code=proc.returncode, people_fitted=fitted, wall_s=round(wall, 2),
                fits_per_s_whole=round(fitted / wall, 2), fits_per_s_in_run=this.get("fits_per_second"),
                stderr_tail=proc.stderr[-300:] if proc.returncode else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=500)
    ap.add_argument("--commands", default="eft;eft --finetune fast;smplify",
                    help="';'-separated fit3d commands with their options (data options are added)")
    ap.add_argument("--work", type=Path, default=None, help="folder for the data set and outputs (default: a temp dir)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = a.work or Path(tmp)
        annotations = make_dataset(root / "data", a.people)
        subprocess.run([sys.executable, "-c", "from fit3d.body_models import build_body_model; build_body_model('anny')"],
                       check=True, capture_output=True)  # warm-up: file cache
        print("| command | people fitted | wall s | fits/s, whole process | fits/s in the run | x first |")
        print("|---|---|---|---|---|---|")
        first = None
        for k, command in enumerate(c.strip() for c in a.commands.split(";")):
            r = run(command, root / "data", annotations, root / f"out{k}")
            first = first or r["fits_per_s_whole"]
            ratio = round(r["fits_per_s_whole"] / first, 2) if first else ""
            print(f"| `fit3d {command}` | {r['people_fitted']} | {r['wall_s']} | {r['fits_per_s_whole']} | "
                  f"{r['fits_per_s_in_run']} | {ratio} |"
                  + (f" exit {r['exit_code']}: {r['stderr_tail']}" if r["exit_code"] else ""), flush=True)


if __name__ == "__main__":
    main()
