"""Exports that training code reads, one converter per format (as mmhuman3d does):

* ``spin``: SPIN's dataset ``.npz`` (:mod:`fit3d.export.spin`);
* ``humandata``: mmhuman3d's HumanData ``.npz`` (:mod:`fit3d.export.humandata`);
* ``neuralannot``: NeuralAnnot-style JSON keyed by annotation id (:mod:`fit3d.export.neuralannot`).

Every converter takes the people of :func:`fit3d.export.people.exported_people` (fitted,
valid with ``valid_only``, never duplicate annotation ids) and writes one file atomically.
"""

from __future__ import annotations

from pathlib import Path

from fit3d.export import humandata, neuralannot, spin
from fit3d.export.people import exported_people

#: format name -> ``write(people, out)``.
FORMATS = {"spin": spin.write, "humandata": humandata.write, "neuralannot": neuralannot.write}
#: format name -> the suffix its file must have (``.npz``: SPIN's files, mmhuman3d's HumanData,
#: whose ``dump`` refuses any other, and ``fit3d evaluate --gt``; the NeuralAnnot-style JSON: ``.json``).
SUFFIXES = {"spin": ".npz", "humandata": ".npz", "neuralannot": ".json"}


def check_out(fmt: str, out: str | Path) -> None:
    """Refuse an output path whose suffix is not the format's (:data:`SUFFIXES`).

    The file is written where ``out`` says, as every fit3d command writes its ``--out``: a
    suffix is never appended, so a wrong one is an error before anything is read.

    Raises:
        KeyError: unknown format. ValueError: the suffix is not the format's (one line
        naming the expected suffix and the path with it).
    """
    if fmt not in FORMATS:
        raise KeyError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    out, want = Path(out), SUFFIXES[fmt]
    if out.suffix != want:
        raise ValueError(f"{out} does not end in {want}, the suffix of a {fmt} export (what reads it goes by "
                         f"it): give {out.with_suffix(want) if out.suffix else f'{out}{want}'}")


def export_fits(fits_dir: str | Path, fmt: str, out: str | Path, valid_only: bool = False) -> dict:
    """Export the fits of a run folder (all shards) to ``out`` in format ``fmt``.

    Returns:
        counts: ``people`` in the fits, ``exported``, ``invalid`` (exported, marked invalid:
        ``has_smpl`` 0 / ``"valid": false``), ``dropped`` by reason, ``model``.
    Raises:
        KeyError: unknown format. ValueError: ``out`` lacks the format's suffix
        (:func:`check_out`), nothing to export, or a format that needs SMPL-family
        parameters given fits of another model (the message says how to fit one).
    """
    check_out(fmt, out)
    people, counts = exported_people(fits_dir, valid_only)
    FORMATS[fmt](people, Path(out))
    return counts


__all__ = ["FORMATS", "SUFFIXES", "check_out", "export_fits", "exported_people"]
