"""Compare SMPLify configurations on benchmarks of the *tuning* subjects (never the test ones).

Each configuration is a JSON object of overrides of the default SMPLify:
``prior`` (name), ``weight_scale``, ``prototypes`` (bool), ``prototype_starts``,
``depth_flips`` (bool), ``keep`` (orientation hypotheses kept), ``noise_threshold``, ``schedule`` (a
list of stages) and ``stages``:
``{stage name: {loss term: weight, "iterations": n, "lr": x, "keep_rows": k, "keep_after": n}}`` (any
:class:`~fit3d.fitters.Stage` number field; other names are loss terms); or, with
``"fitter": "eft"``: ``regressor`` (file in ``--weights``, or a list of files: an ensemble), ``steps``, ``lr``, ``anchor``,
``refine`` (bool; the refinement runs SMPLify's branched stages with the overrides), ``flip`` (bool,
default true as in ``fit3d eft``: flip test-time augmentation),
``finetune`` (list of the regressor's parameter-name prefixes fine-tuned per person),
``accept_ratio`` (EFT's per-person choice; default :data:`fit3d.fitters.eft.ACCEPT_RATIO`, 1.5, whatever
``finetune`` is: give 1.8 with the ``fast`` prefixes to match ``--finetune fast``; null: always
fine-tuned),
``follow`` (an object of :class:`~fit3d.fitters.follow.FollowConfig` fields, ``{}`` for its
defaults: follow the keypoints from EFT's output; none by default) and
``prior`` (an extra pose prior; none by default for EFT); or, with ``"fitter":
"neuralannot"``: any :class:`~fit3d.fitters.neuralannot.TrainConfig` field (``lr``, ``epochs``,
``stop_tolerance``, ``holdout``...; default: fit3d's) and ``recipes`` (default all), trained on
each benchmark's 2D keypoints first, its depth recipe drawing on the ``train`` subjects only.
Weights come from ``--weights`` (a folder of ``anny_<kind>.pt`` files trained on the
``train`` subjects only, e.g. by ``benchmarks/train_tuning_weights.py``).

    fit3d benchmark make --split val --subjects 01 --noise 1 --count 200 --out /tmp/v01_n1.npz
    fit3d benchmark make --split val --subjects 35 --noise 1 --count 200 --out /tmp/v35_n1.npz
    fit3d benchmark make --split val --subjects 35 --noise 0 --count 200 --out /tmp/v35_n0.npz
    python benchmarks/tune_smplify.py --weights /tmp/tuning_weights --bench /tmp/v01_n1.npz /tmp/v35_n1.npz /tmp/v35_n0.npz \\
        --configs '{"default": {}, "weak": {"stages": {"body_coarse": {"pose_prior": 1.5}}}}'
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np


def build_neuralannot(body, weights: Path, cfg: dict, bench: dict):
    """A NeuralAnnot with ``cfg``'s overrides on ``weights``, trained on ``bench``'s 2D keypoints."""
    from dataclasses import fields

    from fit3d.evaluation.benchmark import benchmark_batch
    from fit3d.fitters.neuralannot import ACCEPT_RATIO, RECIPES, NeuralAnnot, TrainConfig, parse_recipes
    from fit3d.mocap import bundled_pose_set
    from fit3d.mocap.pose_set import load_pose_set
    from fit3d.priors.io import load_prior

    pose_set = dict(load_pose_set(bundled_pose_set()))
    pose_set["split"] = np.where(pose_set["split"] == "val", "test", pose_set["split"])  # never read, as test
    recipes = cfg.get("recipes", RECIPES)
    recipes = parse_recipes(recipes) if isinstance(recipes, str) else frozenset(recipes)
    config = TrainConfig(**{f.name: cfg[f.name] for f in fields(TrainConfig) if f.name in cfg})
    regressor = _regressor(weights, cfg)
    annot = NeuralAnnot(body, regressor, recipes, pose_set=pose_set,
                        prior=load_prior(weights / "anny_vae.pt") if "prior" in recipes else None, config=config,
                        accept_ratio=cfg.get("accept_ratio", ACCEPT_RATIO))
    annot.fit_dataset(benchmark_batch(bench, np.arange(len(bench["keypoints_2d"])), body.keypoint_convention),
                      progress=False)
    return annot


def _regressor(weights: Path, cfg: dict):
    """``cfg["regressor"]`` (default ``anny_keypoint_regressor.pt``) under ``weights``: one file, or a
    list of files made one :class:`~fit3d.regressors.ensemble.EnsembleRegressor` (absolute paths
    allowed, e.g. a second tuning regressor from ``train_tuning_weights.py --seed 1``)."""
    from fit3d.regressors.ensemble import EnsembleRegressor
    from fit3d.regressors.io import load_regressor

    files = cfg.get("regressor", "anny_keypoint_regressor.pt")
    if isinstance(files, str):
        return load_regressor(weights / files)
    return EnsembleRegressor([load_regressor(weights / f) for f in files])


#: The :class:`~fit3d.fitters.Stage` fields a ``stages`` override sets (any other key is a loss term's weight;
#: ``keep_rows`` was read as a weight, in silence)
STAGE_NUMBERS = ("iterations", "lr", "tolerance", "patience", "keep_rows", "keep_after")


def build(body, weights: Path, cfg: dict):
    """An SMPLify from the default schedule with ``cfg``'s overrides."""
    from fit3d.fitters import SMPLify, default_smplify_schedule
    from fit3d.fitters.build import DEFAULT_PRIOR
    from fit3d.priors import L2Prior
    from fit3d.priors.io import load_prior

    kind = cfg.get("prior", DEFAULT_PRIOR)
    if cfg.get("fitter") == "eft" and "prior" not in cfg:
        prior = None
    else:
        prior = L2Prior() if kind == "l2" else load_prior(weights / f"anny_{kind}.pt")
    if prior is not None and "weight_scale" in cfg:
        prior.weight_scale = cfg["weight_scale"]
    from fit3d.fitters import Stage

    schedule = [Stage(**d) for d in cfg["schedule"]] if "schedule" in cfg else copy.deepcopy(default_smplify_schedule())
    unknown = set(cfg.get("stages", {})) - {stage.name for stage in schedule}
    if unknown:  # (an override of a stage renamed since was ignored in silence)
        raise SystemExit(f"no stage named {', '.join(sorted(unknown))} in the schedule: "
                         f"{', '.join(stage.name for stage in schedule)}")
    for stage in schedule:
        for k, v in cfg.get("stages", {}).get(stage.name, {}).items():
            if k in STAGE_NUMBERS:
                setattr(stage, k, v)
            else:
                stage.weights[k] = v
    if cfg.get("fitter") == "eft":
        from fit3d.fitters import EFT
        from fit3d.fitters.eft import ACCEPT_RATIO, ANCHOR_WEIGHT
        from fit3d.fitters.follow import FollowConfig
        reg = _regressor(weights, cfg)
        if cfg.get("flip", True):  # fit3d eft's default
            from fit3d.regressors.flip import FlipAveraged

            reg = FlipAveraged(reg, body)
        return EFT(body, reg, steps=cfg.get("steps", 30), lr=cfg.get("lr", 3e-5),
                   anchor_weight=cfg.get("anchor", ANCHOR_WEIGHT), prior=prior, finetune=cfg.get("finetune"),
                   refine=cfg.get("refine", False), refine_schedule=[st for st in schedule if st.branch],
                   accept_ratio=cfg.get("accept_ratio", ACCEPT_RATIO),
                   follow=None if cfg.get("follow") is None else FollowConfig(**cfg["follow"]))
    protos = load_prior(weights / "anny_prototypes.pt") if cfg.get("prototypes", True) else None
    # (SMPLify's own defaults for what the configuration leaves out: a copy of them here went stale)
    given = {arg: cfg[key] for key, arg in (("prototype_starts", "prototype_starts"), ("depth_flips", "depth_flips"),
                                            ("keep", "keep_hypotheses"), ("noise_threshold", "noise_threshold"))
             if key in cfg}
    return SMPLify(body, prior=prior, schedule=schedule, prototypes=protos, **given)


#: The keys a configuration may hold (besides NeuralAnnot's TrainConfig fields); any other is refused
#: (a misspelt key ran the default in silence).
CONFIG_KEYS = {"fitter", "prior", "weight_scale", "prototypes", "prototype_starts", "depth_flips", "keep",
               "noise_threshold", "schedule", "stages", "regressor", "steps", "lr", "anchor", "refine", "flip",
               "finetune", "accept_ratio", "follow", "recipes"}


def check_config(name: str, cfg: dict) -> None:
    """Refuse a configuration with keys this script does not read.

    Raises:
        SystemExit: naming the configuration and its unknown keys.
    """
    from dataclasses import fields

    from fit3d.fitters.neuralannot import TrainConfig

    if not isinstance(cfg, dict):
        raise SystemExit(f"configuration {name!r} is not an object of overrides")
    unknown = set(cfg) - CONFIG_KEYS - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise SystemExit(f"configuration {name!r}: unknown keys {sorted(unknown)}; known: {sorted(CONFIG_KEYS)} "
                         "and NeuralAnnot's TrainConfig fields")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--bench", nargs="+", required=True)
    ap.add_argument("--configs", required=True, help="JSON object (or a .json file) of name -> overrides")
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args()

    from fit3d.body_models import build_body_model
    from fit3d.evaluation.benchmark import load_benchmark, run_benchmark

    configs = json.loads(Path(a.configs).read_text() if a.configs.endswith(".json") else a.configs)
    for name, cfg in configs.items():
        check_config(name, cfg)
    benches = {}
    for b in a.bench:
        bench = load_benchmark(b)
        if str(bench.get("split", "")) == "test":  # (tuning reads the val / train subjects only, by construction)
            raise SystemExit(f"{b} is a benchmark of the test subjects: tune on --split val files")
        if Path(b).stem in benches:
            raise SystemExit(f"two benchmark files named {Path(b).stem}: their results would share one label")
        benches[Path(b).stem] = bench
    body = build_body_model("anny")
    for name, cfg in configs.items():
        cells = []
        for bname, bench in benches.items():
            fitter = (build_neuralannot(body, a.weights, cfg, bench) if cfg.get("fitter") == "neuralannot"
                      else build(body, a.weights, cfg))
            res = run_benchmark(bench, fitter, body, limit=a.limit, with_pve=False)
            s = res["summary"]
            cells.append(f"{bname}: PA {s['pa_mpjpe']:.1f} (c {s.get('pa_mpjpe_common', np.nan):.0f} "
                         f"r {s.get('pa_mpjpe_rare', np.nan):.0f}) 2D {s['error_2d_px']:.2f} "
                         f"rep {s['reproj_median_px']:.2f} v {s['share_valid']:.3f} fps {s['fits_per_s']:.1f}"
                         + (f" length {fitter.selected_epochs} (held-out 2D loss by epoch "
                            f"{[round(h, 1) for h in fitter.held_out]})" if getattr(fitter, "held_out", None) else ""))
        print(f"{name:18} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
