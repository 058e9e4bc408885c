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
@click.option("--render", "render_", is_flag=True, help="Also render overlays + side views to OUT/render/.")
@click.option("--save-mesh", type=click.Choice(["obj", "ply"]), default=None,
              help="Also write one mesh per fitted person to OUT/render/.")
def smplify(images, annotations, keypoints_dir, out_dir, model, model_path, gender, device, batch_size,
            focal_length, limit, shard, overwrite, min_visible, no_progress, prior, schedule, hypotheses,
            render_, save_mesh):
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
    if render_ or save_mesh:
        names = [Path(n).stem for n in s["this_run"]["image_keys"]]
        _render(out_dir, images, out_dir / "render", body, side=True, keypoints=True, save_mesh=save_mesh,
                names=names, progress=not no_progress, overlays=render_)


def _render(fits, images, out, body, side, keypoints, save_mesh, names, progress, overlays=True):
    from fit3d.render.fits import render_dir, save_meshes_dir
    from fit3d.render.overlay import RenderError

    if not overlays:
        n = save_meshes_dir(fits, out, body, save_mesh, names=names)
        click.echo(f"fit3d: wrote {n} meshes -> {out}", err=True)
        return
    try:
        st = render_dir(fits, images, out, body, side=side, keypoints=keypoints, save_mesh=save_mesh, names=names,
                        progress=progress)
    except RenderError as e:
        raise click.ClickException(str(e)) from e
    for m in st["missing_images"]:
        click.echo(f"fit3d: image not found, rendered on grey: {m}", err=True)
    for er in st["errors"]:
        click.echo(f"fit3d: could not render {er['file']}: {er['reason']}", err=True)
    click.echo(f"fit3d: rendered {st['images']} images in {st['seconds']:.1f} s "
               f"({st['images_per_s']:.2f} images/s) -> {out}", err=True)


@cli.command()
@click.option("--fits", "fits_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="Folder of .npz fits.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder of the images.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder for <image stem>.png.")
@click.option("--side/--no-side", default=True, show_default=True, help="Side view beside the overlay.")
@click.option("--keypoints", is_flag=True, help="Draw input keypoints (circles) and reprojected ones (crosses).")
@click.option("--save-mesh", type=click.Choice(["obj", "ply"]), default=None, help="Also write one mesh per person.")
@click.option("--model-path", type=click.Path(path_type=Path), default=None,
              help="Licensed SMPL-family model (when the fits used one).")
@click.option("--gender", type=click.Choice(["neutral", "male", "female"]), default="neutral", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def render(fits_dir, images, out_dir, side, keypoints, save_mesh, model_path, gender, device, no_progress):
    """Render fitted meshes over their images (pyrender, headless EGL), with side views."""
    from fit3d.body_models import build_body_model
    from fit3d.data.writers import read_fit

    files = sorted(fits_dir.glob("*.npz"))
    if not files:
        raise click.UsageError(f"no .npz fits in {fits_dir}")
    model_name = str(read_fit(files[0])["model"])
    try:
        body = build_body_model(model_name, model_path, gender=gender, device=device)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from e
    _render(fits_dir, images, out_dir, body, side, keypoints, save_mesh, None, not no_progress)


@cli.command()
@click.option("--fits", "fits_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="Folder of .npz fits.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .html file.")
@click.option("--renders", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="PNGs from 'fit3d render' to show as thumbnails (default: FITS/render if present).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Images to show as thumbnails when there are no renders.")
def report(fits_dir, out, renders, images):
    """Write a self-contained HTML page reviewing a run (worst reprojection error first)."""
    from fit3d.render.report import write_report

    if renders is None and (fits_dir / "render").is_dir():
        renders = fits_dir / "render"
    s = write_report(fits_dir, out, renders, images)
    click.echo(f"fit3d: report of {s['people']} people ({s['fitted']} fitted, {s['valid']} valid) -> {out}", err=True)


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
