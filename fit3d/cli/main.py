"""The ``fit3d`` command line. Only options and wiring: the work is in
:mod:`fit3d.pipeline`, :mod:`fit3d.fitters` and :mod:`fit3d.data`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click


def _common_fit_options(f):
    """Options shared by every fitting command (smplify now; eft, neuralannot later)."""
    opts = [
        click.option("--images", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Folder of the images."),
        click.option("--annotations", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="COCO person-keypoint JSON. Default: a person_keypoints_*.json found beside or above --images."),
        click.option("--keypoints", "keypoints_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Folder of OpenPose JSON files (<image stem>_keypoints.json) instead of COCO annotations."),
        click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Output folder: one .npz per image and summary.json."),
        click.option("--model", type=click.Choice(["anny", "smpl", "smplh", "smplx"]), default="anny", show_default=True,
                     help="Body model. anny is bundled; the SMPL family needs --model-path."),
        click.option("--model-path", type=click.Path(path_type=Path), default=None,
                     help="Licensed SMPL/SMPL-H/SMPL-X model file or folder."),
        click.option("--gender", type=click.Choice(["neutral", "male", "female"]), default="neutral", show_default=True,
                     help="SMPL family model gender."),
        click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1..."),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                     help="People per batched fit."),
        click.option("--focal-length", type=click.FloatRange(min=1.0), default=None,
                     help="Focal length in pixels for every image. Default: the image diagonal."),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="Fit at most N images."),
        click.option("--shard", default="1/1", show_default=True,
                     help="i/n: fit every n-th image starting at the i-th (one job of n)."),
        click.option("--overwrite", is_flag=True, help="Refit images whose .npz already exists."),
        click.option("--min-visible", type=click.IntRange(min=1), default=None,
                     help="Skip people with fewer usable keypoints (default 6)."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _load_inputs(images: Path, annotations: Path | None, keypoints_dir: Path | None):
    from fit3d.data.readers import discover_annotations, read_coco, read_openpose

    if not images.is_dir():
        raise click.UsageError(f"--images {images} is not a folder")
    if keypoints_dir is not None:
        return read_openpose(keypoints_dir, images)
    if annotations is None:
        annotations = discover_annotations(images)
        if annotations is None:
            raise click.UsageError(
                f"no --annotations given and no person_keypoints_*.json beside or above {images}; "
                "pass --annotations FILE.json (COCO) or --keypoints DIR (OpenPose)"
            )
        click.echo(f"fit3d: using annotations {annotations}", err=True)
    try:
        return read_coco(annotations, images)
    except (FileNotFoundError, ValueError) as e:
        raise click.UsageError(str(e)) from e


@click.group(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(verbose: bool) -> None:
    """fit3d: 3D human body pseudo-ground-truth from 2D keypoints.

    Fits a body model (anny by default, or SMPL/SMPL-H/SMPL-X) to every annotated
    person of a folder of images and writes one .npz of parameters per image.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@_common_fit_options
@click.option("--prior", type=click.Choice(["l2"]), default="l2", show_default=True, help="Pose prior.")
@click.option("--schedule", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON/YAML list of stages overriding the default schedule (see --print-schedule).")
@click.option("--hypotheses", type=click.IntRange(min=1), default=2, show_default=True,
              help="Orientation hypotheses (of 4) kept per person after the camera stage.")
def smplify(images, annotations, keypoints_dir, out_dir, model, model_path, gender, device, batch_size,
            focal_length, limit, shard, overwrite, min_visible, no_progress, prior, schedule, hypotheses):
    """Fit SMPLify (staged optimisation from the mean pose) to every annotated person.

    Example: fit3d smplify --images coco/val2017 --annotations person_keypoints_val2017.json --out fits/
    """
    from fit3d.body_models import build_body_model
    from fit3d.fitters import SMPLify, load_schedule
    from fit3d.pipeline import MIN_VISIBLE_KEYPOINTS, RunConfig, parse_shard, run
    from fit3d.priors import build_prior

    try:
        shard_t = parse_shard(shard)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--shard") from e
    records, problems = _load_inputs(images, annotations, keypoints_dir)
    for p in problems:
        click.echo(f"fit3d: skipped input {p.source}: {p.reason}", err=True)
    try:
        body = build_body_model(model, model_path, gender=gender, device=device)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from e
    stages = load_schedule(schedule) if schedule else None
    fitter = SMPLify(body, prior=build_prior(prior, body), schedule=stages, keep_hypotheses=hypotheses)
    config = RunConfig(
        out_dir=out_dir, batch_size=batch_size, focal_length=focal_length, overwrite=overwrite, shard=shard_t,
        limit=limit, min_visible=min_visible or MIN_VISIBLE_KEYPOINTS, progress=not no_progress, fitter_name="smplify",
    )
    s = run(records, fitter, body, config, problems)
    _report(s, out_dir)


@cli.command("print-schedule")
def print_schedule():
    """Print SMPLify's default stage schedule as JSON (edit it, then pass --schedule)."""
    from fit3d.fitters.stages import default_smplify_schedule, schedule_to_json

    click.echo(schedule_to_json(default_smplify_schedule()))


def _report(s: dict, out_dir: Path) -> None:
    r = s["this_run"]
    med = s["reproj_error_px"]["median"]
    click.echo(
        f"fit3d: {r['people_fitted']} people fitted, {r['people_skipped']} skipped in {r['images']} images "
        f"({r['images_already_done']} already done) in {r['seconds']:.1f} s, {r['fits_per_second']:.2f} fits/s; "
        f"all outputs: {s['fitted']} fitted, {s['valid']} valid, median reprojection error "
        f"{'n/a' if med is None else f'{med:.2f} px'} -> {out_dir}",
        err=True,
    )


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fit3d")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
