"""NeuralAnnot as a batch job: the target set from image records, training, then annotation with
:func:`fit3d.pipeline.run`."""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack
from pathlib import Path

from fit3d.body_models.weights import setup_state
from fit3d.data.batching import make_batch
from fit3d.data.records import ImageRecord, InputProblem
from fit3d.data.writers import output_path, write_json
from fit3d.pipeline.lock import run_lock
from fit3d.pipeline.runner import RunConfig, make_output_dir, run
from fit3d.pipeline.selection import select_images
from fit3d.pipeline.skips import MIN_VISIBLE_KEYPOINTS, skip_reason
from fit3d.pipeline.interrupt import Interrupted
from fit3d.pipeline.summary import mark_unwritten, previous_summary, shard_file, write_summary
from fit3d.pipeline.settings import normalised

log = logging.getLogger(__name__)


def check_input_sets(images_dirs: list[Path], annotations_files: list[Path] | None = None,
                     keypoints_dirs: list[Path] | None = None, openpose_model: str = "body_25") -> None:
    """Check NeuralAnnot's input sets before anything is built (``fit3d neuralannot``'s repeated
    ``--images``, ``--annotations``, ``--keypoints``): one annotation file, or one OpenPose folder,
    per image folder, or none (then each existing folder must have a ``person_keypoints_*.json``
    beside or above it: :func:`~fit3d.data.readers.discover_annotations`), and an OpenPose model
    name that fits the input (:func:`~fit3d.data.readers.check_openpose_model`).

    Raises:
        ValueError: naming what to give instead (the command line's usage error).
    """
    from fit3d.data.readers import check_openpose_model, discover_annotations

    if annotations_files and len(annotations_files) != len(images_dirs):
        raise ValueError("give one --annotations per --images (or none)")
    if keypoints_dirs and (annotations_files or len(keypoints_dirs) != len(images_dirs)):
        raise ValueError("give one --keypoints per --images, and no --annotations with them")
    check_openpose_model(openpose_model, keypoints_dirs[0] if keypoints_dirs else None)
    if annotations_files or keypoints_dirs:
        return
    for d in (Path(d) for d in images_dirs):
        if d.is_dir() and discover_annotations(d) is None:  # (several candidates: AmbiguousAnnotations)
            raise ValueError(f"no --annotations given and no person_keypoints_*.json beside or above {d}: pass "
                             "--annotations FILE.json (COCO) or --keypoints DIR (OpenPose) for each --images")


def neuralannot_target(images: list[ImageRecord], body_model, min_visible: int = MIN_VISIBLE_KEYPOINTS):
    """NeuralAnnot's target set: every person of ``images`` that a fitting run would fit (at
    least ``min_visible`` usable keypoints, not all on one line: :func:`~fit3d.pipeline.skips.skip_reason`), as one :class:`~fit3d.data.batching.PersonBatch` on the model's device.

    Raises:
        ValueError: no such person.
    """
    from fit3d.fitters.neuralannot import stack_batches

    conv = body_model.keypoint_convention
    people = [p for r in images for p in r.people if skip_reason(p, conv, min_visible) is None]
    if not people:
        raise ValueError("no person with enough keypoints to train on")
    return stack_batches([make_batch(people[s : s + 256], conv, device=body_model.device)
                          for s in range(0, len(people), 256)])


def _split_annotated_by(out_dir: Path, state: dict) -> bool:
    """Whether every shard of some split of ``out_dir`` (``annotator_state.shard-i-of-n.json`` for
    i = 1..n: a ``torchrun`` run's ranks, or ``--shard`` jobs) records ``state``: then every image
    was annotated by this annotator, and a job of another split resumes them (a single-process
    rerun of a torchrun folder annotated everything again)."""
    import re

    splits: dict[int, dict[int, bool]] = {}
    for f in Path(out_dir).glob("annotator_state.shard-*-of-*.json"):
        m = re.fullmatch(r"annotator_state\.shard-(\d+)-of-(\d+)\.json", f.name)
        if not m:
            continue
        try:
            agrees = json.loads(f.read_text()) == state
        except (OSError, ValueError):
            agrees = False
        splits.setdefault(int(m.group(2)), {})[int(m.group(1))] = agrees
    return any(len(marks) == n and all(marks.values()) for n, marks in splits.items())


def forget_other_annotators(out_dir: Path, records: list[ImageRecord], shard: tuple[int, int], state: dict) -> int:
    """Make ``out_dir`` resumable by this annotator only: unless its ``annotator_state.json``
    (``annotator_state.shard-i-of-n.json`` under a shard; without it, every shard's mark of a
    complete split: :func:`_split_annotated_by`) records ``state``, delete this
    shard's per-image outputs (written by another annotator, or by an unknown one), then
    record ``state`` (before annotating, so an interrupted annotation resumes). Returns the
    number of outputs deleted.

    Raises:
        ValueError: the record cannot be written (a full disk).
    """
    mark = shard_file(make_output_dir(out_dir), "annotator_state", shard)
    try:
        same = json.loads(mark.read_text()) == state
    except (OSError, ValueError):
        same = not mark.is_file() and _split_annotated_by(out_dir, state)
    deleted = 0
    if not same:
        mine = select_images(records, RunConfig(out_dir, shard=shard, overwrite=True)).todo
        for r in mine:
            path = output_path(out_dir, r.image_key)
            deleted += path.is_file()
            path.unlink(missing_ok=True)
    try:
        write_json(mark, state)
    except OSError as e:  # (a full disk: one line, before anything is annotated)
        raise ValueError(f"cannot write {mark}: {e}") from e
    return deleted


def _mark_stopped_training(subs: list[Path], shard: tuple[int, int], error: BaseException) -> None:
    """A training stopped (interrupted, or an error) while the folders hold an earlier annotator's
    outputs and summaries: each summary says so, so that ``fit3d merge`` does not take the folder
    as finished (it read the earlier run's exit 0 while the checkpoint had trained on). Best effort:
    the stop itself is what the command reports."""
    import signal

    # Interrupted (the run's handler) says which signal; Ctrl-C is KeyboardInterrupt, and a SIGTERM
    # before the run's handler is the command line's Terminated (a BaseException, as Ctrl-C's is)
    interrupted = isinstance(error, Interrupted) or not isinstance(error, Exception)
    signum = getattr(error, "signum", signal.SIGINT if isinstance(error, KeyboardInterrupt) else signal.SIGTERM)
    for sub in subs:
        summary = previous_summary(sub, shard)
        if not isinstance(summary.get("this_run"), dict):
            continue
        try:
            if interrupted:
                summary["this_run"].update(interrupted=int(signum), exit_code=128 + int(signum),
                                           exit_meaning="interrupted while training the annotator further: the "
                                                        "annotations here are the earlier annotator's; rerun to resume")
            else:
                summary["stopped_by"] = f"training the annotator: {error}"
            write_summary(sub, shard, summary)
        except (OSError, ValueError):
            continue


def run_neuralannot(sets: list[tuple[Path, list[ImageRecord], list[InputProblem]]], annotator, target, body_model,
                    out_dir: str | Path, batch_size: int | None = None, progress: bool = True, on_trained=None,
                    on_run=None, shard: tuple[int, int] = (0, 1)) -> float:
    """Train a :class:`~fit3d.fitters.NeuralAnnot` on ``target`` (resuming from its
    checkpoint), then annotate every set ``(images_dir, records, problems)`` with
    :func:`run`, into ``out_dir`` (``out_dir/<images_dir name>`` when there are several).

    ``batch_size``: people per annotating call (None: the annotator's on its device, 64 on a CPU and
    2,048 on a GPU, :class:`RunConfig`).
    ``shard``: ``(rank, world)`` under ``torch.distributed``: every rank trains (DDP),
    then annotates only the images of its shard (:func:`~fit3d.pipeline.selection.shard_of`), so
    each image is written once, by one rank, with one summary per rank (``fit3d merge`` combines them).
    ``on_trained(history)`` is called after training with the per-epoch log,
    ``on_run(summary, out)`` after each set. Returns the training seconds.

    Outputs are resumed only when they come from the same annotator: each output folder
    records the annotator's state (:meth:`NeuralAnnot.annotation_state`: epoch, phase,
    ``refine_steps``, ``accept_ratio``, a hash of the weights) in ``annotator_state.json``
    (one per shard); when it differs (trained further or anew, ``--refine`` added, another
    pretrained regressor) or is missing, every image is annotated again
    (:func:`forget_other_annotators`).

    Raises:
        ValueError: ``out_dir`` cannot be created, two sets' folders have the same name (their
            outputs would share one subfolder), or another run of an overlapping shard is fitting
            into one of the folders (:func:`~fit3d.pipeline.lock.run_lock`; all before training),
            and as :func:`run`.
    """
    names = [Path(d).resolve().name for d, _, _ in sets]  # ('.' and 'a/..' by the folders they are)
    folded = [n.casefold() for n in names]  # (a case-insensitive file system: Coco and coco are one folder)
    twice = sorted({n for n, f in zip(names, folded) if folded.count(f) > 1}) if len(sets) > 1 else []
    if twice:
        raise ValueError(f"several image folders are named {' / '.join(twice)}: their outputs would share "
                         f"{Path(out_dir) / twice[0]}; give folders of different names (e.g. links) or run them apart")
    if len(sets) > 1 and "" in names:
        raise ValueError("with several image folders, each is annotated into OUT/<its name>: the file system's "
                         "root has none; give a folder below it")
    out_dir = make_output_dir(out_dir)
    subs = [out_dir / name if len(sets) > 1 else out_dir for name in names]
    with ExitStack() as locks:  # every output folder locked before training (it rewrites their outputs)
        for sub in subs:
            sub.mkdir(parents=True, exist_ok=True)
            locks.enter_context(run_lock(sub, shard))
        return _train_and_annotate(sets, annotator, body_model, subs, shard, batch_size, progress, on_trained,
                                   on_run, target)


def _train_and_annotate(sets, annotator, body_model, subs, shard, batch_size, progress, on_trained, on_run,
                        target) -> float:
    """:func:`run_neuralannot`'s work once its folders are locked (:func:`~fit3d.pipeline.lock.run_lock`)."""
    model_setup = setup_state(body_model)  # (of the weights the annotator was built from, before hours of training)
    t0 = time.perf_counter()
    try:
        history = annotator.fit_dataset(target, progress=progress)
    except BaseException as e:  # (KeyboardInterrupt, SIGTERM: BaseExceptions; an error too)
        _mark_stopped_training(subs, shard, e)
        raise
    train_s = time.perf_counter() - t0
    if on_trained is not None:
        on_trained(history)
    state = annotator.annotation_state()
    for (_, records, problems), sub in zip(sets, subs):
        replaced = forget_other_annotators(sub, records, shard, state)
        if replaced:
            log.warning("%s: %d annotation file(s) of another annotator (trained further or anew, or with other "
                        "--refine) deleted: every image is annotated again", sub, replaced)
        s = run(records, annotator, body_model, RunConfig(sub, batch_size=batch_size, progress=progress,
                                                          fitter_name="neuralannot", shard=shard,
                                                          check_settings=False), problems)  # its own record
        r = s["this_run"]  # annotating alone is fast; what a user waits for includes the training
        r["annotator_training_seconds"] = round(train_s, 3)
        r["annotations_replaced"] = replaced
        total = train_s + r["seconds"]
        r["fits_per_second_with_training"] = round(r["people_fitted"] / total, 3) if total > 0 else 0.0
        # what decides the annotations (its checkpoint refuses other training settings; annotator_state.json
        # keeps the outputs to this annotator)
        s["settings"] = normalised(dict(fitter="neuralannot", model=body_model.name,
                                        gender=getattr(body_model, "gender", None),
                                        model_file=getattr(body_model, "model_file", None),
                                        model_setup=model_setup,
                                        **annotator.training_settings(), annotator=state))
        try:
            write_summary(sub, shard, s)
        except ValueError as e:  # (a full disk) said and exit 5, as run() does
            mark_unwritten(s, [str(e)])
        if on_run is not None:
            on_run(s, sub)
    return train_s
