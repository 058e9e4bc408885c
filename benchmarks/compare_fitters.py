"""Every fitter on the development benchmarks: the README's accuracy table.

Benchmarks are given as ``label=path`` (``fit3d benchmark make`` files); for each
fitter and benchmark it prints PA-MPJPE-12 with a bootstrap 95 % interval of the mean, whole mocap
trials resampled (:func:`fit3d.evaluation.benchmark.mean_interval`; the number of trials is printed) (common /
rare when the benchmark marks rare people, and the rare / common ratio with its interval), MPJPE, the median reprojection error against the input keypoints,
the share of valid fits and fits/s, and writes every number to ``--json`` (with each person's
PA-MPJPE-12 and trial, for paired comparisons later).
NeuralAnnot trains its annotator on each benchmark's 2D keypoints (the 3D is only
used for scoring) with all Three Recipes, then annotates.

    fit3d benchmark make --count 300 --out /tmp/test_n1.npz                 # held-out subjects
    fit3d benchmark make --count 300 --noise 0 --out /tmp/test_n0.npz       # the same people (same count)
    fit3d benchmark make --count 300 --noise 2 --out /tmp/test_n2.npz
    fit3d benchmark make --count 300 --protocol trials-v1 --out /tmp/old.npz
    python benchmarks/compare_fitters.py new=/tmp/test_n1.npz noise-free=/tmp/test_n0.npz \\
        2x-noise=/tmp/test_n2.npz old=/tmp/old.npz --json /tmp/compare.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np

FITTERS = ("SMPLify + L2", "SMPLify + GMM", "SMPLify + VAE", "SMPLify + articulation",
           "SMPLify + GMM, no prototypes", "SMPLify + GMM, no depth flips", "regressor alone",
           "regressor alone, no flip", "EFT", "EFT, no flip", "EFT + refine", "EFT + follow", "EFT + fallback",
           "NeuralAnnot", "NeuralAnnot + refine")


def make_fitter(name: str, body, bench, epochs: int | None):
    """A fitter by table name (NeuralAnnot is trained on ``bench`` here, ``epochs`` epochs;
    None: fit3d's default, :attr:`TrainConfig.epochs`)."""
    from fit3d.evaluation.benchmark import benchmark_batch
    from fit3d.fitters.build import build_eft, build_neuralannot, build_smplify

    if name.startswith("SMPLify"):
        prior = {"L2": "l2", "GMM": "gmm", "VAE": "vae", "articulation": "articulation"}[name.split()[2].rstrip(",")]
        return build_smplify(body, prior, prototypes="no prototypes" not in name,
                             depth_flips="no depth flips" not in name)
    if name.startswith("regressor alone"):
        return build_eft(body, steps=0, flip="no flip" not in name)
    if name.startswith("EFT"):
        return build_eft(body, refine=name.endswith("refine"), flip="no flip" not in name,
                         follow=name.endswith("follow"), fallback=name.endswith("fallback"))
    if name.startswith("NeuralAnnot"):
        length = {} if epochs is None else {"epochs": epochs}
        annot = build_neuralannot(body, refine=name.endswith("refine"), **length)
        target = benchmark_batch(bench, np.arange(len(bench["keypoints_2d"])), body.keypoint_convention)
        t0 = time.perf_counter()
        annot.fit_dataset(target, progress=False)
        annot.train_seconds = time.perf_counter() - t0
        return annot
    raise KeyError(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("benches", nargs="+", help="label=path")
    ap.add_argument("--only", default=None, help="subset of the fitters, separated by ';' (or by ',' when no "
                                                 "name has a comma): " + "; ".join(FITTERS))
    ap.add_argument("--limit", type=int, default=None, help="the first N people of each file (N >= 1)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="NeuralAnnot epochs (default: fit3d's, fit3d.fitters.neuralannot.TrainConfig.epochs)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    from fit3d.body_models import build_body_model
    from fit3d.evaluation.benchmark import benchmark_subset, load_benchmark, run_benchmark

    if a.limit is not None and a.limit < 1:
        ap.error("--limit must be >= 1")
    labelled = [b.split("=", 1) for b in a.benches]
    if any(len(pair) != 2 or not pair[0] for pair in labelled):
        ap.error("give each benchmark file as label=path (e.g. new=/tmp/test_n1.npz)")
    benches = dict(labelled)
    if len(benches) < len(labelled):
        ap.error("each label once: a repeated label would replace the file before it")
    wanted = None if not a.only else _wanted(a.only)
    unknown = set(wanted or []) - set(FITTERS)
    if unknown:
        ap.error(f"unknown fitters {sorted(unknown)}; known: {'; '.join(FITTERS)}")
    names = [n for n in FITTERS if wanted is None or n in wanted]
    loaded = {}
    for label, path in benches.items():  # (every file read before any fitting: a bad one stops at once)
        try:
            loaded[label] = load_benchmark(path)
        except (ValueError, FileNotFoundError) as e:
            ap.error(str(e))
        if str(loaded[label].get("model", "anny")) != "anny":
            ap.error(f"{path} was made with the {loaded[label]['model']} body model; this script fits anny "
                     "(use fit3d benchmark run --model-path for another model)")
    body = build_body_model("anny")
    results: dict = {}
    for label, path in benches.items():
        bench = loaded[label]
        if a.limit is not None:
            bench = benchmark_subset(bench, a.limit)
        trials = len(np.unique(bench["trial"])) if "trial" in bench else "?"
        print(f"\n{label}: {len(bench['keypoints_2d'])} people of {trials} trials ({path})", flush=True)
        print("| fitter | PA-MPJPE-12 [95 % CI by trial] (common / rare) | rare / common [95 % CI] | MPJPE | "
              "reprojection median px | valid | fits/s |")
        print("|---|---|---|---|---|---|---|")
        for name in names:
            fitter = make_fitter(name, body, bench, a.epochs)
            res = run_benchmark(bench, fitter, body, with_pve=False)
            s = dict(res["summary"])
            if hasattr(fitter, "train_seconds"):  # NeuralAnnot: training counts in its speed
                s["fits_per_s"] = s["count"] / (s["seconds"] + fitter.train_seconds)
            s["per_person_pa_mpjpe"] = res["per_person"]["pa_mpjpe"].tolist()
            if "trial" in bench:
                s["per_person_trial"] = np.asarray(bench["trial"]).astype(str).tolist()
            results.setdefault(label, {})[name] = s
            split = (f" ({s['pa_mpjpe_common']:.1f} / {s['pa_mpjpe_rare']:.1f})" if "pa_mpjpe_rare" in s else "")
            lo, hi = s["pa_mpjpe_ci95"]
            ratio = (f"{s['rare_ratio']:.2f} [{s['rare_ratio_ci95'][0]:.2f}-{s['rare_ratio_ci95'][1]:.2f}]"
                     if "rare_ratio" in s else "-")
            unscored = f" ({s['unscored']} unscored: non-finite)" if s["unscored"] else ""
            print(f"| {name} | {s['pa_mpjpe']:.1f} [{lo:.1f}-{hi:.1f}]{split}{unscored} | {ratio} | {s['mpjpe']:.1f} | "
                  f"{s['reproj_median_px']:.2f} | {s['share_valid']:.3f} | {s['fits_per_s']:.2f} |", flush=True)
    if a.json:
        from fit3d.data.writers import write_json

        write_json(a.json, results, strict=True)  # (NaN as null, as fit3d benchmark run --out writes it)


def _wanted(only: str) -> list[str]:
    """The fitters ``--only`` names: one fitter's exact name (commas and all), or names separated by
    ';' (or by ',' when no ';' is given); empty pieces are ignored."""
    if only.strip() in FITTERS:
        return [only.strip()]
    return [w.strip() for w in only.split(";" if ";" in only else ",") if w.strip()]


if __name__ == "__main__":
    main()
