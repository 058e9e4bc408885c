"""How well each prior separates real held-out poses from impossible ones.

For every prior: the median cost of real poses from the held-out CMU trials, and
for each corruption (fit3d.evaluation.corruptions) the share of corrupted poses
that score worse than the real pose they came from, and the AUROC (chance that
a corrupted pose scores worse than a random real one).

    python benchmarks/prior_separation.py
"""

from __future__ import annotations

import torch


def main() -> None:
    from fit3d.body_models import build_body_model
    from fit3d.evaluation.corruptions import auroc, implausible_poses
    from fit3d.mocap import bundled_pose_set
    from fit3d.priors import PRIORS, build_prior
    from fit3d.training.priors import load_pose_set

    body = build_body_model("anny")
    ps = load_pose_set(bundled_pose_set())
    real = torch.as_tensor(ps["body_pose"][ps["is_test"]])
    bad = implausible_poses(body, real)
    n_trials = len(set(ps["trial"][ps["is_test"]].tolist()))
    print(f"{len(real)} real poses from {n_trials} held-out trials")
    print("| prior | real median cost | " + " | ".join(f"{k}: worse / AUROC" for k in bad) + " |")
    print("|---|---|" + "---|" * len(bad))
    for name in PRIORS:
        p = build_prior(name, body)
        with torch.no_grad():
            rc = p(real)
            cells = []
            for poses in bad.values():
                bc = p(poses)
                cells.append(f"{(bc > rc).float().mean():.2f} / {auroc(rc, bc):.2f}")
        print(f"| {name} | {rc.median():.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
