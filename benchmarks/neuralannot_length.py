"""NeuralAnnot's 3D error after each epoch of training, on validation benchmarks.

Trains NeuralAnnot (all Three Recipes, no people held out) on each benchmark's 2D
keypoints one epoch at a time and scores it after each (PA-MPJPE-12, mm): how the
accuracy depends on the training length, which ``TrainConfig.stop_tolerance`` chooses
from a held-out 2D loss. Weights come from ``--weights`` (``anny_vae.pt`` and the regressor, e.g.
``benchmarks/train_tuning_weights.py --kinds vae,regressor``: trained without the validation
subjects), so use ``--split val`` benchmarks. Each
epoch is a new :meth:`~fit3d.fitters.neuralannot.NeuralAnnot.fit_dataset` call, which trains
on with the same Adam state, as a run of that length would (since 2026-12-04; before, each call
restarted Adam, and the table in ``docs/experiments.md`` was measured so).

    python benchmarks/train_tuning_weights.py --out /tmp/tw --kinds vae,regressor
    fit3d benchmark make --split val --subjects 01 --noise 0 --count 200 --out /tmp/v01_n0.npz
    python benchmarks/neuralannot_length.py --weights /tmp/tw --bench /tmp/v01_n0.npz --epochs 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    """Parse the options, train and score per epoch, print (and with ``--json`` write) the curves."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--bench", nargs="+", required=True)
    ap.add_argument("--regressor", default="anny_keypoint_regressor.pt", help="file in --weights")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tune_smplify import _regressor

    from fit3d.body_models import build_body_model
    from fit3d.evaluation.benchmark import benchmark_batch, load_benchmark, run_benchmark
    from fit3d.fitters.neuralannot import RECIPES, NeuralAnnot, TrainConfig
    from fit3d.mocap import bundled_pose_set
    from fit3d.mocap.pose_set import load_pose_set
    from fit3d.priors.io import load_prior

    body = build_body_model("anny")
    pose_set = dict(load_pose_set(bundled_pose_set()))
    pose_set["split"] = np.where(pose_set["split"] == "val", "test", pose_set["split"])  # never read, as test
    vae = load_prior(a.weights / "anny_vae.pt")
    curves = {}
    for path in a.bench:
        bench = load_benchmark(path)
        target = benchmark_batch(bench, np.arange(len(bench["keypoints_2d"])), body.keypoint_convention)
        annot = NeuralAnnot(body, _regressor(a.weights, {"regressor": a.regressor}), RECIPES, pose_set=pose_set,
                            prior=vae, config=TrainConfig(holdout=0, epochs=0))
        curve = []
        for epochs in range(a.epochs + 1):
            annot.config.epochs = epochs
            annot.fit_dataset(target, progress=False)
            curve.append(round(run_benchmark(bench, annot, body, with_pve=False)["summary"]["pa_mpjpe"], 1))
        curves[Path(path).stem] = curve
        print(f"{Path(path).stem}: PA-MPJPE-12 after 0..{a.epochs} epochs: {curve}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(curves, indent=1))


if __name__ == "__main__":
    main()
