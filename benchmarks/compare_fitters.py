"""Every fitter and prior on one synthetic benchmark: the README's comparison table.

    fit3d benchmark make --split test --count 500 --seed 0 --out /tmp/bench_test.npz
    python benchmarks/compare_fitters.py --bench /tmp/bench_test.npz
"""

from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--only", default=None, help="comma-separated subset of the rows' names")
    a = ap.parse_args()

    from fit3d.body_models import build_body_model
    from fit3d.evaluation.benchmark import load_benchmark, run_benchmark
    from fit3d.fitters import EFT, SMPLify
    from fit3d.priors import build_prior
    from fit3d.regressors import bundled_regressor
    from fit3d.training.regressor import load_regressor

    bench = load_benchmark(a.bench)
    body = build_body_model("anny")
    reg = load_regressor(bundled_regressor())
    rows = {
        "SMPLify + L2": lambda: SMPLify(body, prior=build_prior("l2", body)),
        "SMPLify + GMM": lambda: SMPLify(body, prior=build_prior("gmm", body)),
        "SMPLify + VAE": lambda: SMPLify(body, prior=build_prior("vae", body)),
        "SMPLify + articulation": lambda: SMPLify(body, prior=build_prior("articulation", body)),
        "regressor alone": lambda: EFT(body, reg, steps=0),
        "EFT (30 steps)": lambda: EFT(body, reg),
    }
    only = set(a.only.split(",")) if a.only else None
    print(f"{len(bench['keypoints_2d']) if a.limit is None else a.limit} people, {a.bench}")
    print("| fitter | MPJPE (mm) | PA-MPJPE (mm) | PVE (mm) | 2D error (px) | PCK@0.05 | fits/s |")
    print("|---|---|---|---|---|---|---|")
    for name, make in rows.items():
        if only and name not in only:
            continue
        s = run_benchmark(bench, make(), body, limit=a.limit)["summary"]
        print(f"| {name} | {s['mpjpe']:.1f} | {s['pa_mpjpe']:.1f} | {s.get('pve', float('nan')):.1f} | "
              f"{s['error_2d_px']:.2f} | {s['pck_05']:.3f} | {s['fits_per_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
