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


def export_fits(fits_dir: str | Path, fmt: str, out: str | Path, valid_only: bool = False) -> dict:
    """Export the fits of a run folder (all shards) to ``out`` in format ``fmt``.

    Returns:
        counts: ``people`` in the fits, ``exported``, ``dropped`` by reason, ``model``.
    Raises:
        KeyError: unknown format. ValueError: nothing to export, or a format that needs
        SMPL-family parameters given fits of another model (the message says how to fit one).
    """
    if fmt not in FORMATS:
        raise KeyError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    people, counts = exported_people(fits_dir, valid_only)
    FORMATS[fmt](people, Path(out))
    return counts


__all__ = ["FORMATS", "export_fits", "exported_people"]
