"""EFT throughput: fits/s and peak memory per batch size and configuration, side by side.

Synthetic people from the training mocap trials, the bundled regressor, 30
fine-tuning steps. Configurations: ``vmap`` (every weight, evaluated with
``torch.func.vmap`` as before 2026-11-30: the reference the ratios are taken to),
``all`` (every weight, fit3d's per-person layers; ``fit3d eft --no-flip``), ``flip``
(``all`` through :class:`~fit3d.regressors.flip.FlipAveraged`: ``fit3d eft``'s default since
2026-12-01), ``fast`` (``--finetune fast --no-flip``) and ``fast-flip`` (``fast`` through the flip
average: ``fit3d eft --finetune fast``). Each runs in a fresh subprocess (CPU peak = max RSS of that
process; CUDA peak = torch's allocator peak).

    python benchmarks/bench_eft.py [--device cpu|cuda] [--batch-sizes 1,16,64,256] \
        [--configs vmap,all,flip,fast,fast-flip]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from bench_smplify import run_one

CONFIGS = ("vmap", "all", "flip", "fast", "fast-flip")


def one(device: str, batch_size: int, steps: int, config: str) -> dict:
    import numpy as np
    import torch

    from fit3d.body_models import build_body_model
    from fit3d.evaluation.benchmark import benchmark_batch
    from fit3d.training.synthetic import make_synthetic_benchmark
    from fit3d.fitters import EFT
    from fit3d.mocap import bundled_pose_set
    from fit3d.mocap.pose_set import load_pose_set
    from fit3d.regressors import bundled_regressor
    from fit3d.regressors.io import load_regressor

    body = build_body_model("anny", device=device)
    n = max(batch_size, 16) if batch_size == 1 else batch_size
    bench = make_synthetic_benchmark(load_pose_set(bundled_pose_set()), body, n=n, seed=5, split="train",
                                     with_vertices=False)
    from fit3d.fitters.eft import FINETUNE_PRESETS
    from fit3d.regressors.plain import PlainRegressor

    reg = load_regressor(bundled_regressor())
    preset = FINETUNE_PRESETS["fast" if config.startswith("fast") else "all"]
    if config == "vmap":  # one network (an ensemble's first member): the functional_call reference
        reg = PlainRegressor(getattr(reg, "first", reg))
    elif config.endswith("flip"):  # flip-averaged, as fit3d eft by default since 2026-12-01
        from fit3d.regressors.flip import FlipAveraged

        reg = FlipAveraged(reg, body)
    eft = EFT(body, reg, steps=steps, lr=preset.lr, finetune=preset.names, accept_ratio=preset.accept_ratio)
    if device.startswith("cuda"):
        eft(benchmark_batch(bench, np.arange(1), body.keypoint_convention, device))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    done = 0
    for s in range(0, n, batch_size):  # batch size 1: one person at a time
        eft(benchmark_batch(bench, np.arange(s, min(s + batch_size, n)), body.keypoint_convention, device))
        done += min(batch_size, n - s)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dt = time.perf_counter() - t
    return dict(device=device, config=config, batch_size=batch_size, people=done, seconds=round(dt, 3),
                fits_per_s=round(done / dt, 3), steps_per_s=round(done * steps / dt, 1), peak_memory_mb=round(peak, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", default="1,16,64,256")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per run; larger batch sizes are skipped after one times out or fails")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--config", default="all", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one(a.device, a.one, a.steps, a.config)))
        return
    print(f"{'device':8} {'config':6} {'B':>5} {'fits/s':>8} {'steps/s':>9} {'peak MiB':>9}  ratio")
    stopped = False
    configs = a.configs.split(",")
    if set(configs) - set(CONFIGS):
        ap.error(f"unknown --configs {sorted(set(configs) - set(CONFIGS))}; known: {', '.join(CONFIGS)}")
    for b in (int(x) for x in a.batch_sizes.split(",")):
        base = None  # the first configuration's rate at this batch size
        for k, config in enumerate(configs):
            r = run_one([sys.executable, __file__, "--device", a.device, "--one", str(b), "--steps", str(a.steps),
                         "--config", config], a.timeout)
            if "error" in r:
                print(f"{a.device:8} {config:6} {b:>5} stopped: {r['error']}", flush=True)
                stopped = True
                continue
            if k == 0:
                base = r["fits_per_s"]
            ratio = f"x{r['fits_per_s'] / base:.2f}" if base else "n/a"
            print(f"{r['device']:8} {config:6} {b:>5} {r['fits_per_s']:>8.2f} {r['steps_per_s']:>9.1f} "
                  f"{r['peak_memory_mb']:>9.0f}  {ratio} vs {configs[0]}", flush=True)
        if stopped:
            break


if __name__ == "__main__":
    main()
