"""Weights for tuning: priors, prototypes and regressor trained on the ``train`` subjects only.

The shipped weights train on the ``train`` and ``val`` subjects (:mod:`fit3d.mocap.splits`);
to tune robust-term and prior weights on motions the priors never saw, these are
trained without the ``val`` subjects, then ``benchmarks/tune_smplify.py`` scores
configurations on ``fit3d benchmark make --split val`` benchmarks.

    python benchmarks/train_tuning_weights.py --out /tmp/tuning_weights [--kinds gmm,vae,articulation,prototypes,regressor]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--poses", type=Path, default=None, help="pose set (default: the bundled one)")
    ap.add_argument("--kinds", default="gmm,vae,articulation,prototypes,regressor")
    ap.add_argument("--recombined", type=int, default=None, help="limb-wise recombinations (default: the shipped setting)")
    ap.add_argument("--include-val", action="store_true", help="also train on the val subjects (as the shipped weights)")
    ap.add_argument("--regressor-rounds", type=int, default=None,
                    help="rounds of synthetic people for the regressor (default: the shipped setting)")
    ap.add_argument("--seed", type=int, default=0, help="the regressor's seed (its pool and people; default 0)")
    ap.add_argument("--closeup", type=float, default=None,
                    help="share of the regressor's people framed from the waist or chest up (default: shipped)")
    ap.add_argument("--width", type=int, default=None, help="the regressor's trunk width (default: the shipped one)")
    ap.add_argument("--blocks", type=int, default=None, help="the regressor's residual blocks (default: shipped)")
    a = ap.parse_args()

    from fit3d.body_models import build_body_model
    from fit3d.mocap import bundled_pose_set
    from fit3d.mocap.pose_set import load_pose_set
    from fit3d.priors.io import save_prior
    from fit3d.training.priors import RECOMBINED_POSES, train_prior, training_poses
    from fit3d.training.prototypes import learn_prototypes
    from fit3d.regressors.io import save_regressor
    from fit3d.training.checkpoint import checkpoint_path
    from fit3d.training.regressor import train_regressor

    a.out.mkdir(parents=True, exist_ok=True)
    poses = a.poses or bundled_pose_set()
    recombined = RECOMBINED_POSES if a.recombined is None else a.recombined
    body = build_body_model("anny")
    for kind in a.kinds.split(","):
        t0 = time.perf_counter()
        out = a.out / (f"anny_{kind}.pt" if kind != "regressor" else "anny_keypoint_regressor.pt")
        if kind in ("gmm", "vae", "articulation"):
            train_prior(kind, poses, out, include_val=a.include_val, recombined=recombined, progress=False)
        elif kind == "prototypes":
            save_prior(learn_prototypes(body, training_poses(load_pose_set(poses), include_val=a.include_val,
                                                             recombined=recombined)), out)
        elif kind in ("regressor", "regressor_pm"):
            protos = None
            if kind == "regressor_pm":  # PM-Net start head on this folder's prototypes
                from fit3d.priors.io import load_prior

                protos = load_prior(a.out / "anny_prototypes.pt").prototypes
                out = a.out / "anny_keypoint_regressor_pm.pt"
            checkpoint = checkpoint_path(out)  # rerun after an interruption: resumes from it
            model, _ = train_regressor(load_pose_set(poses), body, include_val=a.include_val, recombined=recombined,
                                       prototypes=protos, progress=False, checkpoint=checkpoint, seed=a.seed,
                                       **({} if a.regressor_rounds is None else {"rounds": a.regressor_rounds}),
                                       **({} if a.closeup is None else {"closeup": a.closeup}),
                                       **({} if a.width is None else {"width": a.width}),
                                       **({} if a.blocks is None else {"blocks": a.blocks}))
            save_regressor(model, out)
            checkpoint.unlink(missing_ok=True)
        else:
            raise SystemExit(f"unknown kind {kind!r}")
        print(json.dumps(dict(kind=kind, seconds=round(time.perf_counter() - t0, 1), path=str(out))), flush=True)


if __name__ == "__main__":
    main()
