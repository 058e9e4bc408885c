"""Which images a job fits: its shard (``--shard i/n``, ``auto`` from a SLURM array), ``--limit``,
what earlier runs left done (resume by name, damaged outputs fitted again), and the images whose
annotations changed since their fit (each output's ``input_digest``); the warnings a run and a dry
run say about them."""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from fit3d.data.records import ImageRecord
from fit3d.data.writers import failure_path, fit_name, incomplete_path, iter_fit_files, output_path

if TYPE_CHECKING:
    from fit3d.pipeline.runner import RunConfig

log = logging.getLogger("fit3d.pipeline.run")


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
        raise ValueError(f"--shard {text}: need 1 <= i <= n (shards count from 1; --shard auto reads a SLURM "
                         "array's task id, from 0 or 1)")
    return i - 1, n


def shard_of(image_key: str, n: int) -> int:
    """The shard (zero-based, of ``n``) that an image belongs to: a hash of its key alone
    (BLAKE2b), so an image's shard does not depend on the other images. Taking every n-th image of
    the sorted list (before 2026-12-03) moved nearly every image to another shard when one image
    was missing from one task's inputs (unreadable for a moment, still being copied) or from a
    corrected annotation file: in that pass images were fitted twice or by no shard. Shards of
    many images are near-equal (n shards of N images: about N/n +- sqrt(N/n) each); with few
    images some shards may get none (they exit 0, ``shard_empty``)."""
    return int.from_bytes(hashlib.blake2b(image_key.encode("utf-8", "surrogateescape"), digest_size=8).digest(),
                          "little") % n


def in_shard(image_key: str, shard: tuple[int, int]) -> bool:
    """Whether an image belongs to shard ``(i, n)`` (zero-based, :func:`shard_of`)."""
    i, n = shard
    return n == 1 or shard_of(image_key, n) == i


def shard_images(images: list[ImageRecord], shard: tuple[int, int]) -> list[ImageRecord]:
    """The images of shard ``(i, n)`` (zero-based, :func:`in_shard`), in image-key order."""
    return [r for r in sorted(images, key=lambda r: r.image_key) if in_shard(r.image_key, shard)]


def job_images(images: list[ImageRecord], config: RunConfig) -> list[ImageRecord]:
    """The images of a job: its shard's (:func:`shard_images`), the first ``config.limit`` of
    them when limited; done or not."""
    mine = shard_images(images, config.shard)
    return mine if config.limit is None else mine[: config.limit]


def inputs_changed_warning(changed: str, done: int, refit: int = 0, unverified: int = 0, would: bool = False) -> str:
    """The warning of a run (``would``: a dry run) whose inputs differ from the folder's last run's:
    ``refit`` images whose people changed are fitted again (:func:`select_images`), the ``done``
    others keep their fits, ``unverified`` of them without a record of what they were fitted from."""
    verb = "would be" if would else "is" if refit == 1 else "are"
    again = f"{refit} image{'s' if refit != 1 else ''} whose people changed {verb} fitted again; " if refit else ""
    kept = f"the {done} {'other ' if refit else ''}images already done {'would keep' if would else 'keep'} their fits"
    if unverified:
        kept += (f" ({unverified} of them written before fit3d recorded what each output is fitted from, so not "
                 "compared; --overwrite refits them all)")
    return f"this folder's earlier run read other inputs ({changed}): {again}{kept}"


_UNREADABLE = object()  #: :func:`stored_input_digest` of an output that is no readable archive


def refit_warning(changed: int, would: bool = False) -> str:
    """The warning of a run (``would``: a dry run) that fits again ``changed`` done images whose
    annotations changed since their fit, its inputs otherwise as the folder's last run's."""
    verb = "would be" if would else "is" if changed == 1 else "are"
    return (f"{changed} image{'s' if changed != 1 else ''} already done {verb} fitted again: "
            f"{'its' if changed == 1 else 'their'} people (keypoints, boxes or camera) changed since "
            f"{'it was' if changed == 1 else 'they were'} "
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


def select_images(images: list[ImageRecord], config: RunConfig, warn: bool = True, verify: bool = True) -> Selection:
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

    ``verify`` False: outputs are taken as done without opening them (no digest or damage check;
    ``changed`` and ``unverified`` stay 0): a count for planning, e.g. worker processes, that
    does not read every output of a large folder a second time.
    """
    mine = job_images(images, config)
    if config.overwrite:
        return Selection(mine, 0, len(mine))
    todo, damaged, changed, unverified = [], [], 0, 0
    for r in mine:
        out = output_path(config.out_dir, r.image_key)
        if not r.people or not out.is_file() or incomplete_path(config.out_dir, r.image_key).is_file() \
                or failure_path(config.out_dir, r.image_key).is_file():
            todo.append(r)
            continue
        if not verify:
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


def stale_outputs(todo: list[ImageRecord], out_dir: Path) -> list[ImageRecord]:
    """The images of ``todo`` left without people (their annotations removed from a corrected
    file; not those whose annotations could not be read) whose output still holds fits, or that
    have a failure record: a run removes those files, as an image without people has no output,
    so that no merge or export serves stale fits (``--dry-run`` says which it would remove)."""
    return [r for r in todo if not r.people and not r.dropped and (
        _holds_people(output_path(out_dir, r.image_key)) or failure_path(out_dir, r.image_key).is_file())]


def outputs_not_in_input(images: list[ImageRecord], out_dir: Path) -> list[str]:
    """The image keys whose fits are in ``out_dir`` but that are not among ``images`` (the
    input's readable images, every shard's: a sharded run's reader lists the other shards'
    images too; sorted): an image dropped from a corrected
    annotation file, an OpenPose frame whose keypoint file was deleted, an image that could not
    be read this time, or another input fitted into the same folder. A run keeps their fits (it
    cannot tell which case it is) and says so: ``fit3d merge`` and the exports take every fit in
    the folder (a video trial found a deleted frame's fits exported without a word)."""
    listed = {r.image_key for r in images}
    out = []
    for f in iter_fit_files(out_dir):
        key = fit_name(out_dir, f)
        if key not in listed:
            out.append(key)
    return sorted(out)


def not_in_input_message(keys: list[str]) -> str:
    """What a run says about :func:`outputs_not_in_input`."""
    many = len(keys) > 1
    return (f"{len(keys)} fit file{'s' if many else ''} in the output folder {'are' if many else 'is'} of "
            f"{'images' if many else 'an image'} not among this run's readable inputs (e.g. {keys[0]}: dropped "
            "from the annotations, its keypoint file deleted, unreadable now, or another input's): kept; 'fit3d "
            "merge' and the exports take every fit in the folder: delete those you no longer want, or fit into a "
            "new --out")


def stale_outputs_message(emptied: list[ImageRecord], would: bool = False) -> str:
    """What a run says about :func:`stale_outputs` (``would``: as ``--dry-run`` says it)."""
    many = len(emptied) > 1
    return (f"{len(emptied)} image{'s' if many else ''} no longer annotated with people (e.g. {emptied[0].image_key}) "
            f"had fits of earlier inputs: {'their outputs' if many else 'its output'} {'would be ' if would else ''}removed")

