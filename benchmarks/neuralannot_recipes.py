"""NeuralAnnot on a synthetic benchmark's 2D keypoints (its 3D is used only for scoring),
with each of the Three Recipes switched off in turn.

    python benchmarks/neuralannot_recipes.py --bench /tmp/bench_test.npz --epochs 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--epochs", type=int, default=None, help="default: fit3d's (TrainConfig.epochs)")
    ap.add_argument("--configs", default="depth+pretrain+prior,pretrain+prior,depth+prior,depth+pretrain")
    a = ap.parse_args()

    from fit3d.body_models import build_body_model
    from fit3d.evaluation.benchmark import benchmark_batch, load_benchmark, run_benchmark
    from fit3d.fitters.neuralannot import NeuralAnnot, TrainConfig
    from fit3d.mocap import bundled_pose_set
    from fit3d.priors import build_prior
    from fit3d.regressors import bundled_regressor
    from fit3d.mocap.pose_set import load_pose_set
    from fit3d.regressors.io import load_regressor

    epochs = TrainConfig.epochs if a.epochs is None else a.epochs
    bench = load_benchmark(a.bench)
    body = build_body_model("anny")
    n = len(bench["keypoints_2d"])
    target = benchmark_batch(bench, np.arange(n), body.keypoint_convention)
    ps = load_pose_set(bundled_pose_set())
    print(f"{n} people; {epochs} epochs")
    print("| recipes | MPJPE (mm) | PA-MPJPE (mm) | 2D error (px) | train s | annotate fits/s | total s per person |")
    print("|---|---|---|---|---|---|---|")
    for cfg in a.configs.split(","):
        rec = set(cfg.split("+")) - {""}
        # accept_ratio=None: the annotations themselves (without the pretrain recipe there is no
        # prediction to fall back to, so the per-person choice would confound the comparison)
        annot = NeuralAnnot(body, load_regressor(bundled_regressor()), rec, ps,
                            build_prior("vae", body) if "prior" in rec else None, TrainConfig(epochs=epochs),
                            accept_ratio=None)
        t = time.perf_counter()
        annot.fit_dataset(target, progress=False)
        train_s = time.perf_counter() - t
        s = run_benchmark(bench, annot, body)["summary"]
        total = (train_s + s["seconds"]) / n
        print(f"| {cfg or 'none'} | {s['mpjpe']:.1f} | {s['pa_mpjpe']:.1f} | {s['error_2d_px']:.2f} | {train_s:.0f} | "
              f"{s['fits_per_s']:.0f} | {total:.3f} |", flush=True)


if __name__ == "__main__":
    main()
