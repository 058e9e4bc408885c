"""``fit3d prepare-mocap``, ``fit3d train-prior``, ``fit3d train-regressor``: the learned
parts (:mod:`fit3d.mocap.prepare`, :mod:`fit3d.training`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

POSES_HELP = "Pose set from 'fit3d prepare-mocap' (default: the bundled CMU set)."


def torch_seed(seed: int = 0) -> None:
    """Seed torch and numpy (deterministic training and preparation on CPU)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@click.command("prepare-mocap")
@click.option("--mocap", "sources", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="Folder or .tar.xz archive of CMU ASF/AMC and/or BVH trials (repeatable).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .npz.")
@click.option("--fps", type=float, default=10.0, show_default=True, help="Subsampled frame rate.")
@click.option("--dedupe-m", type=float, default=0.03, show_default=True,
              help="Drop frames whose root-centred points moved less than this (metres).")
@click.option("--iterations", type=int, default=300, show_default=True, help="IK steps per chunk.")
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1...")
def prepare_mocap_cmd(sources, out, fps, dedupe_m, iterations, device):
    """Retarget CMU mocap to anny's pose space and save the poses, split by subject (fit3d.mocap.splits)."""
    from fit3d.body_models import build_body_model
    from fit3d.mocap.prepare import prepare_mocap

    torch_seed()
    body = build_body_model("anny", device=device)
    stats = prepare_mocap(list(sources), out, body, fps=fps, dedupe_m=dedupe_m, iterations=iterations)
    click.echo(json.dumps(stats, indent=2))


@click.command("train-prior")
@click.option("--kind", type=click.Choice(["gmm", "vae", "articulation", "prototypes"]), required=True,
              help="Which learned prior to train (prototypes: the PM-Net pose memory of SMPLify's extra starts).")
@click.option("--poses", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help=POSES_HELP)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .pt file.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def train_prior_cmd(kind, poses, out, seed):
    """Train a learned pose prior on the training subjects (seeded; the bundled weights come from this command)."""
    from fit3d.mocap import bundled_pose_set
    from fit3d.training.priors import train_prior

    torch_seed(seed)
    click.echo(json.dumps(train_prior(kind, poses or bundled_pose_set(), out, seed=seed), indent=2))


@click.command("train-regressor")
@click.option("--poses", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Pose set from 'fit3d prepare-mocap' (default: the bundled CMU set; training subjects only).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .pt.")
@click.option("--rounds", type=int, default=16, show_default=True, help="Rounds of fresh synthetic people.")
@click.option("--people", type=int, default=8192, show_default=True, help="People per round.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--prototypes", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A prototype memory ('fit3d train-prior --kind prototypes'): the regressor picks one of its "
                   "poses and regresses the residual from it (PM-Net). Default: start from the mean pose.")
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1...")
def train_regressor_cmd(poses, out, rounds, people, seed, prototypes, device):
    """Pretrain the keypoint-conditioned regressor that EFT fine-tunes, on the training subjects (seeded)."""
    from fit3d.body_models import build_body_model
    from fit3d.mocap import bundled_pose_set
    from fit3d.training.priors import load_pose_set
    from fit3d.training.regressor import save_regressor, train_regressor

    torch_seed(seed)
    body = build_body_model("anny", device=device)
    protos = None
    if prototypes is not None:
        from fit3d.training.priors import load_prior

        protos = load_prior(prototypes).prototypes
    model, stats = train_regressor(load_pose_set(poses or bundled_pose_set()), body, rounds=rounds,
                                   people_per_round=people, seed=seed, prototypes=protos)
    save_regressor(model, out)
    click.echo(json.dumps(stats, indent=2))
