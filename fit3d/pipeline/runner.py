"""The batch job: image records -> batches -> fitter -> one ``.npz`` per image -> a summary.

* Resumable: images whose ``.npz`` exists are skipped unless ``overwrite``, or unless their
  annotations changed since it was written (its ``input_digest``, :func:`~fit3d.pipeline.selection.select_images`: they
  are fitted again; an image left without people has its output removed); outputs are
  written after every batch, atomically; on SIGINT/SIGTERM the batch in flight is
  dropped, everything finished is kept and the command says how to resume. A folder
  fitted with other settings is not resumed into (:mod:`fit3d.pipeline.settings`).
* Shardable: ``shard = (i, n)`` takes the images whose key hashes to shard i
  (:func:`~fit3d.pipeline.selection.shard_of`), so n jobs (n
  GPUs, SLURM array tasks) split the work without talking to each other; each writes
  its own summary and never reads the others' outputs.
* Every input accounted for: people with too few usable keypoints, or whose fit gives
  non-finite parameters, are written as ``skipped`` with the reason; a batch whose fit
  raises is split and retried down to single people, and a person that still fails is
  recorded in the summary and in ``<image>.failed.json``, and its image is not written,
  so the next run fits it again. The summary counts every input and sets the exit code
  (:mod:`fit3d.pipeline.summary`).
* A merged dataset (``fit3d merge``) never looks current after new fits: before a run writes
  its first image into the folder, and again when it ends (a merge made while it ran), it
  removes the folder's merged dataset and the ``merged`` totals of ``summary.json``, with one
  warning (:func:`fit3d.pipeline.merge.retire_merged`);
  a run that writes nothing (a resume of a finished folder) keeps both.
"""

from __future__ import annotations

import logging
import math
import numbers
import signal
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from fit3d.body_models.weights import setup_state
from fit3d.data.batching import person_camera
from fit3d.data.records import ImageRecord, InputProblem, Person
from fit3d.data.writers import (failure_path, incomplete_path, output_path, remove_stale_temporaries, write_json,
                                write_npz)
from fit3d.fitters.base import batch_size_for
from fit3d.fitters.describe import fitter_settings
from fit3d.fitters.result import FitResult
from fit3d.pipeline.batches import MemoryLimit, SharedFitting, fit_people
from fit3d.pipeline.interrupt import Interrupted, deferred, interruptible
from fit3d.pipeline.lock import run_lock
from fit3d.pipeline.merge import DATASET_FILE, retire_merged
from fit3d.pipeline.records import image_record, person_record, reason_kind
from fit3d.pipeline.settings import check_settings, finish_overwrite, normalised
from fit3d.pipeline.plan import plan_run
from fit3d.pipeline.selection import shard_images
from fit3d.pipeline.skips import MIN_VISIBLE_KEYPOINTS, layout_problems, skip_reason
from fit3d.pipeline.summary import RunCounts, mark_unwritten, versions, write_summary
from fit3d.pipeline.workers import FitterPool

log = logging.getLogger("fit3d.pipeline.run")  # (the name users filter on, as before the module was renamed)


@dataclass
class RunConfig:
    """Options of a batch run (raises ValueError for a ``focal_length`` that is not a finite
    number > 0, a ``batch_size`` below 1, a ``shard`` other than ``(i, n)`` with ``0 <= i < n``,
    a ``limit`` below 0 or a ``min_visible`` below 1).

    Attributes:
        out_dir: output folder.
        batch_size: people per fitter call; None: the fitter's on the body model's device
            (:func:`~fit3d.fitters.base.batch_size_for`: SMPLify 256 on a CPU and 4,096 on a GPU,
            EFT 64 and 2,048, a fitter without sizes 64).
        focal_length: pixels for every image (default: the input's intrinsics where it has them,
            ``Person.camera``, else each image's diagonal).
        overwrite: refit images whose ``.npz`` exists.
        shard: ``(i, n)``, zero-based: this job takes the images whose name hashes to ``i`` of ``n``
            (:func:`~fit3d.pipeline.selection.shard_of`).
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
    batch_size: int | None = None
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
        self.out_dir = Path(self.out_dir)
        f = self.focal_length
        if f is not None and not (isinstance(f, numbers.Real) and not isinstance(f, bool) and math.isfinite(f) and f > 0):
            raise ValueError(f"focal_length must be a finite number of pixels > 0 (or None: the input's or the "
                             f"image diagonal), not {f!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {self.batch_size}")
        try:
            i, n = (int(v) for v in self.shard)
        except (TypeError, ValueError):
            raise ValueError(f"shard must be (i, n), zero-based, not {self.shard!r}") from None
        if not 0 <= i < n:  # (shard (3, 2) fitted images recorded as shard 4/2; (0, 0) failed in a slice)
            raise ValueError(f"shard must be (i, n) with 0 <= i < n (zero-based: the CLI's --shard {i + 1}/{n} "
                             f"counts from 1), not {tuple(self.shard)}")
        self.shard = (i, n)
        if self.limit is not None and self.limit < 0:  # (-1 fitted all but the last image)
            raise ValueError(f"limit must be >= 0 images (or None: all), not {self.limit}")
        if self.min_visible < 1:
            raise ValueError(f"min_visible must be >= 1 keypoint, not {self.min_visible}")

    @property
    def whole_folder(self) -> bool:
        """Whether this job fits every image of the folder (no ``limit``, one shard): the only
        kind that may ``overwrite`` fits made with other settings."""
        return self.limit is None and self.shard[1] == 1


def _record(path: Path, data: dict) -> None:
    """Write a ``.failed.json`` note; one that cannot be written is not a reason to stop (the
    summary lists the failures too, and a failed image has no ``.npz``, so it is refitted)."""
    try:
        write_json(path, data)
    except OSError:
        pass


class _Job:
    """One run's state: what to fit, what was done, where it goes."""

    def __init__(self, fitter, body_model, config: RunConfig, counts: RunCounts, replacing: bool = False) -> None:
        self.fitter, self.body_model, self.config, self.counts = fitter, body_model, config, counts
        self.conv = body_model.keypoint_convention
        self.out_dir = Path(config.out_dir)
        self.extra_defaults = dict(getattr(fitter, "extra_defaults", {}))
        self.unstored: list[str] | None = None  #: extras not stored (None: no result seen yet)
        self.bar = None
        self.retired: list[str] | None = None  #: merged dataset files removed (None: not checked yet)
        self.memory = MemoryLimit()  #: this process's batch size after running out of GPU memory
        #: whether this run overwrites fits of other settings (:func:`check_settings`): an image that
        #: fails has its earlier output removed, so that the folder never mixes the two
        self.replacing = replacing
        self.not_replaced: list[str] = []  #: failed images whose earlier output could not be removed

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
        self.retired = []
        self._retire(f"merged from the earlier fits of {self.out_dir}, which this run changes")

    def after_writing(self) -> None:
        """At the end of a run that wrote outputs: retire a merge made while it ran (a ``fit3d
        merge`` during the fitting: its dataset lacked this run's later fits and its totals
        outlived the run), adding its files to :attr:`retired`, with one warning."""
        if self.retired is None:
            return
        try:
            self._retire(f"merged while this run was fitting into {self.out_dir}")
        except ValueError as e:  # (the fits are written: the summary still must be)
            log.warning("a merge made while this run was fitting could not be retired: %s", e)

    def _retire(self, why: str) -> None:
        """:func:`~fit3d.pipeline.merge.retire_merged` of the folder: the files removed added to
        :attr:`retired`, one warning saying ``why`` they were stale and how to merge again.

        Raises:
            ValueError: see :func:`~fit3d.pipeline.merge.retire_merged`.
        """
        removed, elsewhere = retire_merged(self.out_dir)
        self.retired += [str(p) for p in removed]
        what = [f"removed {p}" for p in removed] + [f"{p} is out of date" for p in elsewhere]
        if what:
            # a merge command for each file (only the first outside was named, and none for a removed --out)
            named = [*elsewhere, *(p for p in removed if p.name != DATASET_FILE)]
            plain = [None] if any(p.name == DATASET_FILE for p in removed) or not named else []
            again = " and ".join(f"'fit3d merge --fits {self.out_dir}{f' --out {p}' if p else ''}'"
                                 for p in plain + named)
            log.warning("%s (%s): run %s again when the fitting is done", "; ".join(what), why, again)

    def chunk(self, images: list[ImageRecord]) -> None:
        """Fit every person of ``images`` and write each image whose people are all done."""
        entries, to_fit = self.prepare(images)
        self.finish(images, entries, fit_people(self.fitter, to_fit, self.conv, self.config, self.body_model.device,
                                                self.memory))

    def prepare(self, images: list[ImageRecord]) -> tuple[list[tuple], list[Person]]:
        """``(entries, to_fit)``: one ``(image index, person, skip reason or None)`` per person
        of ``images``, and the people to fit (those without a skip reason), in order."""
        config = self.config
        entries = []
        for ii, img in enumerate(images):
            for p in img.people:
                entries.append((ii, p, skip_reason(p, self.conv, config.min_visible, config.focal_length)))
        return entries, [p for _, p, r in entries if r is None]

    def finish(self, images: list[ImageRecord], entries: list[tuple], results: list[tuple]) -> None:
        """Record the :func:`fit_people` ``results`` of :meth:`prepare`'s people to fit and
        write each image whose people are all done."""
        config = self.config
        to_fit = [p for _, p, r in entries if r is None]
        fits = dict(zip(map(id, to_fit), results))
        records: dict[int, list[dict]] = {i: [] for i in range(len(images))}
        failed: dict[int, list[dict]] = {}
        for ii, p, reason in entries:
            img = images[ii]
            res, row = (None, 0) if reason is not None else fits[id(p)]
            if reason is None and res is None:  # the fit raised, even alone
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
            with deferred():  # an image's output and its counting, or neither (a signal waits for both)
                self._conclude(img, records[ii], failed.get(ii))
        if self.bar is not None:
            self.bar.update(len(entries))

    def _conclude(self, img: ImageRecord, records: list[dict], failures: list[dict] | None) -> None:
        """Write ``img``'s output from its people's ``records`` and count them, or, when some of its
        people ``failures`` (or the output cannot be written), record the image as failed: the next
        run fits it again."""
        c, config = self.counts, self.config
        if failures:  # not written: the whole image is fitted again by the next run
            c.images_failed += 1
            c.people_failed += len(failures)
            c.people_deferred += len(records)
            c.failures.extend(failures)
            self._failed(img, failures)
            return
        self.before_writing()
        path = output_path(self.out_dir, img.image_key)
        try:
            if img.dropped:  # marked before the .npz exists: an interruption between the two refits it
                write_json(incomplete_path(self.out_dir, img.image_key),
                           dict(image=img.image_key, unreadable_annotations=img.dropped))
            write_npz(path, image_record(img, records, self.body_model, config.fitter_name,
                                         f"{config.shard[0] + 1}/{config.shard[1]}"))
        except OSError as e:  # this image's output cannot be written: the others carry on
            c.images_failed += 1
            c.people_deferred += len(records)
            failure = dict(image=img.image_key, annot_id=None, reason=f"could not write {path}: {e}")
            c.failures.append(failure)
            self._failed(img, [failure])
            return
        failure_path(self.out_dir, img.image_key).unlink(missing_ok=True)
        if img.dropped:  # written without the people whose annotations could not be read
            c.images_incomplete += 1
        else:
            incomplete_path(self.out_dir, img.image_key).unlink(missing_ok=True)
        c.images_written += 1
        for rec in records:  # counted once written
            if rec["status"] == "fitted":
                c.people_fitted += 1
                c.people_valid += int(rec["valid"])
                c.reproj_error_px.append(float(rec["reproj_error_px"]))
            else:
                c.skipped[reason_kind(str(rec["skip_reason"]))] += 1

    def _failed(self, img: ImageRecord, failures: list[dict]) -> None:
        """Record ``img``'s ``failures`` for the next run; in an overwrite of other settings, also
        remove its earlier output (a review: it stayed beside the new fits, and the folder stayed
        marked as being overwritten, so every retry refitted the whole folder)."""
        _record(failure_path(self.out_dir, img.image_key), dict(image=img.image_key, failures=failures))
        if self.replacing and output_path(self.out_dir, img.image_key).exists():
            self.before_writing()  # (a merge of the earlier fits is retired first, as when an output is written)
            try:
                output_path(self.out_dir, img.image_key).unlink(missing_ok=True)
            except OSError:  # (e.g. a folder where the file would be: the folder stays marked)
                self.not_replaced.append(img.image_key)


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


def run(images: list[ImageRecord], fitter, body_model, config: RunConfig,
        problems: list[InputProblem] | None = None, pool: FitterPool | None = None) -> dict:
    """Fit every person of ``images`` and write the outputs: resumable (images whose ``.npz``
    exists are skipped unless ``overwrite``; writes are atomic; Ctrl-C keeps what is done),
    shardable (``RunConfig.shard``), every input accounted for (skipped people with their reason,
    failing batches split and retried, failures in the summary and refitted by the next run). The
    module :mod:`fit3d.pipeline.runner` says more.

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
        The summary dict (``this_run``: a dict of :class:`~fit3d.pipeline.summary.RunCounts`'
        fields, ``RunCounts.as_dict()``, with ``exit_code`` and ``exit_meaning``), also written to
        ``summary.json``
        (``summary.shard-i-of-n.json`` when sharded).
    Raises:
        TypeError: arguments of other kinds (images not a list of ImageRecord, fitter and model
            swapped, a config that is not a RunConfig), before anything is written.
        ValueError: an input keypoint layout shares no keypoint with the model
            (raised before anything is written), the output folder holds fits made with
            other ``settings`` (without ``overwrite``), another run of an overlapping shard is
            fitting into the folder (:mod:`fit3d.pipeline.lock`), or the output folder or the run's
            start marker cannot be written (an image's output that cannot be written is a failed
            image, fitted again by the next run; a summary that cannot be written at the end, e.g.
            on a full disk, is said in the returned summary's ``unwritten``, exit code 5:
            :func:`~fit3d.pipeline.summary.mark_unwritten`).
    """
    _check_run_arguments(images, fitter, body_model, config)
    problems = list(problems or []) + layout_problems(images, body_model.keypoint_convention)
    out_dir = make_output_dir(config.out_dir)
    with run_lock(out_dir, config.shard):
        return _fit_into(out_dir, images, fitter, body_model, config, problems, pool)


def _check_run_arguments(images, fitter, body_model, config) -> None:
    """:func:`run`'s arguments are what it takes (a notebook's mistakes named, not an
    AttributeError from deep inside).

    Raises:
        TypeError: ``images`` not a list of :class:`~fit3d.data.records.ImageRecord` (a reader's
            ``(records, problems)`` tuple, people instead of images), a ``body_model`` without a
            keypoint convention (fitter and model swapped?), a ``fitter`` that cannot be called, or
            a ``config`` that is not a :class:`RunConfig`.
    """
    if isinstance(images, tuple) and len(images) in (2, 3) and isinstance(images[0], list):
        raise TypeError("images is a tuple: unpack the reader's result first (records, problems = read_coco(...); "
                        "records, problems, used = load_inputs(...))")
    if not isinstance(images, (list, tuple)):
        found = type(images).__name__
    else:
        found = next((type(r).__name__ for r in images if not isinstance(r, ImageRecord)), None)
    if found is not None:
        raise TypeError(f"images must be a list of ImageRecord (fit3d.data.records; from fit3d.data.readers), "
                        f"found {found}" + (": people are grouped by image (ImageRecord(image_key, image_path, "
                                            "image_size, people))" if found == "Person" else ""))
    if not hasattr(body_model, "keypoint_convention"):
        raise TypeError(f"body_model is a {type(body_model).__name__}, not a body model (run(images, fitter, "
                        "body_model, config): are the fitter and the model swapped?)")
    if not callable(fitter):
        raise TypeError(f"fitter is a {type(fitter).__name__}: a fitter is called with a PersonBatch")
    if not isinstance(config, RunConfig):
        raise TypeError(f"config is a {type(config).__name__}, not a RunConfig (RunConfig(out_dir=...))")


def _fit_into(out_dir: Path, images: list[ImageRecord], fitter, body_model, config: RunConfig,
              problems: list[InputProblem], pool: FitterPool | None) -> dict:
    """:func:`run`'s work once the folder is made and locked (:func:`~fit3d.pipeline.lock.run_lock`)."""
    name = config.fitter_name or getattr(fitter, "name", None)
    config = replace(config, fitter_name=str(name or "fitter"),
                     batch_size=config.batch_size or batch_size_for(fitter, getattr(body_model, "device", "cpu")))
    # without the caller's settings, the fitter's own description (fitter.settings(): its options
    # and a fingerprint of its weights), its name and the body model keep a folder from being mixed
    described = fitter_description(fitter) if config.check_settings and config.settings is None else {}
    settings = config.settings if config.settings is not None else dict(
        model=body_model.name, gender=str(getattr(body_model, "gender", "neutral")).lower(),
        focal_length=config.focal_length, min_visible=config.min_visible,
        **({"fitter": str(name)} if name else {}), **described)
    if getattr(body_model, "model_file", None):  # the caller's settings or these: the exports read it, no check
        settings = {**settings, "model_setup": setup_state(body_model)}
    overwriting = config.check_settings and check_settings(out_dir, settings, config.overwrite,
                                                           whole_folder=config.whole_folder)
    i, n = config.shard
    plan = plan_run(images, config, problems)
    selection, previous, changed = plan.selection, plan.previous, plan.changed
    todo, already, mine = selection.todo, selection.already, selection.mine
    counts = RunCounts(images=mine, images_already_done=already,
                       input_errors=sum(p.severity == "error" for p in problems),
                       input_warnings=sum(p.severity != "error" for p in problems),
                       shard_empty=plan.shard_empty, shard_unreadable=plan.shard_unreadable)
    job = _Job(fitter, body_model, config, counts, replacing=bool(overwriting))
    counts.images_without_people = sum(1 for r in todo if not r.people)
    for warning in plan.input_warnings():
        log.warning("%s", warning)
    if plan.emptied:
        job.before_writing()
        for r in plan.emptied:
            for stale in (output_path(out_dir, r.image_key), failure_path(out_dir, r.image_key),
                          incomplete_path(out_dir, r.image_key)):
                stale.unlink(missing_ok=True)
        counts.outputs_removed = len(plan.emptied)
    for warning in plan.folder_warnings():
        log.warning("%s", warning)
    # outputs an overwrite does not replace: images whose annotations could not be read this time (their
    # earlier fits are kept), and fits of images the input no longer lists (found by a review: the folder
    # was then recorded as fitted with the new settings)
    not_replaced = ([r.image_key for r in todo if not r.people and r.dropped
                     and output_path(out_dir, r.image_key).is_file()] + [str(o) for o in plan.orphans]
                    if overwriting else [])
    todo = [r for r in todo if r.people]
    head = dict(fitter=config.fitter_name, model=body_model.name, device=str(body_model.device), shard=f"{i + 1}/{n}")
    if i == 0 and (stale := remove_stale_temporaries(out_dir)):  # (one shard of a split walks the folder)
        head["stale_temporaries_removed"] = stale  # (left by writers killed outright)
    if plan.orphans:  # (looked for by the first shard only: plan_run)
        head["fits_not_in_input"] = len(plan.orphans)
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
    try:  # from the start marker on: a signal at any point, entering included, is recorded as an interruption
        with interruptible():
            try:
                if todo:  # until the run's summary replaces it: a run killed outright (SIGKILL, a node lost)
                    # is unfinished
                    write_summary(out_dir, config.shard,
                                  dict(head, running=True, started=time.strftime("%Y-%m-%dT%H:%M:%S%z")))
                if config.progress:
                    from tqdm import tqdm

                    job.bar = tqdm(total=sum(len(r.people) for r in todo), unit="person",
                                   desc=f"fit3d {config.fitter_name}", dynamic_ncols=True)
                chunks = list(_chunks(todo, config.batch_size))
                if pool is not None and pool.unusable and len(chunks) > 1:  # (a program read from stdin)
                    log.warning("%s", pool.unusable)
                    pool = None
                shared = SharedFitting(job, pool) if pool is not None and len(chunks) > 1 else None
                if shared is not None:
                    shared.run(chunks, pool.threads)
                else:
                    for chunk in chunks:
                        job.chunk(chunk)
            except Interrupted:
                raise
            except Exception as e:  # the start marker would read "still running": the summary says what stopped it
                if todo:
                    _record_stop(out_dir, config.shard, dict(head, this_run=counts.as_dict(), stopped_by=str(e)))
                raise
    except (Interrupted, KeyboardInterrupt) as e:
        counts.interrupted = getattr(e, "signum", signal.SIGINT)
    if job.bar is not None:
        job.bar.close()
    job.after_writing()
    elapsed = time.perf_counter() - t0
    summary = dict(
        head, this_run=dict(counts.as_dict(), seconds=round(elapsed, 3),
                      fits_per_second=round(counts.people_fitted / elapsed, 3) if elapsed > 0 else 0.0),
        input_problems=[asdict(p) for p in problems], versions=versions(), batch_size=config.batch_size,
        processes=1 + len(shared.worker_pids) if shared else 1,  # (those that fitted)
        threads_per_process=pool.threads if shared and shared.worker_pids else torch.get_num_threads(),
    )
    if job.memory.size is not None:  # (this process's batches after running out of GPU memory; a worker keeps its own)
        summary["batch_size_lowered_to"] = job.memory.size
    if job.retired:
        summary["merged_dataset_removed"] = job.retired
    if config.check_settings:
        summary["settings"] = normalised(settings)
    unwritten = []  # the run's own records that could not be written (a full disk): said, exit 5
    not_replaced += job.not_replaced  # (failed images whose earlier output stayed)
    if overwriting and not_replaced and not counts.interrupted:  # the folder stays marked as being overwritten
        summary["outputs_not_overwritten"] = not_replaced[:50]
        log.warning("%d output(s) of the earlier settings were not fitted again (e.g. %s: annotations that "
                    "could not be read, images the input no longer lists, or failed images whose output could not "
                    "be removed): the folder stays marked as being overwritten; mend or remove them and run again",
                    len(not_replaced), not_replaced[0])
    # all refitted, or failed with their earlier outputs removed (the next run retries them as usual)
    if overwriting and not counts.interrupted and not not_replaced:
        try:
            finish_overwrite(out_dir, settings)
        except ValueError as e:
            unwritten.append(str(e))
    schedule = getattr(fitter, "schedule", None)
    if schedule is not None:
        summary["schedule"] = [asdict(s) for s in schedule]
    if unwritten:  # (in the file too, when the summary itself can be written)
        mark_unwritten(summary, unwritten)
    try:
        write_summary(out_dir, config.shard, summary)
    except ValueError as e:
        mark_unwritten(summary, [str(e)])
    return summary


def _record_stop(out_dir: Path, shard: tuple[int, int], summary: dict) -> None:
    """Replace a run's start marker by what it did before an error stopped it (best effort: the
    error that is being raised is the one to report)."""
    try:
        write_summary(out_dir, shard, summary)
    except ValueError:
        pass


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


