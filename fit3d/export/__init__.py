"""Exports that training code reads, one converter per format (as mmhuman3d does):

* ``spin``: SPIN's dataset ``.npz`` (:mod:`fit3d.export.spin`);
* ``humandata``: mmhuman3d's HumanData ``.npz`` (:mod:`fit3d.export.humandata`);
* ``neuralannot``: NeuralAnnot-style JSON keyed by annotation id (:mod:`fit3d.export.neuralannot`).

Every converter takes the people of :func:`fit3d.export.people.exported_people` (fitted,
valid with ``valid_only``, never duplicate annotation ids) and writes one file atomically.
Invalid fits are exported flagged where the format's training code reads the flag, and left out
where it would train on them (:func:`reads_validity`). SPIN and HumanData exports hold each body
in its crop camera frame by default, as the crop-based trainers that read them need
(:mod:`fit3d.export.crop_frame`); ``frame="full"`` keeps the photo's camera frame.
"""

from __future__ import annotations

from pathlib import Path

from fit3d.data.writers import first_fit_model, iter_fit_files
from fit3d.export import humandata, neuralannot, spin
from fit3d.export.crop_frame import to_crop_frame
from fit3d.export.people import exported_people, require_model, without_invalid

#: format name -> ``write(people, out)``.
FORMATS = {"spin": spin.write, "humandata": humandata.write, "neuralannot": neuralannot.write}
#: format name -> the body models whose fits it holds (None: any; the format module's ``MODELS``).
ACCEPTS = {"spin": spin.MODELS, "neuralannot": neuralannot.MODELS, "humandata": None}
#: format name -> the suffix its file must have (``.npz``: SPIN's files, mmhuman3d's HumanData,
#: whose ``dump`` refuses any other, and ``fit3d evaluate --gt``; the NeuralAnnot-style JSON: ``.json``).
SUFFIXES = {"spin": ".npz", "humandata": ".npz", "neuralannot": ".json"}
#: format name -> the camera frames its parameters can be written in, the default first:
#: ``crop`` (each person's crop camera, :mod:`fit3d.export.crop_frame`: what SPIN's and
#: mmhuman3d's crop-based trainers compare their predictions with) or ``full`` (the photo's
#: camera, as fitted: for full-frame trainers such as CLIFF). The NeuralAnnot-style JSON stores the
#: photo's camera (``cam_param``) beside the parameters, so only ``full``.
FRAMES = {"spin": ("crop", "full"), "humandata": ("crop", "full"), "neuralannot": ("full",)}


def check_frame(fmt: str, frame: str | None) -> str:
    """The frame an export of ``fmt`` is written in: ``frame``, or the format's default when None.

    Raises:
        KeyError: unknown format. ValueError: a frame the format cannot hold (:data:`FRAMES`).
    """
    if fmt not in FRAMES:
        raise KeyError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    if frame is None:
        return FRAMES[fmt][0]
    if frame not in FRAMES[fmt]:
        raise ValueError(f"the {fmt} format holds parameters in the {' or '.join(FRAMES[fmt])} camera frame, "
                         f"not {frame!r}")
    return frame


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


def reads_validity(fmt: str, model: str) -> bool:
    """Whether the training code that reads format ``fmt`` of ``model`` fits masks its losses with
    the exported validity flag, so that invalid fits can be exported flagged rather than left out:

    * ``spin``: yes, SPIN's ``BaseDataset`` reads ``has_smpl`` (``datasets/base_dataset.py``);
    * ``humandata``: for SMPL, mmhuman3d's ``HumanImageDataset`` reads ``has_smpl`` per sample;
      its ``HumanImageSMPLXDataset`` sets ``has_smplx`` to 1 whenever ``smplx`` exists
      (``human_image_smplx_dataset.py``), so SMPL-X fits: no; SMPL-H and anny fits have no
      loader there, their ``has_<model>`` is kept for the user's own;
    * ``neuralannot``: no, Hand4Whole's and I2L-MeshNet's COCO loaders take every entry of the
      file as a fit to train on (``is_valid_fit = True`` for any annotation id present).
    """
    if fmt == "neuralannot":
        return False
    return not (fmt == "humandata" and model == "smplx")


def export_fits(fits_dir: str | Path, fmt: str, out: str | Path, valid_only: bool | None = None,
                frame: str | None = None, min_keypoints: int | None = None) -> dict:
    """Export the fits of a run folder (all shards) to ``out`` in format ``fmt``.

    Args:
        frame: ``crop`` (each body in its crop camera frame, :func:`~fit3d.export.crop_frame.to_crop_frame`),
            ``full`` (the photo's camera frame, as fitted) or None: the format's default
            (:data:`FRAMES`: ``crop`` for spin and humandata).
        valid_only: leave out fits marked invalid (True), export them flagged (False), or, None,
            flag them where the format's training code reads the flag and leave them out where it
            does not (:func:`reads_validity`).
        min_keypoints: leave out people with fewer labelled input keypoints (None: no minimum
            beyond the fitting run's own, 6 by default; see :func:`~fit3d.export.people.exported_people`).
    Returns:
        counts: ``frame``, ``people`` in the fits, ``exported``, ``invalid`` (exported, marked invalid:
        ``has_smpl`` 0 / ``"valid": false``), ``dropped`` by reason, ``model``, ``unreadable``,
        ``invalid_dropped_by_format``: invalid fits left out because the format's loaders
        would train on them (``valid_only`` None).
    Raises:
        KeyError: unknown format. ValueError: ``out`` lacks the format's suffix
        (:func:`check_out`), a frame the format cannot hold (:func:`check_frame`), nothing to
        export, or a format that needs SMPL-family parameters given fits of another model (the
        message says how to fit one).
    """
    check_out(fmt, out)
    frame = check_frame(fmt, frame)
    if ACCEPTS[fmt] is not None and (model := first_fit_model(iter_fit_files(fits_dir))) is not None:
        require_model(dict(model=[model]), fmt, ACCEPTS[fmt])  # before reading every fit (minutes at scale)
    people, counts = exported_people(fits_dir, bool(valid_only), min_keypoints)
    counts["invalid_dropped_by_format"] = 0
    if ACCEPTS[fmt] is not None:  # before invalid fits are dropped: the model's refusal is the useful line
        require_model(people, fmt, ACCEPTS[fmt])
    if valid_only is None and counts["invalid"] and not reads_validity(fmt, counts["model"]):
        n_invalid = counts["invalid"]
        people, counts = without_invalid(people, counts)
        counts["invalid_dropped_by_format"] = n_invalid
    if frame == "crop":
        people = to_crop_frame(people)
    counts["frame"] = frame
    FORMATS[fmt](people, Path(out))
    return counts


__all__ = ["ACCEPTS", "FORMATS", "FRAMES", "SUFFIXES", "check_frame", "check_out", "export_fits", "exported_people", "reads_validity"]
