"""How well each prior separates real poses of unseen subjects from impossible ones.

For every prior: the median cost of real poses of the held-out *test subjects*
(motions no prior trained on), the share of those real poses the prior calls
implausible (cost above the 99th percentile of its own training poses: a prior that
rejects real unseen motion is what pulls fits back to the training motions), and,
for each corruption (fit3d.evaluation.corruptions), the share of corrupted poses that
score worse than the real pose they came from and the AUROC (chance that a corrupted
pose scores worse than a random real one).

    python benchmarks/prior_separation.py [--weights DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=None, help="folder of anny_<kind>.pt (default: the bundled ones)")
    a = ap.parse_args()

    from fit3d.body_models import build_body_model
    from fit3d.evaluation.corruptions import auroc, implausible_poses
    from fit3d.mocap import bundled_pose_set
    from fit3d.priors import PRIORS, build_prior
    from fit3d.mocap.pose_set import load_pose_set
    from fit3d.training.priors import training_poses

    body = build_body_model("anny")
    ps = load_pose_set(bundled_pose_set())
    test = ps["split"] == "test"
    real = torch.as_tensor(ps["body_pose"][test])
    seen = torch.as_tensor(training_poses(ps, mirrored=False))
    bad = implausible_poses(body, real)
    subjects = sorted(set(ps["subject_names"][ps["trial"][test]].tolist()))
    print(f"{len(real)} real poses of the held-out subjects {', '.join(subjects)}; {len(seen)} training poses")
    print("| prior | real median cost | real called implausible | "
          + " | ".join(f"{k}: worse / AUROC" for k in bad) + " |")
    print("|---|---|---|" + "---|" * len(bad))
    for name in PRIORS:
        path = None if a.weights is None or name == "l2" else a.weights / f"anny_{name}.pt"
        p = build_prior(name, body, path)
        with torch.no_grad():
            rc = p(real)
            limit = np.quantile(torch.cat([p(seen[s : s + 4096]) for s in range(0, len(seen), 4096)]).numpy(), 0.99)
            cells = []
            for poses in bad.values():
                bc = p(poses)
                cells.append(f"{(bc > rc).float().mean():.2f} / {auroc(rc, bc):.2f}")
        print(f"| {name} | {rc.median():.1f} | {(rc > limit).float().mean():.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
