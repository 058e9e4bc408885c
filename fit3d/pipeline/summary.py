"""What a run did, counted for every input, and the exit code that says it.

Exit codes of the fitting commands (:data:`EXIT_CODES`):

* 0: every person was fitted or skipped for a documented per-person reason;
* 3: some images or annotations could not be read (the rest was fitted);
* 4: nothing was fitted (and nothing had been fitted by an earlier run), whether the
  inputs held no people, no usable people or nothing readable (a shard that got no image,
  with more shards than images, exits 0; a shard of a split none of whose images could be
  read exits 3, which an array's combined code keeps);
* 5: some people could not be fitted (the fit raised even alone) or some images' outputs
  could not be written: those images are fitted again by the next run (said before 3, since
  a rerun may fix it; the summary counts both);
* 130 / 143: interrupted by SIGINT / SIGTERM: what was finished is kept, rerun the
  same command to resume.

(1 is a clean error message, 2 a usage error, as for every click command.)
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fit3d.data.writers import write_json

OK, INPUT_PROBLEMS, NOTHING_FITTED, PEOPLE_FAILED = 0, 3, 4, 5
EXIT_CODES = {
    OK: "every person fitted or skipped for a per-person reason",
    INPUT_PROBLEMS: "some images or annotations could not be read",
    NOTHING_FITTED: "nothing was fitted",
    PEOPLE_FAILED: "some people could not be fitted or written (rerun to retry them)",
    130: "interrupted by SIGINT (rerun to resume)",
    143: "interrupted by SIGTERM (rerun to resume)",
}


@dataclass
class RunCounts:
    """Counts of one run (one shard)."""

    images: int = 0  #: images this job was given (after sharding and --limit)
    images_already_done: int = 0
    images_written: int = 0
    images_without_people: int = 0
    images_failed: int = 0  #: not written: a person's fit raised (refitted by the next run)
    #: written without people whose annotations could not be read (refitted by the next run)
    images_incomplete: int = 0
    people_fitted: int = 0
    people_valid: int = 0
    people_failed: int = 0  #: their fit raised even alone
    people_deferred: int = 0  #: fitted, but in an image with a failed person: fitted again next run
    skipped: Counter = field(default_factory=Counter)  #: reason (without numbers) -> people
    input_errors: int = 0
    input_warnings: int = 0
    reproj_error_px: list = field(default_factory=list)
    #: {image, annot_id, reason}; the summary lists them by image and annotation id (with worker
    #: processes they are recorded as batches finish, in no fixed order)
    failures: list = field(default_factory=list)
    interrupted: int = 0  #: signal number, 0 when the run finished
    #: this shard got no image because there are more shards than images (nothing to fit is
    #: then no failure: exit 0, not 4)
    shard_empty: bool = False
    #: this shard's images could none be opened: not empty, and its exit code is 3 (input problems),
    #: not 4, so that an array's combined code (which leaves 4 out) still says so
    shard_unreadable: bool = False
    #: outputs removed: images no longer annotated with people whose output held fits of earlier inputs
    outputs_removed: int = 0

    def exit_code(self) -> int:
        """See the module docstring."""
        if self.interrupted:
            return 128 + self.interrupted
        if self.people_fitted == 0 and self.images_already_done == 0 and not self.images_failed \
                and not self.shard_empty and not self.shard_unreadable:
            return NOTHING_FITTED  # no people, all unusable, or all unreadable
        if self.people_failed or self.images_failed:  # before 3: a rerun may fix it
            return PEOPLE_FAILED
        if self.input_errors:
            return INPUT_PROBLEMS
        return OK

    def as_dict(self) -> dict:
        """JSON-ready counts with reprojection statistics over this run's fitted people."""
        err = np.asarray(self.reproj_error_px, dtype=np.float64)
        err = err[np.isfinite(err)]
        stat = lambda f: float(f(err)) if len(err) else None  # noqa: E731
        code = self.exit_code()
        return dict(
            images=self.images, images_already_done=self.images_already_done, images_written=self.images_written,
            images_without_people=self.images_without_people, images_failed=self.images_failed,
            images_incomplete=self.images_incomplete, people_fitted=self.people_fitted, people_valid=self.people_valid,
            people_skipped=int(sum(self.skipped.values())), skipped_by_reason=dict(self.skipped),
            people_failed=self.people_failed, people_deferred=self.people_deferred,
            failures=sorted(self.failures, key=_failure_order),
            input_errors=self.input_errors, input_warnings=self.input_warnings,
            reproj_error_px=dict(median=stat(np.median), mean=stat(np.mean),
                                 p90=stat(lambda e: np.percentile(e, 90))),
            interrupted=bool(self.interrupted), shard_empty=self.shard_empty,
            shard_unreadable=self.shard_unreadable, outputs_removed=self.outputs_removed,
            exit_code=code,
            exit_meaning=EXIT_CODES[code],
        )


def combined_exit_code(codes: list[int]) -> int:
    """The exit code of several runs (an array of tasks, ``fit3d submit --wait``; NeuralAnnot's image
    sets), by the rule for one run: 4 (nothing fitted) only when every run fitted nothing, so that a
    run with no one to fit (an empty shard, a set without usable people) does not turn runs that fitted
    people into "nothing was fitted" (NeuralAnnot took the largest code: a set that fitted everyone
    beside one without people exited 4, found by a review); otherwise the worst other code: an
    interruption's 128 + n, then a run stopped by an error (1, or 2 for a usage error), then 5,
    then 3; 0 for none (a task refused by a lock beside one with unreadable images exited 3, "the
    rest was fitted": found by a review)."""
    others = [c for c in codes if c != NOTHING_FITTED]
    if not others:
        return NOTHING_FITTED if codes else OK
    return max(others, key=lambda c: (c > 128, c in (1, 2), c))


def _failure_order(failure: dict) -> tuple:
    """Sort key of a failure: its image key, then its annotation id (numbers in numeric order)."""
    annot = failure.get("annot_id")
    number = isinstance(annot, (int, float)) and not isinstance(annot, bool)
    return str(failure.get("image")), not number, annot if number else str(annot)


def versions() -> dict[str, str]:
    """Versions of Python, fit3d and the main dependencies."""
    import importlib.metadata as md

    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("fit3d", "anny", "smplx", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def previous_summary(out_dir: str | Path, shard: tuple[int, int]) -> dict:
    """The shard's summary file in ``out_dir`` as its last run left it (``{}`` without one)."""
    try:
        old = json.loads(shard_file(out_dir, "summary", shard).read_text())
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def input_record(images: str | Path, annotations: str | Path | None = None, keypoints_dir: str | Path | None = None,
                 spin_npz: str | Path | None = None, openpose_model: str = "body_25") -> dict:
    """Where a run reads its people (absolute paths; the COCO JSON found beside or above
    ``images`` when no source is given, as the reader finds it), a digest of the annotation
    file (COCO JSON or SPIN npz; an OpenPose folder has none) and, for an OpenPose folder, its
    model (``openpose_model``; records written before it have none, read as BODY_25):
    :class:`~fit3d.pipeline.runner.RunConfig`'s ``inputs``, recorded in the run's summary so that a
    rerun from other inputs says so (:func:`input_changes`)."""
    from fit3d.body_models.weights import file_digest
    from fit3d.data.readers import discover_annotations

    if annotations is None and keypoints_dir is None and spin_npz is None:
        annotations = discover_annotations(images)
    out = dict(images=str(Path(images).resolve()))
    for name, path in (("annotations", annotations), ("keypoints", keypoints_dir), ("spin", spin_npz)):
        if path is not None:
            out[name] = str(Path(path).resolve())
            if Path(path).is_file():
                out[f"{name}_digest"] = file_digest(path)
    if keypoints_dir is not None:
        out["openpose_model"] = openpose_model
    return out


def input_changes(previous: dict, inputs: dict | None) -> str:
    """What differs between ``inputs`` and those a shard's last summary (``previous``) records
    (``"annotations: a.json -> b.json"``, ``"annotations_digest: ..."``); "" when nothing
    differs, or either side records none (a new folder, a folder from before the record)."""
    old = previous.get("inputs")
    if not inputs or not isinstance(old, dict):
        return ""
    old, new = (dict(r, openpose_model=r.get("openpose_model", "body_25")) if "keypoints" in r else r
                for r in (old, inputs))  # (recorded since 2026-12-03: BODY_25, the only model before)
    diff = [f"{k}: {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "; ".join(diff)


def shard_file(out_dir: str | Path, stem: str, shard: tuple[int, int]) -> Path:
    """A per-job file of ``out_dir``: ``<stem>.json``, or ``<stem>.shard-i-of-n.json`` for shard
    ``(i - 1, n)`` (``summary``, NeuralAnnot's ``annotator_state``)."""
    i, n = shard
    return Path(out_dir) / (f"{stem}.json" if n == 1 else f"{stem}.shard-{i + 1}-of-{n}.json")


def mark_unwritten(summary: dict, reasons: list[str]) -> None:
    """Record in a run's ``summary`` that some of its own records could not be written (a full
    disk: the summary file itself, the folder's settings after an overwrite): ``unwritten`` lists
    the errors, and the exit code becomes 5, as for an image's output that could not be written
    (an interrupted run keeps 130 / 143). Running the same command again writes them."""
    summary["unwritten"] = list(dict.fromkeys([*summary.get("unwritten", []), *reasons]))
    r = summary["this_run"]
    if not r.get("interrupted"):
        r.update(exit_code=PEOPLE_FAILED, exit_meaning=EXIT_CODES[PEOPLE_FAILED])


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

