"""``fit3d prepare-mocap``, ``train-prior``, ``train-regressor``, ``setup-model``: the learned
parts (:mod:`fit3d.mocap.prepare`, :mod:`fit3d.training`)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from fit3d.cli.options import Terminated, errors_as, model_options, writable_folder
from fit3d.names import PRIOR_KINDS

POSES_HELP = ("Pose set from 'fit3d prepare-mocap' (default: the bundled CMU set; for a SMPL-family model "
              "(--model, --model-path) the set 'fit3d setup-model' retargeted to it).")


def default_pose_set(poses: Path | None, body) -> Path:
    """``--poses``, or the pose set of ``body`` (anny: the bundled one; the SMPL family: the one
    ``fit3d setup-model`` made).

    Raises:
        FileNotFoundError: a SMPL-family model not set up yet, saying what to run.
    """
    from fit3d.body_models.weights import existing_weights

    return poses if poses is not None else existing_weights(body, "pose_set")


def check_people(ctx, param, value: int) -> int:
    """``--people`` of ``train-regressor``: at least one training batch per round
    (:data:`fit3d.training.regressor.REGRESSOR_BATCH_SIZE`); else a usage error naming both."""
    from fit3d.training.regressor import REGRESSOR_BATCH_SIZE

    if value < REGRESSOR_BATCH_SIZE:
        raise click.BadParameter(f"{value} is fewer than the training batch size, {REGRESSOR_BATCH_SIZE}: a round "
                                 f"trains on full batches only; give at least {REGRESSOR_BATCH_SIZE}",
                                 ctx=ctx, param=param)
    return value


#: The seeds numpy takes (the training commands seed numpy and torch with them).
SEEDS = click.IntRange(0, 2**32 - 1)


def torch_seed(seed: int = 0) -> None:
    """Seed torch and numpy (training and preparation on the CPU are then deterministic for a given
    thread count; torch's sums in another order, with another count, can differ in the last bits)."""
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
@model_options
def prepare_mocap_cmd(sources, out, fps, dedupe_m, iterations, body):
    """Retarget CMU mocap to the body model's pose space and save the poses, split by subject (fit3d.mocap.splits)."""
    from fit3d.mocap.prepare import prepare_mocap

    torch_seed()
    click.echo(f"fit3d: reading the trials of {', '.join(map(str, sources))} (archives are unpacked first: "
               "about a minute), then retargeting them", err=True)
    with errors_as():
        stats = prepare_mocap(list(sources), out, body, fps=fps, dedupe_m=dedupe_m, iterations=iterations)
    click.echo(json.dumps(stats, indent=2))
    if stats["missing_test_subjects"]:
        click.echo(f"fit3d: warning: the test subjects {', '.join(stats['missing_test_subjects'])} are not in these "
                   "trials: the development benchmark (fit3d benchmark make) has fewer or no test poses", err=True)


@click.command("train-prior")
@click.option("--kind", type=click.Choice(PRIOR_KINDS), required=True,
              help="Which learned prior to train (prototypes: the PM-Net pose memory of SMPLify's extra starts).")
@click.option("--poses", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help=POSES_HELP)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .pt file.")
@click.option("--seed", type=SEEDS, default=0, show_default=True, help="Random seed.")
@model_options
def train_prior_cmd(kind, poses, out, seed, body):
    """Train a learned pose prior on the training and validation subjects, never the test ones (seeded; the
    bundled weights come from this command). Prototypes are posed on the body model (--model, --model-path),
    which must be the pose set's. Interrupted, the VAE and the articulation prior resume from OUT.partial
    when run again with the same options."""
    from fit3d.training.checkpoint import checkpoint_path
    from fit3d.training.lock import training_lock
    from fit3d.training.priors import train_prior

    writable_folder(out, "--out")  # (before minutes of training, not after)
    torch_seed(seed)
    quick = kind in ("gmm", "prototypes")  # (seconds: no checkpoint; the others resume from OUT.partial)
    checkpoint = None if quick else checkpoint_path(out)
    with errors_as(), training_lock(out), resume_hint(checkpoint):
        quiet = " (it prints nothing until done: 20-40 s on 2 cores, longer beside other jobs)"
        click.echo(f"fit3d: training the {kind} prior{quiet if quick else ''}", err=True)
        stats = train_prior(kind, default_pose_set(poses, body), out, seed=seed, body_model=body,
                            command="fit3d train-prior", checkpoint=checkpoint)
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
    click.echo(json.dumps(stats, indent=2))


@contextlib.contextmanager
def resume_hint(checkpoint: Path | None):
    """Interrupted (Ctrl-C, SIGTERM) with a ``checkpoint`` on disk: say how to resume, then go on
    stopping."""
    try:
        yield
    except (KeyboardInterrupt, Terminated):
        if checkpoint is not None and checkpoint.is_file():
            click.echo(f"fit3d: the training so far is kept in {checkpoint}: run the same command again to resume",
                       err=True)
        raise


@click.command("train-regressor")
@click.option("--poses", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help=POSES_HELP + " Only its training subjects are read.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .pt.")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Rounds of fresh synthetic people (default: the shipped setting, "
                   "fit3d.training.regressor.REGRESSOR_ROUNDS, 384: 25-38 min on 2 CPU cores).")
@click.option("--people", type=int, default=8192, show_default=True, callback=check_people,
              help="People per round: at least the training batch size, 256.")
@click.option("--seed", type=SEEDS, default=0, show_default=True, help="Random seed (of member k: SEED + k).")
@click.option("--members", type=click.IntRange(min=1), default=None,
              help="Regressors in a deep ensemble, trained alike from seeds SEED, SEED+1, ...; EFT fine-tunes the "
                   "first and adds the others' mean as a fixed correction (default: the shipped setting, "
                   "fit3d.training.regressor.REGRESSOR_MEMBERS). Each member takes the time of one regressor.")
@click.option("--prototypes", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A prototype memory ('fit3d train-prior --kind prototypes'): the regressor picks one of its "
                   "poses and regresses the residual from it (PM-Net). Default: start from the mean pose.")
@click.option("--width", type=click.IntRange(min=8), default=None,
              help="Trunk width (default: the shipped setting, fit3d.training.regressor.REGRESSOR_WIDTH, 192). EFT "
                   "fine-tunes a copy per person: its time grows with the width squared.")
@model_options
def train_regressor_cmd(poses, out, rounds, people, seed, members, prototypes, width, body):
    """Pretrain the keypoint-conditioned regressor that EFT fine-tunes, on the training and validation
    subjects, never the test ones (seeded). Interrupted, it resumes from OUT.partial (and, for
    member k of an ensemble, OUT.partial.member<k>) when run again with the same options."""
    from fit3d.training.checkpoint import checkpoint_path
    from fit3d.training.lock import training_lock
    from fit3d.training.regressor import REGRESSOR_MEMBERS, remove_checkpoints, train_regressor_file

    members = REGRESSOR_MEMBERS if members is None else members
    if prototypes is not None and members > 1:
        raise click.UsageError("--prototypes needs --members 1 (each member would pick its own prototype)")
    if seed + members - 1 > SEEDS.max:
        raise click.UsageError(f"--seed {seed} with {members} members: member k's seed SEED + k must be at most "
                               f"{SEEDS.max}")
    writable_folder(out, "--out")  # (before minutes of training, not after)
    torch_seed(seed)
    checkpoint = checkpoint_path(out)  # an interrupted training resumes from it when rerun
    size = ({} if rounds is None else {"rounds": rounds}) | ({} if width is None else {"width": width})
    with errors_as(), training_lock(out), resume_hint(checkpoint):
        stats = train_regressor_file(default_pose_set(poses, body), out, body, "fit3d train-regressor",
                                     members=members, seed=seed, prototypes_path=prototypes,
                                     checkpoint=checkpoint, people_per_round=people, **size)
        remove_checkpoints(checkpoint)
    click.echo(json.dumps(stats, indent=2))


@click.command("setup-model")
@click.option("--max-poses", type=click.IntRange(min=16), default=None,
              help="Retarget and train on at most N poses (a quick, less accurate set-up; default: all).")
@click.option("--regressor-rounds", type=click.IntRange(min=1), default=None,
              help="Rounds of synthetic people for the EFT regressor (default: as the bundled anny regressor, "
                   "fit3d.training.regressor.REGRESSOR_ROUNDS, 384).")
@click.option("--retarget-iterations", type=click.IntRange(min=1), default=300, show_default=True,
              help="Inverse-kinematics steps when retargeting the bundled mocap.")
@click.option("--quick", is_flag=True,
              help="A smoke-test set-up (few poses, short training: 10-50 s on 2 CPU cores, "
                   "plus anny's ~2 min build on a first run): checks an installation and a model file; its weights "
                   "are not good enough to fit with.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@model_options(model_required=True)
def setup_model_cmd(max_poses, regressor_rounds, retarget_iterations, quick, no_progress, body):
    """Learn a SMPL-family model's priors (GMM, VAE, articulation, prototypes) and EFT regressor from the
    bundled CMU mocap, once; fitting commands then use them for that model file with no further options."""
    from fit3d.body_models import weights
    from fit3d.training.setup_model import SetupConfig, setup_model

    torch_seed()
    size = {} if regressor_rounds is None else {"regressor_rounds": regressor_rounds}
    config = SetupConfig.quick() if quick else SetupConfig(
        max_poses=max_poses, retarget_iterations=retarget_iterations, **size)
    with errors_as():
        stats = setup_model(body, config, progress=not no_progress, log=lambda m: click.echo(m, err=True))
    click.echo(f"fit3d: {body.name} set up in {sum(stats['seconds'].values()):.0f} s; weights in "
               f"{weights.setup_dir(body)}", err=True)
