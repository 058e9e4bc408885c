"""Tune each pose prior's weight scale on a benchmark of *training* trials.

The held-out test benchmark is never used here. For each prior, SMPLify runs
with the default schedule and the prior's ``pose_prior`` weights multiplied
by each scale of a grid; the table gives PA-MPJPE / MPJPE / 2D error.

    fit3d benchmark make --split train --count 200 --seed 1 --no-vertices --out /tmp/bench_tune.npz
    python benchmarks/tune_priors.py --bench /tmp/bench_tune.npz
"""

from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--priors", default="l2,gmm,vae,articulation")
    ap.add_argument("--scales", default="0.1,0.3,1,3")
    ap.add_argument("--latent", action="store_true", help="tune the VAE's latent mode instead")
    a = ap.parse_args()

    from fit3d.body_models import build_body_model
    from fit3d.evaluation.benchmark import load_benchmark, run_benchmark
    from fit3d.fitters import SMPLify
    from fit3d.priors import build_prior

    bench = load_benchmark(a.bench)
    body = build_body_model("anny")
    print(f"{'prior':14} {'scale':>6} {'PA-MPJPE':>9} {'MPJPE':>8} {'2D px':>7} {'fits/s':>7}", flush=True)
    for name in a.priors.split(","):
        prior = build_prior(name, body)
        for scale in (float(x) for x in a.scales.split(",")):
            if a.latent:
                prior.latent_weight_scale = scale
            else:
                prior.weight_scale = scale
            fitter = SMPLify(body, prior=prior, pose_space="latent" if a.latent else "axis_angle")
            s = run_benchmark(bench, fitter, body, with_pve=False)["summary"]
            print(f"{name:14} {scale:>6} {s['pa_mpjpe']:>9.1f} {s['mpjpe']:>8.1f} {s['error_2d_px']:>7.2f} "
                  f"{s['fits_per_s']:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
