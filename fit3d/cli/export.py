"""``fit3d export``: fits to the files that training code reads."""

from __future__ import annotations

from pathlib import Path

import click

from fit3d.cli.options import errors_as


@click.command("export")
@click.option("--fits", "fits_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Output folder of a fitting run (all its shards).")
@click.option("--format", "fmt", type=click.Choice(["spin", "humandata", "neuralannot"]), required=True,
              help="spin: SPIN's dataset npz (SMPL fits); humandata: mmhuman3d's HumanData npz (SMPL, SMPL-H, "
                   "SMPL-X or anny); neuralannot: JSON keyed by annotation id (SMPL or SMPL-X).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File to write.")
@click.option("--valid-only", is_flag=True, help="Leave out fits marked invalid.")
def export(fits_dir, fmt, out, valid_only):
    """Export fitted people (never skipped ones or duplicate annotation ids) for SPIN, mmhuman3d or NeuralAnnot-style training."""
    from fit3d.export import export_fits

    with errors_as():
        c = export_fits(fits_dir, fmt, out, valid_only)
    dropped = ", ".join(f"{n} {why}" for why, n in c["dropped"].items())
    click.echo(f"fit3d: exported {c['exported']} of {c['people']} people ({c['model']} fits)"
               f"{f'; left out: {dropped}' if dropped else ''} -> {out}", err=True)
