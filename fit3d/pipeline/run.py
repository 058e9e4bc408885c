"""The batch job: image records -> batches -> fitter -> one ``.npz`` per image -> a summary.

* Resumable: images whose ``.npz`` exists are skipped unless ``overwrite``, or unless their
  annotations changed since it was written (its ``input_digest``, :func:`select_images`: they
  are fitted again; an image left without people has its output removed); outputs are
  written after every batch, atomically; on SIGINT/SIGTERM the batch in flight is
  dropped, everything finished is kept and the command says how to resume. A folder
  fitted with other settings is not resumed into (:mod:`fit3d.pipeline.settings`).
* Shardable: ``shard = (i, n)`` takes every n-th image of the sorted list, so n jobs (n
  GPUs, SLURM array tasks) split the work without talking to each other; each writes
  its own summary and never reads the others' outputs.
* Every input accounted for: people with too few usable keypoints, or whose fit gives
  non-finite parameters, are written as ``skipped`` with the reason; a batch whose fit
  raises is split and retried down to single people, and a person that still fails is
  recorded in the summary and in ``<image>.failed.json``, and its image is not written,
  so the next run fits it again. The summary counts every input and sets the exit code
  (:mod:`fit3d.pipeline.summary`).
* A merged dataset (``fit3d merge``) never looks current after new fits: before a run writes
  its first image into the folder it removes the folder's merged dataset and the ``merged``
  totals of ``summary.json``, with one warning (:func:`fit3d.pipeline.merge.retire_merged`);
  a run that writes nothing (a resume of a finished folder) keeps both.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import signal
import time
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from fit3d.data.batching import person_camera
from fit3d.data.conventions import UNMODELLED, convert
from fit3d.data.keypoints import sanitize_keypoints
from fit3d.data.records import ImageRecord, InputProblem, Person
from fit3d.data.writers import failure_path, incomplete_path, output_path, write_json, write_npz
from fit3d.fitters.describe import fitter_settings
from fit3d.fitters.result import FitResult
from fit3d.pipeline.batches import SharedFitting, fit_people
from fit3d.pipeline.interrupt import Interrupted, interruptible
from fit3d.pipeline.merge import retire_merged
from fit3d.pipeline.records import image_record, person_record, reason_kind
from fit3d.pipeline.settings import check_settings, finish_overwrite, normalised
from fit3d.pipeline.summary import RunCounts, versions
from fit3d.pipeline.workers import FitterPool

log = logging.getLogger(__name__)

#: People with fewer usable keypoints (finite, confidence > 0, known to the
#: body model) than this are not fitted: below 6 points a full-body fit is
#: under-determined (6 points x 2 coordinates vs. camera + orientation alone).
MIN_VISIBLE_KEYPOINTS = 6


@dataclass
class RunConfig:
    """Options of a batch run (raises ValueError for a ``focal_length`` that is not a finite
    number > 0 or a ``batch_size`` below 1).

    Attributes:
        out_dir: output folder.
        batch_size: people per fitter call.
        focal_length: pixels for every image (default: the input's intrinsics where it has them,
            ``Person.camera``, else each image's diagonal).
        overwrite: refit images whose ``.npz`` exists.
        shard: ``(i, n)``, zero-based: this job takes images ``i, i+n, i+2n...``.
        limit: at most this many images (after sharding).
        min_visible: see :data:`MIN_VISIBLE_KEYPOINTS`.
        progress: show a progress bar.
        fitter_name: recorded in the output (``"eft"``); None: the fitter's ``name`` (``"fitter"``
            for a callable without one).
        settings: what decides the fits (JSON-able: the fitter's options, model, focal length...);
            recorded in the folder and its summary, and a folder fitted with other settings is
            not resumed into (:func:`fit3d.pipeline.settings.check_settings`). None: the
            body model's name and gender, ``focal_length``, ``min_visible``, the fitter's name
            (``fitter_name`` or its ``name``; a callable without one is not compared) and what the
            fitter says of itself, ``fitter.settings()`` when it has one (SMPLify, EFT, the
            fallback: their options and a fingerprint of their learned weights,
            :mod:`fit3d.fitters.describe`).
        check_settings: False: neither check nor record settings, for a caller that keeps its
            own record (NeuralAnnot: ``annotator_state.json``,
            :func:`fit3d.pipeline.neuralannot.forget_other_annotators`).
        inputs: where the people were read from (JSON-able: the image folder, the annotation
            file and its digest...), recorded in the summary. Images are resumed by name, so a
            rerun from other inputs (another annotation file, or one edited since) keeps the
            images already done as they are: it warns, naming what changed (:func:`input_changes`).
    """

    out_dir: Path
    batch_size: int = 64
    focal_length: float | None = None
    overwrite: bool = False
    shard: tuple[int, int] = (0, 1)
    limit: int | None = None
    min_visible: int = MIN_VISIBLE_KEYPOINTS
    progress: bool = True
    fitter_name: str | None = None
    settings: dict | None = None
    check_settings: bool = True
    inputs: dict | None = None

    def __post_init__(self) -> None:
        f = self.focal_length
        if f is not None and not (isinstance(f, numbers.Real) and not isinstance(f, bool) and math.isfinite(f) and f > 0):
            raise ValueError(f"focal_length must be a finite number of pixels > 0 (or None: the input's or the "
                             f"image diagonal), not {f!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {self.batch_size}")

    @property
    def whole_folder(self) -> bool:
        """Whether this job fits every image of the folder (no ``limit``, one shard): the only
        kind that may ``overwrite`` fits made with other settings."""
        return self.limit is None and self.shard[1] == 1


def parse_shard(text: str, environ: dict | None = None) -> tuple[int, int]:
    """``"i/n"`` with 1 <= i <= n (one-based, as users count) -> zero-based ``(i-1, n)``.

    ``"auto"``: this SLURM array task's shard, from ``SLURM_ARRAY_TASK_ID`` (zero-based
    when the array is ``0-(n-1)``, as ``sbatch --array`` and submitit make it) and
    ``SLURM_ARRAY_TASK_COUNT`` (else from ``SLURM_ARRAY_TASK_MAX``); the task id is taken
    relative to ``SLURM_ARRAY_TASK_MIN`` in steps of ``SLURM_ARRAY_TASK_STEP`` (``--array=0-8:2``:
    ids 0, 2, ..., 8 are shards 1-5 of 5). An array whose ids are not one range (a list such
    as ``--array=1,3,7``) and a one-task array other than ``--array=0`` (a task resubmitted alone) are refused:
    their split cannot be told.

    Raises:
        ValueError: malformed text, out-of-range index, or ``auto`` outside a SLURM array.
    """
    if text.strip() == "auto":
        import os

        env = os.environ if environ is None else environ
        if "SLURM_ARRAY_TASK_ID" not in env:
            raise ValueError("--shard auto needs a SLURM array job (SLURM_ARRAY_TASK_ID is not set)")
        if "SLURM_ARRAY_TASK_COUNT" not in env and "SLURM_ARRAY_TASK_MAX" not in env:
            raise ValueError("--shard auto needs the array's size: SLURM_ARRAY_TASK_COUNT or SLURM_ARRAY_TASK_MAX "
                             "is not set (give --shard i/n)")

        def number(name, default=None):
            try:
                return int(env[name]) if name in env else default
            except ValueError:
                raise ValueError(f"--shard auto: {name}={env[name]!r} is not a number") from None

        lo, step = number("SLURM_ARRAY_TASK_MIN", 0), number("SLURM_ARRAY_TASK_STEP", 1)
        hi, task = number("SLURM_ARRAY_TASK_MAX"), number("SLURM_ARRAY_TASK_ID")
        if step < 1:
            raise ValueError(f"--shard auto: SLURM_ARRAY_TASK_STEP={step} (give --shard i/n)")
        n = number("SLURM_ARRAY_TASK_COUNT") if "SLURM_ARRAY_TASK_COUNT" in env else (hi - lo) // step + 1
        if hi is not None and "SLURM_ARRAY_TASK_MIN" in env and hi - lo != (n - 1) * step:
            raise ValueError(f"--shard auto: the array's {n} task ids are not one range {lo}-{hi}:{step} (a list "
                             "such as --array=1,3,7, or a resubmitted subset): give --shard i/n")
        if n == 1 and task != 0:  # e.g. one task of a larger array resubmitted alone (--array=17)
            raise ValueError(f"--shard auto: an array of one task, id {task}, does not say its split (a task "
                             f"resubmitted alone?): give --shard {task + 1}/N or {task}/N as the array counted "
                             "(--shard 1/1 for the whole folder)")
        i, rest = divmod(task - lo, step)
        if rest or not 0 <= i < n:
            where = "is not on its array's step" if rest and lo <= task <= lo + (n - 1) * step else "is outside its array"
            raise ValueError(f"SLURM array task {env['SLURM_ARRAY_TASK_ID']} {where} of {n} tasks (ids "
                             f"{lo}-{lo + (n - 1) * step}:{step})")
        return i, n
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 2/8), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard {text}: need 1 <= i <= n")
    return i - 1, n


def shard_images(images: list[ImageRecord], shard: tuple[int, int]) -> list[ImageRecord]:
    """The images of shard ``(i, n)`` (zero-based): every n-th by image key, from the i-th."""
    i, n = shard
    return sorted(images, key=lambda r: r.image_key)[i::n]


def inputs_changed_warning(changed: str, done: int, refit: int = 0, unverified: int = 0, would: bool = False) -> str:
    """The warning of a run (``would``: a dry run) whose inputs differ from the folder's last run's:
    ``refit`` images whose people changed are fitted again (:func:`select_images`), the ``done``
    others keep their fits, ``unverified`` of them without a record of what they were fitted from."""
    verb = "would be" if would else "is" if refit == 1 else "are"
    again = f"{refit} image{'s' if refit != 1 else ''} whose annotations changed {verb} fitted again"
    kept = f"the {done} other images already done {'would keep' if would else 'keep'} their fits"
    if unverified:
        kept += (f" ({unverified} of them written before fit3d recorded what each output is fitted from, so not "
                 "compared; --overwrite refits them all)")
    return f"this folder's earlier run read other inputs ({changed}): {again}; {kept}"


_UNREADABLE = object()  #: :func:`stored_input_digest` of an output that is no readable archive


def refit_warning(changed: int, would: bool = False) -> str:
    """The warning of a run (``would``: a dry run) that fits again ``changed`` done images whose
    annotations changed since their fit, its inputs otherwise as the folder's last run's."""
    verb = "would be" if would else "is" if changed == 1 else "are"
    return (f"{changed} image{'s' if changed != 1 else ''} already done {verb} fitted again: "
            f"{'its' if changed == 1 else 'their'} annotations changed since {'it was' if changed == 1 else 'they were'} "
            "fitted")


def _read_output(path: Path, read):
    """``read(npz)`` of an image's output, or :data:`_UNREADABLE` when the file is no readable
    ``.npz`` (empty, cut short, overwritten from outside; a damaged member read: its CRC fails)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return read(z)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return _UNREADABLE


def stored_input_digest(path: Path):
    """The ``input_digest`` an image's output records (:meth:`~fit3d.data.records.ImageRecord.input_digest`),
    None when it records none (written before fit3d stored it), or :data:`_UNREADABLE`."""
    return _read_output(path, lambda z: str(z["input_digest"]) if "input_digest" in z.files else None)


def _holds_people(path: Path) -> bool:
    """Whether an image's output exists and holds at least one person (False when unreadable)."""
    return path.is_file() and _read_output(path, lambda z: "annot_id" in z.files and z["annot_id"].size > 0) is True


class Selection(NamedTuple):
    """What :func:`select_images` chose for a job."""

    todo: list  #: the images to fit, in image order
    already: int  #: images done before and kept
    mine: int  #: this job's images (after sharding and ``--limit``)
    changed: int = 0  #: done images refitted because their annotations changed since their fit
    unverified: int = 0  #: done images kept without that check (their output records no digest)


def select_images(images: list[ImageRecord], config: RunConfig, warn: bool = True) -> Selection:
    """The images this job fits: sharded, limited, without those already done: written, not
    marked incomplete or failed by an earlier run, and fitted from the annotations they have now.

    Each output records what its people were fitted from (``input_digest``,
    :meth:`~fit3d.data.records.ImageRecord.input_digest`); an output whose digest differs from the
    image's now (a corrected keypoint, an added or removed annotation: since this folder's last
    run or any earlier one) is fitted again, so a resumed, resharded or interrupted rerun from
    corrected annotations never keeps stale fits. Outputs written before the digest existed are
    kept (``unverified``). An output that is no ``.npz`` archive (empty, cut short, overwritten by
    something else: fit3d writes atomically, so only damage from outside does this) is not done:
    it is fitted again, with one warning counting such files (``warn``). A file damaged inside
    (its archive directory intact) still counts as done: ``fit3d merge`` and the exports name it;
    delete it to refit it.
    """
    mine = shard_images(images, config.shard)
    if config.limit is not None:
        mine = mine[: config.limit]
    if config.overwrite:
        return Selection(mine, 0, len(mine))
    todo, damaged, changed, unverified = [], [], 0, 0
    for r in mine:
        out = output_path(config.out_dir, r.image_key)
        if not r.people or not out.is_file() or incomplete_path(config.out_dir, r.image_key).is_file() \
                or failure_path(config.out_dir, r.image_key).is_file():
            todo.append(r)
            continue
        stored = stored_input_digest(out)  # (one read of the archive's directory: the damage check too)
        if stored is _UNREADABLE:
            todo.append(r)
            damaged.append(out.name)
        elif stored is None:
            unverified += 1
        elif stored != r.input_digest():
            todo.append(r)
            changed += 1
    if damaged and warn:
        log.warning("%d output%s in %s cannot be read (e.g. %s): fitted again", len(damaged),
                    "s" if len(damaged) > 1 else "", config.out_dir, damaged[0])
    return Selection(todo, len(mine) - len(todo), len(mine), changed, unverified)


#: People whose usable keypoints lie within this many pixels (standard deviation) of one line
#: are skipped: all on one point or one line, an annotation no 3D body can be fitted to (fitted,
#: they came out "valid" at any depth).
MIN_SPREAD_PX = 0.5


def usable_keypoints(person: Person, model_convention) -> tuple[int, int]:
    """``(usable, unusable)``: keypoints that are labelled, known to the model and usable, and
    the labelled ones that are not usable (non-finite, or beyond :data:`~fit3d.data.keypoints.MAX_KEYPOINT_PX`)."""
    mapped, n_bad = _model_keypoints(person, model_convention)
    return int((mapped[:, 2] > 0).sum()), n_bad


def _model_keypoints(person: Person, model_convention) -> tuple[np.ndarray, int]:
    """``((K, 3) keypoints in the model's convention, unusable count)``: NaN points unlabelled; the
    count includes those its reader already set aside (``Person.keypoints_ignored``)."""
    clean, n_bad = sanitize_keypoints(person.keypoints_2d)
    return convert(clean, person.convention, model_convention), n_bad + person.keypoints_ignored


def skip_reason(person: Person, model_convention, min_visible: int = MIN_VISIBLE_KEYPOINTS) -> str | None:
    """Why ``person`` cannot be fitted from its keypoints, or None: fewer than ``min_visible``
    usable keypoints (:func:`usable_keypoints`), or usable keypoints all on one point or line
    (:func:`keypoint_spread_px` below :data:`MIN_SPREAD_PX`). The text before the first colon
    is the reason's kind, counted in the summary."""
    mapped, n_bad = _model_keypoints(person, model_convention)
    usable = int((mapped[:, 2] > 0).sum())
    if usable < min_visible:
        return f"too few usable keypoints: {usable} < {min_visible}" + (
            f" ({n_bad} non-finite or far-off keypoints ignored)" if n_bad else "")
    spread = keypoint_spread_px(mapped)
    if spread < MIN_SPREAD_PX:
        xy = mapped[mapped[:, 2] > 0, :2]
        hint = ("; all coordinates lie within 0-1: normalised? fit3d reads pixels (OpenPose: --keypoint_scale 0)"
                if len(xy) and np.abs(xy).max() <= 1.0 else "")
        return f"degenerate keypoints: all on one point or line ({spread:.2f} px across, < {MIN_SPREAD_PX}){hint}"
    return None


def keypoint_spread_px(keypoints_2d: np.ndarray) -> float:
    """The spread (px) of the labelled points of ``keypoints_2d`` ``(K, 3)`` across their main
    line: the smaller standard deviation of the centred points (second singular value /
    sqrt(n)); 0 when they all lie on one point or one straight line (or are fewer than 3)."""
    xy = keypoints_2d[keypoints_2d[:, 2] > 0, :2].astype(np.float64)
    if len(xy) < 3:
        return 0.0
    sv = np.linalg.svd(xy - xy.mean(0), compute_uv=False)
    return float(sv[1] / np.sqrt(len(xy)))


def layout_problems(images: list[ImageRecord], model_convention) -> list[InputProblem]:
    """One warning per input keypoint layout that names points the model does not have
    (they are ignored; see :data:`fit3d.data.conventions.UNMODELLED`).

    Raises:
        ValueError: some layout shares no keypoint with the model (nothing could be
            fitted from it): raised before anything is written.
    """
    out, seen = [], set()
    model = set(model_convention.names)
    for r in images:
        for p in r.people:
            conv = p.convention
            if conv.names in seen:
                continue
            seen.add(conv.names)
            usable = [n for n in conv.names if n in model]
            if not usable:
                raise ValueError(f"the {conv.name!r} keypoints ({', '.join(conv.names[:6])}...) share no name with "
                                 f"the {model_convention.name} model's keypoints ({', '.join(model_convention.names)})")
            ignored = [n for n in conv.names if n not in model]
            if ignored:
                kind = "not modelled" if set(ignored) <= set(UNMODELLED) else "unknown to the model"
                out.append(InputProblem(f"keypoint layout {conv.name!r}", f"{len(usable)} of {len(conv)} keypoints "
                                        f"used; ignored ({kind}): {_some(ignored)}", "warning"))
    return out


def _some(names: list[str], shown: int = 12) -> str:
    """``names`` joined, the first ``shown`` of a long list and how many more (COCO-WholeBody's 133)."""
    more = len(names) - shown
    return ", ".join(names) if more <= 2 else f"{', '.join(names[:shown])} and {more} more"


def _record(path: Path, data: dict) -> None:
    """Write a ``.failed.json`` note; one that cannot be written is not a reason to stop (the
    summary lists the failures too, and a failed image has no ``.npz``, so it is refitted)."""
    try:
        write_json(path, data)
    except OSError:
        pass


class _Job:
    """One run's state: what to fit, what was done, where it goes."""

    def __init__(self, fitter, body_model, config: RunConfig, counts: RunCounts) -> None:
        self.fitter, self.body_model, self.config, self.counts = fitter, body_model, config, counts
        self.conv = body_model.keypoint_convention
        self.out_dir = Path(config.out_dir)
        self.extra_defaults = dict(getattr(fitter, "extra_defaults", {}))
        self.unstored: list[str] | None = None  #: extras not stored (None: no result seen yet)
        self.bar = None
        self.retired: list[str] | None = None  #: merged dataset files removed (None: not checked yet)

    def warn_unstored(self, result: FitResult | None) -> None:
        """Once per run: say which of the fitter's extras are not stored (the fitter has no
        ``extra_defaults`` entry for them, e.g. a plain function wrapping a fitter)."""
        if result is None or self.unstored is not None:
            return
        self.unstored = sorted(set(result.extras) - set(self.extra_defaults))
        if self.unstored:
            log.warning("the fitter's extras %s are not stored: it gives no values for skipped people "
                        "(give the fitter an extra_defaults dict, e.g. extra_defaults = fitter.extra_defaults "
                        "on a wrapper)", ", ".join(self.unstored))

    def before_writing(self) -> None:
        """Once per run, before its first image's output: retire an earlier merge of the folder
        (:func:`~fit3d.pipeline.merge.retire_merged`) and say so in one warning.

        Raises:
            ValueError: see :func:`~fit3d.pipeline.merge.retire_merged`.
        """
        if self.retired is not None:
            return
        removed, elsewhere = retire_merged(self.out_dir)
        self.retired = [str(p) for p in removed]
        what = [f"removed {p}" for p in removed] + [f"{p} is out of date" for p in elsewhere]
        if what:
            again = f"fit3d merge --fits {self.out_dir}" + "".join(f" --out {p}" for p in elsewhere[:1])
            log.warning("%s (merged from the earlier fits of %s, which this run changes): run '%s' "
                        "again when the fitting is done", "; ".join(what), self.out_dir, again)

    def chunk(self, images: list[ImageRecord]) -> None:
        """Fit every person of ``images`` and write each image whose people are all done."""
        entries, to_fit = self.prepare(images)
        self.finish(images, entries, fit_people(self.fitter, to_fit, self.conv, self.config, self.body_model.device))

    def prepare(self, images: list[ImageRecord]) -> tuple[list[tuple], list[Person]]:
        """``(entries, to_fit)``: one ``(image index, person, skip reason or None)`` per person
        of ``images``, and the people to fit (those without a skip reason), in order."""
        config = self.config
        entries = []
        for ii, img in enumerate(images):
            for p in img.people:
                entries.append((ii, p, skip_reason(p, self.conv, config.min_visible)))
        return entries, [p for _, p, r in entries if r is None]

    def finish(self, images: list[ImageRecord], entries: list[tuple], results: list[tuple]) -> None:
        """Record the :func:`fit_people` ``results`` of :meth:`prepare`'s people to fit and
        write each image whose people are all done."""
        c, config = self.counts, self.config
        to_fit = [p for _, p, r in entries if r is None]
        fits = dict(zip(map(id, to_fit), results))
        records: dict[int, list[dict]] = {i: [] for i in range(len(images))}
        failed: dict[int, list[dict]] = {}
        for ii, p, reason in entries:
            img = images[ii]
            res, row = (None, 0) if reason is not None else fits[id(p)]
            if reason is None and res is None:  # the fit raised, even alone (an unusable camera too)
                failed.setdefault(ii, []).append(dict(image=img.image_key, annot_id=p.annot_id, reason=row))
                continue
            try:
                focal, pp = person_camera(p, config.focal_length)
            except ValueError:  # (a skipped person's unusable camera: stored as unknown)
                focal, pp = (float("nan"),) * 2, (float("nan"),) * 2
            if res is not None:
                finite = all(torch.isfinite(getattr(res, k)[row]).all() for k in ("global_orient", "body_pose",
                                                                                   "betas", "transl"))
                if not finite:
                    res, reason = None, "fit gave non-finite parameters"
                self.warn_unstored(res)
            records[ii].append(person_record(p, res, row, self.body_model, focal, pp, reason or "",
                                             self.extra_defaults))
        for ii, img in enumerate(images):
            if ii in failed:  # not written: the whole image is fitted again by the next run
                c.images_failed += 1
                c.people_failed += len(failed[ii])
                c.people_deferred += len(records[ii])
                c.failures.extend(failed[ii])
                _record(failure_path(self.out_dir, img.image_key), dict(image=img.image_key, failures=failed[ii]))
                continue
            self.before_writing()
            path = output_path(self.out_dir, img.image_key)
            try:
                if img.dropped:  # marked before the .npz exists: an interruption between the two refits it
                    write_json(incomplete_path(self.out_dir, img.image_key),
                               dict(image=img.image_key, unreadable_annotations=img.dropped))
                write_npz(path, image_record(img, records[ii], self.body_model, config.fitter_name,
                                             f"{config.shard[0] + 1}/{config.shard[1]}"))
            except OSError as e:  # this image's output cannot be written: the others carry on
                c.images_failed += 1
                c.people_deferred += len(records[ii])
                failure = dict(image=img.image_key, annot_id=None, reason=f"could not write {path}: {e}")
                c.failures.append(failure)
                _record(failure_path(self.out_dir, img.image_key), dict(image=img.image_key, failures=[failure]))
                continue
            failure_path(self.out_dir, img.image_key).unlink(missing_ok=True)
            if img.dropped:  # written without the people whose annotations could not be read
                c.images_incomplete += 1
            else:
                incomplete_path(self.out_dir, img.image_key).unlink(missing_ok=True)
            c.images_written += 1
            for rec in records[ii]:  # counted once written
                if rec["status"] == "fitted":
                    c.people_fitted += 1
                    c.people_valid += int(rec["valid"])
                    c.reproj_error_px.append(float(rec["reproj_error_px"]))
                else:
                    c.skipped[reason_kind(str(rec["skip_reason"]))] += 1
        if self.bar is not None:
            self.bar.update(len(entries))


def _chunks(todo: list[ImageRecord], batch_size: int):
    """Consecutive groups of whole images holding at least ``batch_size`` people (the last: the rest)."""
    chunk, n = [], 0
    for img in todo:
        chunk.append(img)
        n += len(img.people)
        if n >= batch_size:
            yield chunk
            chunk, n = [], 0
    if chunk:
        yield chunk


def fitter_description(fitter) -> dict:
    """``fitter.settings()`` with each key as ``fitter.<key>`` (so none meets a command-line option
    of the same name recorded differently); empty for a fitter without ``settings``."""
    return {f"fitter.{k}": v for k, v in (fitter_settings(fitter) or {}).items()}


def stale_outputs(todo: list[ImageRecord], out_dir: Path) -> list[ImageRecord]:
    """The images of ``todo`` left without people (their annotations removed from a corrected
    file; not those whose annotations could not be read) whose output still holds fits, or that
    have a failure record: a run removes those files, as an image without people has no output,
    so that no merge or export serves stale fits (``--dry-run`` says which it would remove)."""
    return [r for r in todo if not r.people and not r.dropped and (
        _holds_people(output_path(out_dir, r.image_key)) or failure_path(out_dir, r.image_key).is_file())]


def stale_outputs_message(emptied: list[ImageRecord], would: bool = False) -> str:
    """What a run says about :func:`stale_outputs` (``would``: as ``--dry-run`` says it)."""
    many = len(emptied) > 1
    return (f"{len(emptied)} image{'s' if many else ''} no longer annotated with people (e.g. {emptied[0].image_key}) "
            f"had fits of earlier inputs: {'their outputs' if many else 'its output'} {'would be ' if would else ''}removed")

def run(images: list[ImageRecord], fitter, body_model, config: RunConfig,
        problems: list[InputProblem] | None = None, pool: FitterPool | None = None) -> dict:
    """Fit every person of ``images`` and write the outputs: resumable (images whose ``.npz``
    exists are skipped unless ``overwrite``; writes are atomic; Ctrl-C keeps what is done),
    shardable (``RunConfig.shard``), every input accounted for (skipped people with their reason,
    failing batches split and retried, failures in the summary and refitted by the next run). The
    module ``fit3d.pipeline.run`` (shadowed by this function in ``fit3d.pipeline``:
    ``importlib.import_module("fit3d.pipeline.run").__doc__``) says more.

    Args:
        images: records from :mod:`fit3d.data.readers`.
        fitter: ``fitter(PersonBatch) -> FitResult``; its ``extra_defaults`` (a dict: each extra's
            value for a skipped person) names the ``FitResult.extras`` that are stored; a fitter
            without it (a plain function wrapping one) has its extras left out, with one warning.
        body_model: the fitter's body model (its convention, names and shapes).
        config: see :class:`RunConfig`.
        problems: input problems found by the reader, copied into the summary.
        pool: worker processes holding the same fitter (:mod:`fit3d.pipeline.workers`): with
            more than one batch to fit, this process and the pool's workers share them. Its
            owner closes it (a run interrupted while sharing stops the workers at once).
            None: everything is fitted here.
    Returns:
        The summary dict (``this_run``: :class:`~fit3d.pipeline.summary.RunCounts`,
        with ``exit_code``), also written to ``summary.json``
        (``summary.shard-i-of-n.json`` when sharded).
    Raises:
        ValueError: an input keypoint layout shares no keypoint with the model
            (raised before anything is written), the output folder holds fits made with
            other ``settings`` (without ``overwrite``), or the output folder or the summary
            cannot be written (an image's output that cannot be written is a failed image,
            fitted again by the next run).
    """
    problems = list(problems or []) + layout_problems(images, body_model.keypoint_convention)
    out_dir = make_output_dir(config.out_dir)
    name = config.fitter_name or getattr(fitter, "name", None)
    config = replace(config, fitter_name=str(name or "fitter"))
    # without the caller's settings, the fitter's own description (fitter.settings(): its options
    # and a fingerprint of its weights), its name and the body model keep a folder from being mixed
    described = fitter_description(fitter) if config.check_settings and config.settings is None else {}
    settings = config.settings if config.settings is not None else dict(
        model=body_model.name, gender=str(getattr(body_model, "gender", "neutral")).lower(),
        focal_length=config.focal_length, min_visible=config.min_visible,
        **({"fitter": str(name)} if name else {}), **described)
    overwriting = config.check_settings and check_settings(out_dir, settings, config.overwrite,
                                                           whole_folder=config.whole_folder)
    previous = previous_summary(out_dir, config.shard)
    changed = input_changes(previous, config.inputs)
    selection = select_images(images, config)
    todo, already, mine = selection.todo, selection.already, selection.mine
    if changed and (already or selection.changed):
        log.warning("%s", inputs_changed_warning(changed, already, selection.changed, selection.unverified))
    elif selection.changed:  # e.g. the rest of a corrected run that was interrupted or cut by --limit
        log.warning("%s", refit_warning(selection.changed))
    counts = RunCounts(images=mine, images_already_done=already,
                       input_errors=sum(p.severity == "error" for p in problems),
                       input_warnings=sum(p.severity != "error" for p in problems),
                       shard_empty=mine == 0 and config.shard[1] > 1 and bool(images))
    job = _Job(fitter, body_model, config, counts)
    counts.images_without_people = sum(1 for r in todo if not r.people)
    emptied = stale_outputs(todo, out_dir)
    if emptied:
        job.before_writing()
        for r in emptied:
            for stale in (output_path(out_dir, r.image_key), failure_path(out_dir, r.image_key),
                          incomplete_path(out_dir, r.image_key)):
                stale.unlink(missing_ok=True)
        log.warning("%s", stale_outputs_message(emptied))
        counts.outputs_removed = len(emptied)
    todo = [r for r in todo if r.people]
    i, n = config.shard
    head = dict(fitter=config.fitter_name, model=body_model.name, device=str(body_model.device), shard=f"{i + 1}/{n}")
    if config.inputs is not None:
        head["inputs"] = config.inputs
        # a folder whose done images may come from other inputs (outputs without a digest, which
        # select_images cannot compare) stays marked, until a whole-folder --overwrite
        mixed = (changed if selection.unverified else "") or (
            "" if config.overwrite and config.whole_folder else previous.get("inputs_changed", ""))
        if mixed:
            head["inputs_changed"] = mixed
    if config.limit is not None:  # what --limit left of this shard unfitted (fit3d merge says so)
        rest = shard_images(images, config.shard)[mine:]
        head["images_left_by_limit"] = sum(1 for r in rest if r.people and (
            config.overwrite or not output_path(out_dir, r.image_key).is_file()))
    t0, shared = time.perf_counter(), None
    with interruptible():  # from the start marker on: a signal at any point is recorded as an interruption
        try:
            if todo:  # until the run's summary replaces it: a run killed outright (SIGKILL, a node lost) is unfinished
                write_summary(out_dir, config.shard,
                              dict(head, running=True, started=time.strftime("%Y-%m-%dT%H:%M:%S%z")))
            if config.progress:
                from tqdm import tqdm

                job.bar = tqdm(total=sum(len(r.people) for r in todo), unit="person",
                               desc=f"fit3d {config.fitter_name}", dynamic_ncols=True)
            chunks = list(_chunks(todo, config.batch_size))
            shared = SharedFitting(job, pool) if pool is not None and len(chunks) > 1 else None
            if shared is not None:
                shared.run(chunks, pool.threads)
            else:
                for chunk in chunks:
                    job.chunk(chunk)
        except (Interrupted, KeyboardInterrupt) as e:
            counts.interrupted = getattr(e, "signum", signal.SIGINT)
        except Exception as e:  # the start marker would read "still running": the summary says what stopped it
            if todo:
                _record_stop(out_dir, config.shard, dict(head, this_run=counts.as_dict(), stopped_by=str(e)))
            raise
    if job.bar is not None:
        job.bar.close()
    elapsed = time.perf_counter() - t0
    summary = dict(
        head, this_run=dict(counts.as_dict(), seconds=round(elapsed, 3),
                      fits_per_second=round(counts.people_fitted / elapsed, 3) if elapsed > 0 else 0.0),
        input_problems=[asdict(p) for p in problems], versions=versions(), batch_size=config.batch_size,
        processes=1 + len(shared.worker_pids) if shared else 1,  # (those that fitted)
        threads_per_process=pool.threads if shared and shared.worker_pids else torch.get_num_threads(),
    )
    if job.retired:
        summary["merged_dataset_removed"] = job.retired
    if config.check_settings:
        summary["settings"] = normalised(settings)
    if overwriting and not counts.interrupted and not counts.images_failed:  # every image refitted
        finish_overwrite(out_dir, settings)
    schedule = getattr(fitter, "schedule", None)
    if schedule is not None:
        summary["schedule"] = [asdict(s) for s in schedule]
    write_summary(out_dir, config.shard, summary)
    return summary


def _record_stop(out_dir: Path, shard: tuple[int, int], summary: dict) -> None:
    """Replace a run's start marker by what it did before an error stopped it (best effort: the
    error that is being raised is the one to report)."""
    try:
        write_summary(out_dir, shard, summary)
    except ValueError:
        pass


def previous_summary(out_dir: str | Path, shard: tuple[int, int]) -> dict:
    """The shard's summary file in ``out_dir`` as its last run left it (``{}`` without one)."""
    try:
        old = json.loads(shard_file(out_dir, "summary", shard).read_text())
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def input_changes(previous: dict, inputs: dict | None) -> str:
    """What differs between ``inputs`` and those a shard's last summary (``previous``) records
    (``"annotations: a.json -> b.json"``, ``"annotations_digest: ..."``); "" when nothing
    differs, or either side records none (a new folder, a folder from before the record)."""
    old = previous.get("inputs")
    if not inputs or not isinstance(old, dict):
        return ""
    diff = [f"{k}: {old.get(k)} -> {inputs.get(k)}" for k in sorted(set(old) | set(inputs)) if old.get(k) != inputs.get(k)]
    return "; ".join(diff)


def make_output_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` (and its parents) if needed; returns it.

    Raises:
        ValueError: it cannot be created (a one-line error for the command line).
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the output folder {out_dir}: {e}") from e
    return out_dir


def check_output_dir(out_dir: str | Path) -> Path:
    """Check, without creating anything, that :func:`make_output_dir` could create ``out_dir``
    and write in it (for dry runs): its nearest existing ancestor is a folder this process may
    write in. Returns it.

    Raises:
        ValueError: it could not be created or written in (a one-line error for the command line).
    """
    import os

    out_dir = Path(out_dir)
    there = out_dir.absolute()
    while not there.exists() and there != there.parent:
        there = there.parent
    if not there.is_dir():
        raise ValueError(f"cannot create the output folder {out_dir}: {there} is not a folder")
    if not os.access(there, os.W_OK | os.X_OK):
        raise ValueError(f"cannot create the output folder {out_dir}: no permission to write in {there}")
    return out_dir


def shard_file(out_dir: str | Path, stem: str, shard: tuple[int, int]) -> Path:
    """A per-job file of ``out_dir``: ``<stem>.json``, or ``<stem>.shard-i-of-n.json`` for shard
    ``(i - 1, n)`` (``summary``, NeuralAnnot's ``annotator_state``)."""
    i, n = shard
    return Path(out_dir) / (f"{stem}.json" if n == 1 else f"{stem}.shard-{i + 1}-of-{n}.json")


def write_summary(out_dir: str | Path, shard: tuple[int, int], summary: dict) -> Path:
    """Write a run's summary (:func:`shard_file` ``summary``); returns its path. The ``merged``
    totals of an earlier ``fit3d merge`` that the file holds are kept (a run that wrote new fits
    has removed them first: :meth:`_Job.before_writing`).

    Raises:
        ValueError: it cannot be written.
    """
    path = shard_file(out_dir, "summary", shard)
    old = previous_summary(out_dir, shard)
    if "merged" in old and "merged" not in summary:
        summary = dict(summary, merged=old["merged"])
    try:
        write_json(path, summary)
    except OSError as e:
        raise ValueError(f"cannot write the run's summary {path}: {e}") from e
    return path
