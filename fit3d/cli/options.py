"""The options every fitting command shares, as one typed object (:class:`FitOptions`),
and the mapping of the package's errors to click's."""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import click

from fit3d.names import GENDERS, MODELS, PRIORS
from fit3d.wording import count


@dataclass
class FitOptions:
    """What ``fit3d smplify`` / ``fit3d eft`` read, fit and write (see their ``--help``).

    ``shard`` is zero-based ``(i, n)`` (the command line's ``i/n`` is one-based);
    ``min_visible`` None means :data:`fit3d.pipeline.MIN_VISIBLE_KEYPOINTS`; ``batch_size``
    None means the fitter's ``default_batch_size``; ``workers`` None means ``auto``
    (:func:`fit3d.pipeline.workers.plan_workers`).
    """

    images: Path
    out_dir: Path
    annotations: Path | None = None
    keypoints_dir: Path | None = None
    openpose_model: str = "body_25"
    spin_npz: Path | None = None
    model: str = "anny"
    model_path: Path | None = None
    gender: str = "neutral"
    device: str = "cpu"
    batch_size: int | None = None
    focal_length: float | None = None
    limit: int | None = None
    shard: tuple[int, int] = (0, 1)
    overwrite: bool = False
    min_visible: int | None = None
    progress: bool = True
    render: bool = False
    save_mesh: str | None = None
    dry_run: bool = False
    workers: int | None = None


class Terminated(BaseException):
    """SIGTERM arrived outside a run's own handling (:func:`fit3d.cli.main.main` installs the
    handler; a run replaces it with :func:`fit3d.pipeline.interrupt.interruptible` while it fits).
    A BaseException, as KeyboardInterrupt is: no ``except Exception`` on the way turns it into an
    input error."""


def check_device(ctx, param, value: str) -> str:
    """A torch device string that this torch can use; else one line saying how to get it."""
    from fit3d.devices import check_device as usable

    try:
        usable(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from e
    return value


#: The pose priors a command line can name (:func:`fit3d.priors.build_prior`).
PRIOR_CHOICE = click.Choice(PRIORS)


def finite(ctx, param, value):
    """A click callback refusing NaN and infinite numbers (click's ranges let NaN through: every
    comparison with it is false), as a usage error; None (unset) passes."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number", ctx=ctx, param=param)
    return value


def annotations_file(ctx, param, value):
    """``--annotations`` (one path, or a tuple of them): files, not folders (a folder of OpenPose
    files goes to --keypoints)."""
    for path in value if isinstance(value, tuple) else [value]:
        if path is not None and path.is_dir():
            raise click.BadParameter(f"{path} is a folder: a COCO annotation file goes here; a folder of OpenPose "
                                     "keypoint files goes to --keypoints DIR", ctx=ctx, param=param)
    return value


def keypoints_folder(ctx, param, value):
    """``--keypoints`` (one path, or a tuple of them): folders, not files (a COCO file goes to
    --annotations)."""
    for path in value if isinstance(value, tuple) else [value]:
        if path is not None and path.is_file():
            raise click.BadParameter(f"{path} is a file: --keypoints takes the folder of OpenPose files "
                                     "(<image stem>_keypoints.json); a COCO annotation file goes to --annotations "
                                     "FILE", ctx=ctx, param=param)
    return value


def _parse_shard(ctx, param, value: str) -> tuple[int, int]:
    from fit3d.pipeline import parse_shard

    try:
        return parse_shard(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from e


def _parse_workers(ctx, param, value: str) -> int | None:
    if value.strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise click.BadParameter(f"must be 'auto' or a number of processes >= 1, not {value!r}", ctx=ctx, param=param)
    return n


MODEL_CHOICE = click.Choice(MODELS)
_MODEL_OPTIONS = [
    click.option("--model", type=MODEL_CHOICE, default="anny", show_default=True,
                 help="Body model. anny is bundled; the SMPL family needs --model-path."),
    click.option("--model-path", type=click.Path(path_type=Path), default=None,
                 help="Licensed SMPL/SMPL-H/SMPL-X model file or folder."),
    click.option("--gender", type=click.Choice(GENDERS), default="neutral", show_default=True,
                 help="SMPL family model gender."),
    click.option("--device", default="cpu", show_default=True, callback=check_device,
                 help="torch device: cpu, cuda, cuda:1..."),
]
_OPTIONS = [
    click.option("--images", type=click.Path(file_okay=False, path_type=Path), required=True,
                 help="Folder of the images."),
    click.option("--annotations", type=click.Path(path_type=Path), default=None, callback=annotations_file,
                 help="COCO person-keypoint JSON. Default: a person_keypoints_*.json found beside or above --images."),
    click.option("--keypoints", "keypoints_dir", type=click.Path(path_type=Path), default=None,
                 callback=keypoints_folder,
                 help="Folder of OpenPose JSON files (<image stem>_keypoints.json) instead of COCO annotations."),
    click.option("--openpose-model", type=click.Choice(["body_25", "body_25b"]), default="body_25", show_default=True,
                 help="With --keypoints: the OpenPose model that wrote its 75-value people (--model_pose): "
                      "BODY_25, OpenPose's default, or BODY_25B (COCO's order first); a run says when the points "
                      "look like the other one."),
    click.option("--spin-npz", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="SPIN-style dataset .npz (imgname, center, scale, part) instead of COCO annotations."),
    click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
                 help="Output folder: one .npz per image and summary.json."),
    *_MODEL_OPTIONS,
    "--batch-size",  # (each command's own: _batch_size_option)
    click.option("--focal-length", type=click.FloatRange(min=1.0), default=None, callback=finite,
                 help="Focal length in pixels for every image. Default: the input's intrinsics (COCO image "
                      "'cam_param', SPIN 'cam_int' / 'focal_length') where it has them, else the image diagonal."),
    click.option("--limit", type=click.IntRange(min=1), default=None,
                 help="Fit at most N images of this job's shard (with --shard or 'fit3d submit --jobs': N per "
                      "task; 'fit3d merge' names the shards it cut short)."),
    click.option("--shard", default="1/1", show_default=True, callback=_parse_shard,
                 help="i/n: fit the i-th of n parts of the images (one job of n; an image's part is a hash of its "
                      "name, so no other image moves it); 'auto': this SLURM "
                      "array task's shard (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT; stepped arrays "
                      "such as --array=0-8:2 too)."),
    click.option("--workers", default="auto", show_default=True, callback=_parse_workers,
                 help="Processes fitting the batches, this one included: a number, or auto (on a CPU one "
                      "per core, at most 8, one per batch and one per 200 people; on a GPU 1). Each extra "
                      "process builds its own model (~0.5-0.8 GB); each runs cores // N threads (at least "
                      "1); 1 fits in this process alone."),
    click.option("--overwrite", is_flag=True, help="Refit images whose .npz already exists."),
    click.option("--min-visible", type=click.IntRange(min=1), default=None,
                 help="Skip people with fewer usable keypoints (default 6)."),
    click.option("--no-progress", "no_progress", is_flag=True, help="No progress bar."),
    click.option("--render", is_flag=True, help="Also render overlays + side views to OUT/render/."),
    click.option("--save-mesh", type=click.Choice(["obj", "ply"]), default=None,
                 help="Also write one mesh per fitted person to OUT/render/."),
    click.option("--dry-run", is_flag=True,
                 help="Read every input and report counts and problems; fit and write nothing."),
]
_FIELDS = [f.name for f in fields(FitOptions) if f.name != "progress"]


def check_model_options(model: str, model_path, gender: str,
                        hint: str = "add --model smpl, smplh or smplx (anny, the default model, takes neither)") -> None:
    """Refuse SMPL-family options given with anny (a usage error, exit 2, ending with ``hint``):
    ``--model-path`` and a ``--gender`` were ignored in silence, and a forgotten ``--model smpl`` fitted anny."""
    if model != "anny":
        return
    given = [o for o, v in (("--model-path", model_path is not None), ("--gender", gender != "neutral")) if v]
    if given:
        raise click.UsageError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for the SMPL family: "
                               f"{hint}")


def _batch_size_option(defaults: str):
    """``--batch-size``, its help naming the command's own ``defaults``."""
    return click.option("--batch-size", type=click.IntRange(min=1), default=None,
                        help=f"People per batched fit. Default: the fitter's, {defaults} (a batch that runs out of "
                             "GPU memory is fitted again in halves, and later ones no larger).")


def fit_options(f=None, *, batch_sizes: str = "the fastest on 2 cores on a CPU, within ~10 GiB on a GPU"):
    """Add the shared fitting options to a click command, which receives them as one
    ``opts: FitOptions`` keyword argument (beside its own options). ``batch_sizes``: the command's
    default batch sizes, in words, for ``--batch-size``'s help
    (``@fit_options(batch_sizes="256 on a CPU, 4096 on a GPU")``)."""
    if f is None:
        return functools.partial(fit_options, batch_sizes=batch_sizes)

    @functools.wraps(f)
    def command(*args, **kwargs):
        opts = FitOptions(**{k: kwargs.pop(k) for k in _FIELDS}, progress=not kwargs.pop("no_progress"))
        check_model_options(opts.model, opts.model_path, opts.gender)
        return f(*args, opts=opts, **kwargs)

    for option in reversed(_OPTIONS):
        command = (_batch_size_option(batch_sizes) if option == "--batch-size" else option)(command)
    return command


@contextmanager
def errors_as(exception: type[click.ClickException] = click.ClickException):
    """Turn the package's ``ValueError`` / ``FileNotFoundError`` (whose messages say what
    to do) into a click error: no traceback, exit status 1 (2 for a UsageError)."""
    try:
        yield
    except (ValueError, FileNotFoundError) as e:
        raise exception(str(e)) from e


def writable_folder(path: Path, option: str) -> None:
    """Make the folder of the output ``path`` (given as ``option``), as its write would, before the
    command's work rather than after it.

    Raises:
        click.UsageError: the folder cannot be made or written to (a file in its place, no permission).
    """
    import os

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise click.UsageError(f"{option} {path}: its folder cannot be made ({e.strerror or e})") from e
    if not os.access(path.parent, os.W_OK):
        raise click.UsageError(f"{option} {path}: its folder {path.parent} cannot be written to")


@contextmanager
def fits_readable(nothing: str):
    """For merge and export: a folder none of whose fits can be read
    (:class:`fit3d.pipeline.merge.NoReadableFits`) names them (the first 10), says ``nothing``
    (e.g. "nothing exported") and exits 3 (the fitting commands' code for unreadable inputs;
    nothing is written)."""
    from fit3d.pipeline.merge import NoReadableFits

    try:
        yield
    except NoReadableFits as e:
        for u in e.unreadable[:10]:
            click.echo(f"fit3d: unreadable {u['file']}: {u['reason']}", err=True)
        if len(e.unreadable) > 10:
            click.echo(f"fit3d: ... and {len(e.unreadable) - 10} more unreadable fits", err=True)
        click.echo(f"fit3d: {e}: {nothing} (delete them, then rerun the fitting command to refit them)", err=True)
        raise click.exceptions.Exit(3) from e


def echo_unreadable(unreadable: list[dict], lost: dict[str, str], prefix: str = "fit3d: ") -> bool:
    """Name each file a merge could not read (its ``unreadable_outputs``,
    :func:`fit3d.pipeline.merge.merge_fits`) with what the command's output lacks for it, ``lost``
    by ``kind`` (``fit``, ``summary``, ``dataset``). Returns whether some fit's people are missing:
    merge's and export's exit 3, as the fitting commands' for inputs they could not read (an
    unreadable summary or a dataset left in the folder loses no one)."""
    for u in unreadable:
        click.echo(f"{prefix}unreadable {u['file']}: {u['reason']} ({lost[u['kind']]})", err=True)
    return any(u["kind"] == "fit" for u in unreadable)


#: ``--model`` of a command for the SMPL family (``setup-model``): no default, since anny, the
#: other commands' default, needs none of it (it is refused with a one-line error).
_REQUIRED_MODEL = click.option("--model", type=MODEL_CHOICE, required=True,
                               help="Body model: smpl, smplh or smplx (anny's weights are bundled).")


def model_options(f=None, *, model_required: bool = False):
    """Add ``--model``, ``--model-path``, ``--gender``, ``--device`` to a command, which receives
    the built body model as ``body`` (a missing model file is a clean error). ``--model``
    defaults to anny, or, with ``model_required`` (``@model_options(model_required=True)``),
    has no default and must be given (a usage error, exit 2, without it)."""
    if f is None:
        return functools.partial(model_options, model_required=model_required)

    @functools.wraps(f)
    def command(*args, **kwargs):
        from fit3d.body_models import build_body_model

        spec = {k: kwargs.pop(k) for k in ("model", "model_path", "gender", "device")}
        check_model_options(spec["model"], spec["model_path"], spec["gender"])
        with errors_as():
            body = build_body_model(spec["model"], spec["model_path"], gender=spec["gender"], device=spec["device"])
        return f(*args, body=body, **kwargs)

    for option in reversed([_REQUIRED_MODEL, *_MODEL_OPTIONS[1:]] if model_required else _MODEL_OPTIONS):
        command = option(command)
    return command


def unfinished_lines(s: dict, fits_dir: Path, what: str = "dataset", again: str = "merge") -> list[str]:
    """The lines that say what a merge of ``fits_dir`` (its summary ``s``, :func:`fit3d.pipeline.merge.merge_fits`)
    lacks: shards that left nothing or did not finish, images still to refit, input problems the
    runs recorded. ``what`` names the output (``dataset``, ``export``), ``again`` the command to
    run again once the fitting is done."""
    kept = "merged" if again == "merge" else "exported"
    lines: list[str] = []
    splits = " and ".join(f"{n} shard(s)" if n > 1 else "an unsharded run" for n in s["complete_splits"])
    unless = f"unless the folder's complete split ({splits}) fitted them, " if splits else ""
    if s["missing_shards"]:
        lines.append(f"fit3d: warning: shard(s) {', '.join(s['missing_shards'])} left no outputs or summary in "
                     f"{fits_dir}: {unless}their images are not in the {what}; run them (--shard i/n), then {again} "
                   "again")
    for u in s["unfinished_shards"]:
        lines.append(f"fit3d: warning: shard {u['shard']} is unfinished: {unless}its images not yet fitted are not in "
                   f"the {what}: {u['why']}; then {again} again")
    if s["pending_failures"]:
        lines.append(f"fit3d: {count(len(s['pending_failures']), 'image')} still ha{'ve' if len(s['pending_failures']) > 1 else 's'} "
                   "failed people or could not be written "
                   f"(e.g. {s['pending_failures'][0]}): rerun the fitting command, then {again} again")
    if s["pending_incomplete"]:
        lines.append(f"fit3d: {count(len(s['pending_incomplete']), 'image')} "
                   f"w{'ere' if len(s['pending_incomplete']) > 1 else 'as'} written without people whose annotations "
                   f"could not be read (e.g. {s['pending_incomplete'][0]}): fix the input, rerun the fitting command, "
                   f"then {again} again")
    errors = s["latest_runs_total"].get("input_errors", 0)
    if errors:
        lines.append(f"fit3d: warning: the runs recorded {count(errors, 'input problem')} (unreadable images or "
                   f"annotations, each counted once: their people are not in the {what}, unless an earlier run "
                   f"fitted them before the file went bad, whose fits are kept and {kept}; the shards' summary files "
                   "list them)")
    return lines
