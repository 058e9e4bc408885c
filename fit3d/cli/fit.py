"""``fit3d smplify``, ``fit3d eft``, ``fit3d neuralannot``: read the inputs, build the
fitter (:mod:`fit3d.fitters.build`), run the batch job (:mod:`fit3d.pipeline`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import click

from fit3d.cli.options import (PRIOR_CHOICE, FitOptions, annotations_file, check_device, errors_as, finite,
                               fit_options, keypoints_folder)
from fit3d.cli.render import render_fits
from fit3d.names import GENDERS, MODELS
from fit3d.wording import count, people


def load_inputs(images: Path, annotations: Path | None = None, keypoints_dir: Path | None = None,
                spin_npz: Path | None = None, echo: bool = True, only=None, openpose_model: str = "body_25",
                out_dir: Path | None = None):
    """:func:`fit3d.data.readers.load_inputs`, what it found on stderr (unless ``echo`` is
    False, e.g. on every torch.distributed rank but the first). A missing input path is a
    usage error (exit 2), as are two sources of people and an ``out_dir`` inside the OpenPose
    ``keypoints_dir`` (:func:`~fit3d.data.readers.check_outputs_apart`); an unreadable input file a
    clean error (exit 1). ``only``, ``openpose_model``: see ``fit3d.data.readers.load_inputs``."""
    from fit3d.data.readers import AmbiguousAnnotations, check_openpose_model, check_outputs_apart, input_sources
    from fit3d.data.readers import load_inputs as read

    sources = input_sources(annotations, keypoints_dir, spin_npz)
    if len(sources) > 1:
        raise click.UsageError(f"{' and '.join(sources)} were given: give one source of people")
    with errors_as(click.UsageError):
        check_openpose_model(openpose_model, keypoints_dir)
        check_outputs_apart(keypoints_dir, out_dir)
    try:
        records, problems, used = read(images, annotations, keypoints_dir, spin_npz, only, openpose_model)
    except (FileNotFoundError, AmbiguousAnnotations) as e:  # (which input: the user's to say)
        raise click.UsageError(str(e)) from e
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    if echo and annotations is None and used is not None:
        click.echo(f"fit3d: using annotations {used}", err=True)
    if echo:
        echo_problems(problems)
    return records, problems


#: Input problems printed per list; the rest are counted in one line (summary.json has them all).
SHOWN_PROBLEMS = 50


def echo_problem(severity: str, source: str, reason: str) -> None:
    """One input problem on stderr: ``input problem`` (severity "error") or ``warning``."""
    click.echo(f"fit3d: {'input problem' if severity == 'error' else 'warning'}: {source}: {reason}", err=True)


def echo_problems(problems, limit: int = SHOWN_PROBLEMS) -> None:
    """:func:`echo_problem` for the first ``limit`` of ``problems`` (:class:`InputProblem` objects or
    their summary dicts), then one line counting the others (a wrong file given as annotations
    can hold tens of thousands)."""
    as_tuple = lambda p: (p["severity"], p["source"], p["reason"]) if isinstance(p, dict) else (  # noqa: E731
        p.severity, p.source, p.reason)
    problems = list(problems)
    for p in problems[:limit]:
        echo_problem(*as_tuple(p))
    if len(problems) > limit:
        more = problems[limit:]
        errors = sum(as_tuple(p)[0] == "error" for p in more)
        click.echo(f"fit3d: ... and {len(more)} more ({count(errors, 'input problem')}, {count(len(more) - errors, 'warning')}) not "
                   "shown: summary.json of a run lists every one", err=True)


def report_run(s: dict, out_dir: Path) -> int:
    """The closing stderr lines of a :func:`fit3d.pipeline.run` summary; returns its exit code."""
    r = s["this_run"]
    med = r["reproj_error_px"]["median"]
    skipped = ", ".join(f"{n} {why}" for why, n in r["skipped_by_reason"].items())
    incomplete = (f", {r['images_incomplete']} written without their unreadable annotations (fitted again next run)"
                  if r["images_incomplete"] else "")
    click.echo(
        f"fit3d: {people(r['people_fitted'])} fitted ({r['people_valid']} valid, median reprojection error "
        f"{'n/a' if med is None else f'{med:.2f} px'}), {r['people_skipped']} skipped"
        f"{f' ({skipped})' if skipped else ''}, {r['people_failed']} failed"
        f"{f', {deferred} to refit with their image' if (deferred := r.get('people_deferred', 0)) else ''}; "
        f"images: {r['images']} given, "
        f"{r['images_written']} written, {r['images_already_done']} already done, {r['images_without_people']} "
        f"without people, {r['images_failed']} to retry{incomplete}; input problems: {r['input_errors']} "
        f"(+{count(r['input_warnings'], 'warning')}); {r['seconds']:.1f} s, {r['fits_per_second']:.2f} fits/s"
        + (f" ({r['fits_per_second_with_training']:.2f} with the annotator's training)"  # (NeuralAnnot)
           if "fits_per_second_with_training" in r else "") + f" -> {out_dir}",
        err=True,
    )
    for f in r["failures"][:20]:
        person = f" #{f['annot_id']}" if f.get("annot_id") is not None else ""  # (None: the image's output)
        click.echo(f"fit3d: failed {f['image']}{person}: {f['reason']}", err=True)
    for reason in s.get("unwritten", []):  # (a full disk: the summary itself may be among them)
        click.echo(f"fit3d: {reason}", err=True)
    if r["shard_empty"]:
        click.echo("fit3d: this shard got no image (more shards than images): nothing to do", err=True)
    if r.get("shard_unreadable"):
        click.echo("fit3d: none of this shard's images could be read (above): nothing fitted", err=True)
    if r["interrupted"]:
        click.echo("fit3d: interrupted: finished images are kept; run the same command again to resume", err=True)
    elif r["people_failed"] or r["images_failed"]:
        click.echo("fit3d: run the same command again to retry the images that failed", err=True)
    elif s.get("unwritten"):
        click.echo("fit3d: run the same command again to write them (the fitted images are kept)", err=True)
    return r["exit_code"]


def run_fit(opts: FitOptions, fitter_name: str, make_fitter: Callable, options: dict | None = None,
            default_batch_size: int = 64) -> None:
    """What every fitting command does: read inputs, build the model and the fitter
    (``make_fitter(body)``, picklable: worker processes build the same, see
    :mod:`fit3d.pipeline.workers`), run, report, render. ``options``: the command's own fitting
    options, recorded with the shared ones that change a fit (:func:`fit_settings`);
    ``default_batch_size``: the fitter's on ``opts.device`` (:func:`~fit3d.fitters.base.batch_size_for`),
    to plan the worker processes before it is built; the run's batch is the built fitter's on
    ``opts.device`` unless ``--batch-size`` says."""
    from fit3d.body_models import build_body_model
    from fit3d.fitters.base import batch_size_for
    from fit3d.pipeline import MIN_VISIBLE_KEYPOINTS, RunConfig, run
    from fit3d.pipeline.runner import check_output_dir

    records, problems = load_inputs(opts.images, opts.annotations, opts.keypoints_dir, opts.spin_npz,
                                    only=shard_test(opts), openpose_model=opts.openpose_model, out_dir=opts.out_dir)
    with worker_pool(opts, make_fitter, records, default_batch_size) as pool, errors_as():
        body = build_body_model(opts.model, opts.model_path, gender=opts.gender, device=opts.device)
        fitter = make_fitter(body)  # (a dry run too: missing weights, a bad schedule and the defaults show here)
        config = RunConfig(
            out_dir=opts.out_dir, focal_length=opts.focal_length,
            batch_size=opts.batch_size or batch_size_for(fitter, opts.device),
            overwrite=opts.overwrite, shard=opts.shard, limit=opts.limit,
            min_visible=opts.min_visible or MIN_VISIBLE_KEYPOINTS, progress=opts.progress, fitter_name=fitter_name,
            settings=fit_settings(opts, fitter_name, options or {}, fitter), inputs=input_record(opts),
        )
        if opts.dry_run:
            check_output_dir(opts.out_dir)  # (the run would fail making it)
            if opts.out_dir.is_dir():  # a run that would be refused says so now
                from fit3d.pipeline.lock import check_unlocked
                from fit3d.pipeline.settings import check_settings

                check_unlocked(opts.out_dir, config.shard)

                check_settings(opts.out_dir, config.settings, opts.overwrite, whole_folder=config.whole_folder,
                               record=False)
            raise click.exceptions.Exit(report_validation(records, problems, config, body))
        s = run(records, fitter, body, config, problems, pool=pool)
    echo_problems(s["input_problems"][len(problems):])  # found by the run (keypoint layouts): not printed yet
    code = report_run(s, opts.out_dir)
    if (opts.render or opts.save_mesh) and not s["this_run"]["interrupted"]:
        from fit3d.pipeline.selection import job_images

        # this job's images only (its shard, its --limit): not the whole folder, which other
        # shards fit into (a 64-task array rendered every fit 64 times)
        mine = [r.image_key for r in job_images(records, config) if r.people]
        unreadable = render_fits(opts.out_dir, opts.images, opts.out_dir / "render", body, side=True, keypoints=True,
                                 save_mesh=opts.save_mesh, names=mine, progress=opts.progress, overlays=opts.render)
        if unreadable and code == 0:  # the fit's own code comes first (5 before 3; 4 stays)
            code = 3
    raise click.exceptions.Exit(code)


def input_record(opts: FitOptions) -> dict:
    """:func:`fit3d.pipeline.summary.input_record` of the command's inputs."""
    from fit3d.pipeline.summary import input_record as record

    return record(opts.images, opts.annotations, opts.keypoints_dir, opts.spin_npz, opts.openpose_model)


def worker_pool(opts: FitOptions, make_fitter: Callable, records, default_batch_size: int):
    """The worker processes of a run (:mod:`fit3d.pipeline.workers`), planned for the people it
    will fit (this shard, the limit, not those already done) and started now so that they build
    their fitters while this process builds its own; a no-op context without them (one process
    planned, or a dry run)."""
    import contextlib
    import math

    from fit3d.pipeline.workers import FitterPool, FitterRecipe, available_cores, plan_workers

    # (outputs not opened: the run reads them when it selects its images; a plan needs only a count)
    people = sum(len(r.people) for r in this_job(opts, records, warn=False, verify=False)[0])
    cores = available_cores()
    processes, threads = plan_workers(opts.workers, opts.device,
                                      math.ceil(people / (opts.batch_size or default_batch_size)), people, cores)
    if opts.workers is not None and opts.workers > cores:
        click.echo(f"fit3d: warning: --workers {opts.workers} on {cores} cores: the processes will share them "
                   f"(one thread each)", err=True)
    if processes == 1 or opts.dry_run:
        return contextlib.nullcontext()
    recipe = FitterRecipe(opts.model, opts.model_path, opts.gender, opts.device, make_fitter)
    return FitterPool(recipe, processes - 1, threads)


def fit_settings(opts: FitOptions, fitter_name: str, options: dict, fitter=None) -> dict:
    """What decides a run's fits: the fitter, its ``options`` and the shared options that change
    a fit (model, model file, gender, focal length, keypoint threshold), not where the inputs
    and outputs are, the device, the batching or the sharding. Defaults are recorded as the
    values used (the keypoint threshold; ``steps`` and ``lr`` read from the built ``fitter``, or
    from its primary fitter) and paths as absolute paths, so that typing a default out or a
    path another way is the same setting. With the built ``fitter``, also what it says of
    itself (:func:`fit3d.pipeline.runner.fitter_description`: its options and a fingerprint of each
    learned weights file, so weights retrained at the same path are another setting)."""
    from fit3d.pipeline import MIN_VISIBLE_KEYPOINTS
    from fit3d.pipeline.runner import fitter_description

    out = dict(fitter=fitter_name, model=opts.model, model_path=opts.model_path, gender=opts.gender,
               focal_length=opts.focal_length, min_visible=opts.min_visible or MIN_VISIBLE_KEYPOINTS, **options)
    core = getattr(fitter, "primary", fitter)
    for k in ("steps", "lr"):
        if k in out and out[k] is None and hasattr(core, k):
            out[k] = getattr(core, k)
    model_file = getattr(getattr(core, "body_model", None), "model_file", None)
    if model_file is not None:  # the licensed file itself: a folder or the file given are the same setting
        out["model_file"] = Path(model_file)
    out = {k: str(Path(v).resolve()) if isinstance(v, Path) else v for k, v in out.items()}
    # what the built fitter says of itself: a fingerprint of each weights file it loaded (a prior
    # or regressor retrained by setup-model at the same path is another setting) and its options
    return {**out, **fitter_description(fitter)} if fitter is not None else out


def shard_test(opts: FitOptions):
    """For a sharded run (not a dry run, which reports on the whole input): a test of image keys
    that keeps this shard's, so that the other shards' images are neither opened nor parsed
    (:func:`fit3d.data.readers.load_inputs`'s ``only``); None otherwise."""
    if opts.shard[1] == 1 or opts.dry_run:
        return None
    from fit3d.pipeline.selection import in_shard

    return partial(in_shard, shard=opts.shard)


def this_job(opts: FitOptions, records, warn: bool = True, verify: bool = True):
    """:func:`fit3d.pipeline.select_images` for the command's shard, ``--limit`` and
    ``--overwrite``: a :class:`~fit3d.pipeline.selection.Selection` (images to fit, already done, this
    job's images, refits of changed annotations...); ``warn``: say which outputs are damaged
    (once per command: not when planning the worker processes); ``verify`` False: outputs are not
    opened (a count for planning)."""
    from fit3d.pipeline import select_images

    return select_images(records, job_config(opts), warn=warn, verify=verify)


def job_config(opts: FitOptions):
    """The :class:`~fit3d.pipeline.RunConfig` fields that choose a job's images: the output
    folder, shard, ``--limit`` and ``--overwrite``."""
    from fit3d.pipeline import RunConfig

    return RunConfig(opts.out_dir, shard=opts.shard, limit=opts.limit, overwrite=opts.overwrite)


def report_validation(records, problems, config, body) -> int:
    """``--dry-run``: print what a run of ``config`` would fit and say, and every problem; fits
    nothing (:func:`fit3d.pipeline.plan.dry_run`). Returns the exit code by the run's rule: 4 when
    this job has nothing to fit and nothing done, 3 with unreadable inputs, else 0. A dry run reads
    the whole input, so its 3 counts every shard's input errors (a sharded run reads and reports
    its own images' only)."""
    from fit3d.pipeline.plan import dry_run
    from fit3d.pipeline.skips import layout_problems

    layout = layout_problems(records, body.keypoint_convention)
    echo_problems(layout)  # the reader's problems were printed as they were read
    report = dry_run(records, list(problems) + layout, body.keypoint_convention, config)
    for line in report.lines:
        click.echo(line, err=True)
    return report.exit_code


@click.command()
@fit_options(batch_sizes="on a CPU 256 (the fastest on 2 cores), on a GPU 4096 (within ~10 GiB)")
@click.option("--prior", type=PRIOR_CHOICE, default=None,
              help="Pose prior (default: gmm, the most accurate on the development benchmark, see README; anny: bundled weights; "
                   "SMPL family: see --prior-path).")
@click.option("--prior-path", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Prior weights: 'fit3d train-prior' output, SMPLify's gmm_08.pkl, or a VPoser v2 .ckpt.")
@click.option("--schedule", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON/YAML list of stages overriding the default schedule (print it with 'fit3d print-schedule').")
@click.option("--hypotheses", type=click.IntRange(min=1), default=2, show_default=True,
              help="Orientation hypotheses (of 4) kept per person after the camera stage.")
def smplify(opts: FitOptions, prior, prior_path, schedule, hypotheses):
    """Fit SMPLify (staged optimisation from the rest pose and the prototype poses, under four
    orientation hypotheses, with limb depth flips; the best row per person is kept) to every
    annotated person.

    Example: fit3d smplify --images coco/val2017 --annotations person_keypoints_val2017.json --out fits/
    """
    from fit3d.fitters import SMPLify
    from fit3d.fitters.base import batch_size_for
    from fit3d.fitters.build import DEFAULT_PRIOR, build_smplify

    run_fit(opts, "smplify", partial(build_smplify, prior=prior, prior_path=prior_path, schedule=schedule,
                                     hypotheses=hypotheses),
            dict(prior=prior or DEFAULT_PRIOR, prior_path=prior_path, schedule=schedule, hypotheses=hypotheses),
            default_batch_size=batch_size_for(SMPLify, opts.device))


@click.command()
@fit_options(batch_sizes="on a CPU 64, with --fallback 256 (the fastest on 2 cores), on a GPU 2048 (within ~10 GiB)")
@click.option("--steps", type=click.IntRange(min=0), default=None, help="Fine-tuning steps per person (default 30).")
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=None, callback=finite,
              help="Fine-tuning learning rate (default: the --finetune preset's: 3e-5 for all, 1.3e-4 for fast).")
@click.option("--regressor", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Pretrained regressor (default: the bundled one for anny).")
@click.option("--prior", type=PRIOR_CHOICE, default=None, help="Optional extra pose prior term (default: none).")
@click.option("--prior-path", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Weights of --prior: 'fit3d train-prior' output, SMPLify's gmm_08.pkl, or a VPoser v2 .ckpt.")
@click.option("--refine", is_flag=True,
              help="Refine with SMPLify's refinement stages after fine-tuning (closest to the keypoints; not better "
                   "in 3D on the benchmark: README 'Latest numbers'; about half the fits/s).")
@click.option("--finetune", type=click.Choice(["all", "fast"]), default="all", show_default=True,
              help="Weights fine-tuned per person: all (as in the paper), or fast (input and last IEF layer; "
                   "1.6-2.9x the fits/s on a CPU, 1.5-2x on a GPU from 4,096 people per batch; about 1 mm worse "
                   "with noisy keypoints, 0.4 mm better on exact ones: docs/experiments.md, 'Thirty-second "
                   "session').")
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="Flip test-time augmentation: average each person's prediction with its mirror image's and "
                   "fine-tune through the average (13-20 % fewer fits/s; see README 'Latest numbers', 'Throughput'; ignored for a "
                   "regressor with a prototype head).")
@click.option("--follow", is_flag=True,
              help="Follow the keypoints: after fine-tuning, move the body's own pose toward them (anchored at "
                   "EFT's pose) and keep that per person where the residual falls 3x (exact keypoints; with "
                   "annotator noise it rarely triggers and does not help; 11-28 % fewer fits/s; see README "
                   "'How EFT works here').")
@click.option("--fallback", is_flag=True,
              help="Also fit SMPLify (people with >= 12 labelled keypoints) and keep its fit per person where it is "
                   "valid and reprojects 5x closer (clean keypoints of "
                   "poses the network does not know; about a quarter of the fits/s; see docs/experiments.md, 'EFT "
                   "with an SMPLify fallback').")
def eft(opts: FitOptions, steps, lr, regressor, prior, prior_path, refine, finetune, flip, follow, fallback):
    """Exemplar fine-tuning: per-person fine-tuning of a pretrained regressor, batched (Joo et al. 2021).

    Example: fit3d eft --images coco/val2017 --out fits/
    """
    from fit3d.fitters import EFT, SMPLify
    from fit3d.fitters.base import batch_size_for
    from fit3d.fitters.build import build_eft, check_prior_path
    from fit3d.fitters.fallback import fallback_batch_size

    with errors_as(click.UsageError):  # (before anything is read or built)
        check_prior_path(prior, prior_path)

    run_fit(opts, "eft", partial(build_eft, regressor_path=regressor, steps=steps, lr=lr, prior=prior,
                                 prior_path=prior_path, refine=refine, finetune=finetune, flip=flip, fallback=fallback,
                                 follow=follow),
            dict(steps=steps, lr=lr, regressor=regressor, prior=prior, prior_path=prior_path, refine=refine,
                 finetune=finetune, flip=flip, fallback=fallback, follow=follow),
            default_batch_size=fallback_batch_size(EFT, SMPLify, opts.device) if fallback
            else batch_size_for(EFT, opts.device))


@click.command()
@click.option("--images", "images_dirs", multiple=True, required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Image folder (repeat for several sets).")
@click.option("--annotations", "annotations_files", multiple=True, type=click.Path(path_type=Path),
              callback=annotations_file,
              help="COCO JSON per --images, in the same order (default: found beside each folder).")
@click.option("--keypoints", "keypoints_dirs", multiple=True, type=click.Path(path_type=Path),
              callback=keypoints_folder,
              help="Folder of OpenPose JSON per --images, in the same order, instead of --annotations (a "
                   "detector's keypoints; their scores weigh the points).")
@click.option("--openpose-model", type=click.Choice(["body_25", "body_25b"]), default="body_25", show_default=True,
              help="The OpenPose model that wrote --keypoints' 75-value people (as 'fit3d eft').")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: annotator.pt and the .npz fits (one subfolder per set when there are several).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Training epochs over the target set (default: 10); with --holdout, the most tried.")
@click.option("--holdout", type=click.FloatRange(0, 0.9), default=None,
              help="Share of the people held out to choose the training length (default 0.2, at most 2,000 "
                   "people): training stops when their 2D loss rises, then that length is trained on everyone. "
                   "0: train --epochs on everyone.")
@click.option("--recipes", default="depth,pretrain,prior", show_default=True,
              help="Comma-separated subset of depth, pretrain, prior (or none).")
@click.option("--refine", is_flag=True,
              help="30 EFT steps per person from the annotator's prediction, kept where they pay (as 'fit3d eft').")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="People per annotation batch (default: 64 on the CPU, 2048 on a GPU; training's batch is "
                   "its own).")
@click.option("--device", default="cpu", show_default=True, callback=check_device,
              help="torch device: cpu or cuda (under torchrun each rank takes cuda:LOCAL_RANK).")
@click.option("--model", type=click.Choice(MODELS), default="anny", show_default=True,
              help="Body model (the SMPL family needs --model-path and 'fit3d setup-model' once).")
@click.option("--model-path", type=click.Path(path_type=Path), default=None,
              help="Licensed SMPL/SMPL-H/SMPL-X model file or folder.")
@click.option("--gender", type=click.Choice(GENDERS), default="neutral", show_default=True,
              help="SMPL family model gender.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def neuralannot(images_dirs, annotations_files, keypoints_dirs, openpose_model, out_dir, epochs, holdout, recipes,
                refine, batch_size, device, model, model_path, gender, no_progress):
    """NeuralAnnot: train one annotator on the whole target set, then annotate it (Moon et al. 2022/2023).

    The annotator checkpoint is OUT/annotator.pt; an interrupted run resumes from it.
    Multi-GPU (or multi-process CPU): launch with torchrun, e.g.
    'torchrun --nproc-per-node 4 -m fit3d.cli.main neuralannot ... --device cuda':
    DDP training, then each rank annotates its share of the images (a hash of each image's name: every
    image once; one summary per rank; 'fit3d merge' combines them).
    """
    from fit3d.body_models import build_body_model
    from fit3d.fitters.build import build_neuralannot
    from fit3d.fitters.neuralannot import parse_recipes
    from fit3d.pipeline import neuralannot_target, run_neuralannot
    from fit3d.pipeline.summary import combined_exit_code

    try:
        rec = parse_recipes(recipes)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--recipes") from e
    from fit3d.pipeline.distributed import finish, init_from_env
    from fit3d.pipeline.neuralannot import check_input_sets

    with errors_as(click.UsageError):  # (before torchrun's ranks set up and build the model)
        check_input_sets(images_dirs, annotations_files, keypoints_dirs, openpose_model)
    dist = init_from_env(device)
    with errors_as():
        body = build_body_model(model, model_path, gender=gender, device=dist.device)
    sets = [(d, *load_inputs(d, annotations_files[i] if annotations_files else None,
                             keypoints_dirs[i] if keypoints_dirs else None, echo=dist.is_main,
                             openpose_model=openpose_model, out_dir=out_dir))
            for i, d in enumerate(images_dirs)]
    from fit3d.pipeline.skips import layout_problems

    every = [r for _, records, _ in sets for r in records]
    with errors_as():  # a layout the model cannot use stops here, before training
        layout = layout_problems(every, body.keypoint_convention)
        target = neuralannot_target(every, body)
        length = {k: v for k, v in dict(epochs=epochs, holdout=holdout).items() if v is not None}
        annot = build_neuralannot(body, rec, refine=refine, checkpoint=out_dir / "annotator.pt", **length)
    trained: list[dict] = []  # this run's epochs: printed as they end, or after the progress bar
    codes = []
    progress = not no_progress and dist.is_main
    if dist.is_main:
        echo_problems(layout)
        annot.on_epoch = trained.append if progress else (lambda e: (trained.append(e), _echo_epoch(e)))
    with errors_as():  # e.g. a checkpoint choosing its length that this configuration cannot resume
        train_s = run_neuralannot(sets, annot, target, body, out_dir, batch_size=batch_size, progress=progress,
                                  on_trained=(lambda h: _report_training(h, trained if progress else []))
                                  if dist.is_main else None,
                                  on_run=lambda s, out: codes.append(report_run(s, out)),
                                  shard=(dist.rank, dist.world))
    finish()
    if dist.is_main:
        did = (f"trained on {len(target)} people in {train_s:.1f} s" if trained else
               f"already trained to epoch {annot.epoch} (nothing to train)")
        click.echo(f"fit3d: annotator {did}: {out_dir / 'annotator.pt'}", err=True)
    raise click.exceptions.Exit(combined_exit_code(codes))


def _echo_epoch(e: dict) -> None:
    """One line per training epoch, as it ends (its loss parts, seconds, phase)."""
    click.echo("fit3d: epoch " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in e.items()), err=True)


def _report_training(history: list[dict], unprinted: list[dict]) -> None:
    """After training: the ``unprinted`` epochs of this run (those a progress bar stood for) and
    how long the held-out choice made the training."""
    for e in unprinted:
        _echo_epoch(e)
    if any(e.get("phase") == "select" for e in history):
        n = sum(e.get("phase") == "final" for e in history)
        click.echo(f"fit3d: training length chosen on held-out people: {n} epoch(s) on everyone", err=True)
