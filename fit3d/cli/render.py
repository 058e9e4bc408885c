"""``fit3d render`` and ``fit3d report``: look at fits (:mod:`fit3d.render`)."""

from __future__ import annotations

from pathlib import Path

import click

from fit3d.cli.options import check_device, check_model_options, errors_as
from fit3d.names import GENDERS


def render_fits(fits, images, out, body, side, keypoints, save_mesh, names, progress, overlays=True) -> int:
    """Render the fits of ``fits`` (or only write their meshes when not ``overlays``), reporting on
    stderr; returns how many fit files or images could not be rendered as they are (each named)."""
    from fit3d.render.fits import render_dir, save_meshes_dir
    from fit3d.render.overlay import RenderError

    if not overlays:
        n = save_meshes_dir(fits, out, body, save_mesh, names=names)
        click.echo(f"fit3d: wrote {n} meshes -> {out}", err=True)
        return 0
    try:
        st = render_dir(fits, images, out, body, side=side, keypoints=keypoints, save_mesh=save_mesh, names=names,
                        progress=progress)
    except RenderError as e:
        raise click.ClickException(str(e)) from e
    for m in st["missing_images"]:
        click.echo(f"fit3d: {'note' if 'cut short' in m else 'rendered on grey'}: {m}", err=True)
    for er in st["errors"]:
        click.echo(f"fit3d: could not render {er['file']}: {er['reason']}", err=True)
    click.echo(f"fit3d: rendered {st['images']} images in {st['seconds']:.1f} s "
               f"({st['images_per_s']:.2f} images/s) -> {out}", err=True)
    return len(st["errors"])


def _model_name(files: list[Path]) -> str:
    """The body model of the first readable fit of ``files`` (an unreadable one is reported by the render).

    Raises:
        click.exceptions.Exit: none can be read: each named (the first 10) and exit 3, as for
            some unreadable fits (the README's downstream commands' rule).
    """
    from fit3d.data.writers import first_fit_model

    model = first_fit_model(files)
    if model is not None:
        return model
    for f in files[:10]:
        click.echo(f"fit3d: unreadable fit {f}", err=True)
    click.echo(f"fit3d: none of the {len(files)} .npz fits can be read: nothing rendered", err=True)
    raise click.exceptions.Exit(3)


def _selected(fits_dir: Path, worst, sample, seed, only_file, total: int,
              images_dir: Path | None = None) -> list[str] | None:
    """The images ``fit3d render``'s --worst, --sample and --only name (in that order, each once;
    listed images without a fit are named on stderr), or None (all). Says on stderr how many of
    the ``total`` fits it renders.

    Raises:
        ValueError, OSError: as :mod:`fit3d.render.selection`'s functions.
        click.exceptions.Exit: nothing to render (exit 1).
    """
    from fit3d.render.selection import sample_images, worst_images

    if sample is None and seed != 0:
        click.echo("fit3d: warning: --seed is the seed of --sample, which was not given: ignored", err=True)
    if worst is None and sample is None and only_file is None:
        return None
    names: dict[str, None] = {}
    parts = []
    if worst is not None:
        chosen = worst_images(fits_dir, worst)
        names.update(dict.fromkeys(chosen))
        parts.append(f"{len(chosen)} of the worst")
    if sample is not None:
        chosen = sample_images(fits_dir, sample, seed)
        names.update(dict.fromkeys(chosen))
        parts.append(f"{len(chosen)} sampled (seed {seed})")
    if only_file is not None:
        found = _listed_with_fits(fits_dir, only_file, images_dir)
        names.update(dict.fromkeys(found))
        parts.append(f"{len(found)} listed")
    if not names:
        click.echo("fit3d: no image to render (no fitted person, or no listed image has a fit)", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"fit3d: rendering {len(names)} of {total} images ({', '.join(parts)})", err=True)
    return list(names)


def _listed_with_fits(fits_dir: Path, only_file: Path, images_dir: Path | None = None) -> list[str]:
    """The images ``only_file`` lists (absolute paths inside ``images_dir`` taken relative to it)
    that have a fit in ``fits_dir``; the others named on stderr (the first 10, then a count)."""
    from fit3d.data.writers import output_path
    from fit3d.render.selection import listed_images

    listed = listed_images(only_file, images_dir)
    found = [k for k in listed if output_path(fits_dir, k).is_file()]
    have = set(found)
    missing = [k for k in listed if k not in have]
    for k in missing[:10]:
        click.echo(f"fit3d: warning: {k} (listed in {only_file}) has no fit in {fits_dir}", err=True)
    if len(missing) > 10:
        click.echo(f"fit3d: warning: ... and {len(missing) - 10} more listed images without a fit", err=True)
    return found


@click.command()
@click.option("--fits", "fits_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="Folder of .npz fits.")
@click.option("--images", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="Folder of the images.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder for <image path>.png (subfolders of the image paths mirrored).")
@click.option("--side/--no-side", default=True, show_default=True, help="Side view beside the overlay.")
@click.option("--keypoints", is_flag=True, help="Draw input keypoints (circles) and reprojected ones (crosses).")
@click.option("--save-mesh", type=click.Choice(["obj", "ply"]), default=None, help="Also write one mesh per person.")
@click.option("--model-path", type=click.Path(path_type=Path), default=None,
              help="Licensed SMPL-family model (when the fits used one; default: the one FITS/fit_settings.json "
                   "records).")
@click.option("--gender", type=click.Choice(GENDERS), default=None,
              help="SMPL family model gender (default: the one FITS/fit_settings.json records, else neutral).")
@click.option("--device", default="cpu", show_default=True, callback=check_device,
              help="torch device: cpu, cuda, cuda:1...")
@click.option("--worst", type=click.IntRange(min=1), default=None,
              help="Only N images: those of the worst fitted people (highest reprojection error in pixels "
                   "first, as 'fit3d report').")
@click.option("--sample", type=click.IntRange(min=1), default=None,
              help="Only N images drawn at random (the same ones for the same --seed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --sample.")
@click.option("--only", "only_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Only the images listed in this text file (one path relative to --images per line).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def render(fits_dir, images, out_dir, side, keypoints, save_mesh, model_path, gender, device, worst, sample, seed,
           only_file, no_progress):
    """Render fitted meshes over their images (pyrender, headless EGL), with side views.

    Every fit by default; with --worst, --sample or --only, the images they name (together:
    all of them, each once; exit 1 when they name none). --worst ranks people by reprojection
    error in pixels, as 'fit3d report' does (a small person's error is fewer pixels), and measures
    the fit against its input keypoints only (a wrong detection fitted well is not among them);
    --only lists paths relative to --images.

    Exit 0 when every fit was rendered, 3 when some fit files could not be read, or an image was
    unreadable or of another size than its fits' (each named on stderr; such an image is rendered
    on grey, the others as usual), 1 when the renderer fails. A missing image is rendered on grey
    (exit 0: a folder rendered without its images). Images with a side over 4096 px are drawn scaled
    down.
    """
    from fit3d.body_models import build_body_model
    from fit3d.data.writers import output_path, require_fit_files
    from fit3d.export.people import fitted_gender
    from fit3d.pipeline.settings import fitting_settings

    with errors_as():
        files = require_fit_files(fits_dir)
        names = _selected(fits_dir, worst, sample, seed, only_file, len(files), images)
    model_name = _model_name(files if names is None else [output_path(fits_dir, k) for k in names])
    check_model_options(model_name, model_path, gender or "neutral",  # (as the fitting commands)
                        hint=f"the fits in {fits_dir} are of anny, which takes neither")
    recorded = fitting_settings(fits_dir) or {}  # the fitting run's model file and gender, unless given
    if recorded.get("model") == model_name:
        model_path = model_path or recorded.get("model_path")
    gender = gender or fitted_gender(fits_dir, model_name)  # (as the exports read it)
    with errors_as():
        body = build_body_model(model_name, model_path, gender=gender, device=device)
    if render_fits(fits_dir, images, out_dir, body, side, keypoints, save_mesh, names, not no_progress):
        raise click.exceptions.Exit(3)  # as the fitting commands' 3: some inputs could not be read, the rest done


@click.command()
@click.option("--fits", "fits_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="Folder of .npz fits.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .html file.")
@click.option("--renders", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="PNGs from 'fit3d render' to show as thumbnails (default: FITS/render if present).")
@click.option("--images", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Images to show as thumbnails when there are no renders.")
@click.option("--thumbnails", type=click.IntRange(min=0), default=None,
              help="People (the worst first) shown with their image, each image embedded once; the other "
                   "rows link to their render.  [default: 300]")
def report(fits_dir, out, renders, images, thumbnails):
    """Write a self-contained HTML page reviewing a run (worst reprojection error first).

    Exit 3 when some fits could not be read (each named on stderr and a row of the report).
    """
    from fit3d.render.report import write_report

    if renders is None and (fits_dir / "render").is_dir():
        renders = fits_dir / "render"
    with errors_as():
        s = write_report(fits_dir, out, renders, images, **({} if thumbnails is None else dict(thumbnails=thumbnails)))
    click.echo(f"fit3d: report of {s['people']} people ({s['fitted']} fitted, {s['valid']} valid) -> {out}", err=True)
    for f in s["unreadable"]:
        click.echo(f"fit3d: unreadable fit {f} (a row of the report)", err=True)
    if s["unreadable"]:
        raise click.exceptions.Exit(3)
