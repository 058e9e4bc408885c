"""What a run will do before it fits anything: this job's images, what it says about the output
folder, and the dry run's report (``fit3d eft --dry-run``).

:func:`fit3d.pipeline.run` and the dry run both start from :func:`plan_run`, so a dry run warns
about exactly what the run would warn about (changed inputs, refits, a replaced focal length,
outputs removed, fits of images the input no longer lists).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fit3d.data.records import ImageRecord, InputProblem
from fit3d.pipeline.selection import (Selection, inputs_changed_warning, not_in_input_message,
                                      outputs_not_in_input, refit_warning, select_images, shard_of, stale_outputs,
                                      stale_outputs_message)
from fit3d.pipeline.skips import skip_reason
from fit3d.pipeline.summary import RunCounts, input_changes, previous_summary
from fit3d.wording import count, people

if TYPE_CHECKING:  # (run imports this module)
    from fit3d.pipeline.runner import RunConfig


@dataclass
class Plan:
    """A job's images and the state of its output folder, before fitting.

    Attributes:
        selection: :func:`~fit3d.pipeline.selection.select_images`'s answer (to fit, already done, ...).
        previous: the shard's previous ``summary.json`` (``{}`` without one).
        changed: what changed in the inputs since that summary (``""``: nothing known).
        emptied: images to fit that no longer have people, whose old outputs the run removes.
        orphans: keys of fits in the folder of images the input no longer lists (``[]`` when not
            looked for: only the first shard of a split walks the folder).
        overridden: people whose own intrinsics ``focal_length`` replaces.
        focal_length: the run's ``--focal-length`` (None: each person's own or the default).
        shard_empty: this job is a shard of a split that got no image (not "nothing to fit").
        shard_unreadable: this job is a shard of a split whose images could none be opened (named
            in the input problems, :attr:`InputProblem.image`): not empty, but not "nothing
            fitted" either, so that an array's exit code keeps its 3 (input problems).
    """

    selection: Selection
    previous: dict
    changed: str
    emptied: list[ImageRecord]
    orphans: list[str]
    overridden: int
    focal_length: float | None = None
    shard_empty: bool = False
    shard_unreadable: bool = False

    def warnings(self, would: bool = False) -> list[str]:
        """The run's warnings about its inputs and output folder, in the run's order; ``would``:
        worded for a dry run (nothing done yet)."""
        return self.input_warnings(would) + self.folder_warnings(would)

    def input_warnings(self, would: bool = False) -> list[str]:
        """What changed in the inputs (images fitted again) and a replaced focal length: said
        before the run touches the folder."""
        s, out = self.selection, []
        if self.changed and (s.already or s.changed):
            out.append(inputs_changed_warning(self.changed, s.already, s.changed, s.unverified, would=would))
        elif s.changed:  # e.g. the rest of a corrected run that was interrupted or cut by --limit
            out.append(refit_warning(s.changed, would=would))
        if self.overridden:  # (a trial: calibrated focal lengths replaced in silence)
            out.append(f"--focal-length {self.focal_length:g} px {'would replace' if would else 'replaces'} the "
                       f"focal length of the input's own intrinsics ({people(self.overridden)} of this job have "
                       "them; their principal points are kept)")
        return out

    def folder_warnings(self, would: bool = False) -> list[str]:
        """Outputs removed (images left without people) and fits of images the input does not
        list: said once the outputs are removed."""
        out = []
        if self.emptied:
            out.append(stale_outputs_message(self.emptied, would=would))
        if self.orphans:
            out.append(not_in_input_message(self.orphans))
        return out


def plan_run(images: list[ImageRecord], config: RunConfig, problems: list[InputProblem] = ()) -> Plan:
    """The :class:`Plan` of a run of ``config`` (its output folder, shard, ``--limit``,
    ``--overwrite``, inputs and focal length) over ``images``; reads the folder, changes nothing.
    ``problems``: the input's; a shard that got no readable image but one that could not be opened
    (:attr:`InputProblem.image`) is ``shard_unreadable``, not ``shard_empty`` (a review: such a
    shard said it got no image).
    What only a walk of the whole folder finds (fits of images the input does not list) is looked
    for by the first shard of a split only: each shard walking it would read shards x files
    directory entries on a shared file system."""
    out_dir = Path(config.out_dir)
    selection = select_images(images, config)
    previous = previous_summary(out_dir, config.shard)
    overridden = sum(p.camera is not None for r in selection.todo for p in r.people) if config.focal_length else 0
    orphans = outputs_not_in_input(images, out_dir) if config.shard[0] == 0 and out_dir.is_dir() else []
    i, n = config.shard
    nothing = selection.mine == 0 and n > 1  # (a shard of a split that got no readable image)
    lost = nothing and any(p.image is not None and p.severity == "error" and shard_of(p.image, n) == i
                           for p in problems)
    return Plan(selection, previous, input_changes(previous, config.inputs), stale_outputs(selection.todo, out_dir),
                orphans, overridden, config.focal_length, shard_empty=nothing and bool(images) and not lost,
                shard_unreadable=lost)


@dataclass
class DryRun:
    """What ``--dry-run`` reports: ``lines`` to print (after the input problems) and the run's
    exit code for what this job would do (:meth:`~fit3d.pipeline.summary.RunCounts.exit_code`)."""

    lines: list[str]
    exit_code: int


def dry_run(images: list[ImageRecord], problems: list[InputProblem], convention, config: RunConfig) -> DryRun:
    """Count what a run of ``config`` would fit, and what it would say, without fitting or writing.

    Args:
        images: the whole input (a dry run reads every shard's images).
        problems: the input problems found so far, keypoint layouts included (their errors count).
        convention: the body model's keypoint convention (which keypoints are usable).
        config: the run's :class:`~fit3d.pipeline.RunConfig` (``min_visible``, shard, ``limit``...).
    Returns:
        :class:`DryRun`: exit 4 when this job has nothing to fit and nothing done, 3 with
        unreadable inputs, else 0 (a dry run's 3 counts every shard's input errors).
    """
    def fittable_in(records) -> int:
        return sum(skip_reason(p, convention, config.min_visible, config.focal_length) is None
                   for r in records for p in r.people)

    everyone = sum(len(r.people) for r in images)
    fittable = fittable_in(images)
    errors = sum(p.severity == "error" for p in problems)
    lines = [f"fit3d: {count(len(images), 'image')} ({sum(1 for r in images if not r.people)} without people), "
             f"{people(everyone)}: {fittable} with at least {config.min_visible} usable keypoints "
             f"(not all collinear) would be fitted, {everyone - fittable} skipped; {count(errors, 'input problem')}, "
             f"{count(len(problems) - errors, 'warning')} (dry run: nothing fitted)"]
    plan = plan_run(images, config, problems)
    lines += [f"fit3d: warning: {w}" for w in plan.warnings(would=True)]
    s = plan.selection
    now = fittable_in(s.todo)
    if s.mine != len(images) or s.already:  # (the counts above are the whole input's)
        i, n = config.shard
        lines.append(f"fit3d: this job (shard {i + 1}/{n}{f', --limit {config.limit}' if config.limit else ''}): "
                     f"{count(s.mine, 'image')}, {s.already} already done; {people(now)} "
                     "to fit now")
    # the run's own rule on what this job would do: nothing to fit and nothing done is 4 (an empty
    # shard of a split is not), then 3 for unreadable inputs
    would = RunCounts(images=s.mine, images_already_done=s.already, input_errors=errors, people_fitted=now,
                      shard_empty=plan.shard_empty, shard_unreadable=plan.shard_unreadable)
    return DryRun(lines, would.exit_code())

