"""``fit3d export``: fits to the files that training code reads."""

from __future__ import annotations

from pathlib import Path

import click

from fit3d.cli.options import echo_unreadable, errors_as, fits_readable, unfinished_lines


@click.command("export")
@click.option("--fits", "fits_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Output folder of a fitting run (all its shards).")
@click.option("--format", "fmt", type=click.Choice(["spin", "humandata", "neuralannot"]), required=True,
              help="spin: SPIN's dataset npz (SMPL fits); humandata: mmhuman3d's HumanData npz (SMPL, SMPL-H, "
                   "SMPL-X or anny); neuralannot: JSON keyed by annotation id (SMPL or SMPL-X).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write: .npz for spin and humandata, .json for neuralannot (another suffix is a usage "
                   "error).")
@click.option("--valid-only/--keep-invalid", default=None,
              help="Leave out fits marked invalid, or export them flagged (has_smpl 0, \"valid\": false). Default: "
                   "flagged where the format's training code reads the flag (spin; humandata of SMPL, SMPL-H, anny), "
                   "left out where it would train on them (neuralannot; humandata of SMPL-X).")
@click.option("--frame", type=click.Choice(["crop", "full"]), default=None,
              help="Camera frame of the exported global_orient and transl. crop (default for spin and humandata): "
                   "each person's crop camera, turned to look at the box centre, the frame SPIN's and mmhuman3d's "
                   "crop-based trainers compare with; full: the photo's camera, as fitted (full-frame trainers "
                   "such as CLIFF; the only frame of neuralannot, which stores the photo's camera).")
@click.option("--min-keypoints", type=click.IntRange(min=1), default=None,
              help="Leave out people with fewer labelled input keypoints (validity is a 2D test: a person seen "
                   "from the hips down is fitted to its points and the rest is the prior's guess). Default: no "
                   "minimum beyond the fitting run's (--min-visible, 6).")
def export(fits_dir, fmt, out, valid_only, frame, min_keypoints):
    """Export fitted people (never skipped ones or duplicate annotation ids) for SPIN, mmhuman3d or NeuralAnnot-style training.

    Exit 3 when some fit files could not be read (each named on stderr; their people are not in the export).
    """
    from fit3d.export import check_frame, check_out, export_fits

    try:
        check_out(fmt, out)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--out") from e
    try:
        frame = check_frame(fmt, frame)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--frame") from e
    with errors_as(), fits_readable("nothing exported"):
        try:
            c = export_fits(fits_dir, fmt, out, valid_only, frame, min_keypoints)
        except OSError as e:  # e.g. a folder that cannot be written
            raise click.ClickException(f"cannot export to {out}: {e.strerror or e}") from e
    missing = echo_unreadable(c["unreadable"], lost=dict(
        fit="its people are not exported", summary="its run's counts are not in the totals", dataset="not exported"))
    dropped = ", ".join(f"{n} {why}" + (" (this format's loaders would train on them: --keep-invalid exports them "
                                        "flagged)" if why == "not valid" and c["invalid_dropped_by_format"] else "")
                        for why, n in c["dropped"].items())
    invalid = (f", {c['invalid']} of them marked invalid (flagged: "
               f"{'has_' + c['model'] + ' 0' if fmt != 'neuralannot' else 'valid false'})" if c["invalid"] else "")
    click.echo(f"fit3d: exported {c['exported']} of {c['people']} people ({c['model']} fits, {frame} camera frame)"
               f"{invalid}"
               f"{f'; left out: {dropped}' if dropped else ''} -> {out}", err=True)
    for line in unfinished_lines(c["merged"], fits_dir, what="export", again="export"):  # after it, as merge
        click.echo(line, err=True)
    if c.get("setup_problem"):
        click.echo(f"fit3d: warning: these fits were made while the {c['model']} weights in fit3d's cache came from "
                   f"{c['setup_problem']} (unless you gave your own weights): fit them again after a full "
                   "'fit3d setup-model' before training on them", err=True)
    if c["gender"] != "neutral" and fmt in ("spin", "humandata"):
        click.echo(f"fit3d: warning: these are fits of the {c['gender']} model; SPIN's and mmhuman3d's trainers pose "
                   "every ground-truth body with one neutral SMPL, which gives these betas another shape: fit "
                   "pseudo-ground-truth for them with the neutral model (the default)", err=True)
    if fmt == "spin":
        from fit3d.export.spin import static_fits_path

        click.echo(f"fit3d: SPIN's static fits (pose and shape, N x 82) -> {static_fits_path(out)} (copy it to "
                   "SPIN's data/static_fits/<dataset>_fits.npy)", err=True)
    if missing:  # some fits could not be read, the rest was exported (an unreadable summary: exit 0)
        raise click.exceptions.Exit(3)
