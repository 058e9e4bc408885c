"""``fit3d submit`` (sharded runs through submitit) and ``fit3d merge`` (one dataset file)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from fit3d.cli.options import echo_unreadable, errors_as, fits_readable, unfinished_lines


@click.command(context_settings=dict(ignore_unknown_options=True, allow_interspersed_args=True))
@click.argument("command", type=click.Choice(["smplify", "eft", "neuralannot"]))
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Array tasks (shards); each runs the command with --shard i/JOBS. neuralannot: 1.")
@click.option("--cluster", type=click.Choice(["slurm", "local"]), default="slurm", show_default=True,
              help="slurm: an sbatch array job; local: the same jobs as processes on this machine.")
@click.option("--logs", type=click.Path(file_okay=False, path_type=Path), default=Path("fit3d_jobs"),
              show_default=True, help="submitit's folder: job scripts and one stdout/stderr per task.")
@click.option("--slurm-partition", default=None, help="SLURM partition.")
@click.option("--gpus-per-job", type=click.IntRange(min=0), default=0, show_default=True,
              help="GPUs per task (needed by --device cuda). Add --device cuda to the command. --cluster local "
                   "gives each task its own GPUs, round robin over this machine's.")
@click.option("--ranks", type=click.IntRange(min=1), default=None,
              help="neuralannot: torch.distributed ranks of its one job (default: --gpus-per-job, at least 1).")
@click.option("--cpus-per-job", type=click.IntRange(min=1), default=None, help="CPUs per task.")
@click.option("--mem-gb", type=click.IntRange(min=1), default=None, help="Memory per task (GB).")
@click.option("--time", "time_min", type=click.IntRange(min=1), default=240, show_default=True,
              help="Time limit per task, minutes (a task that hits it is requeued and resumes).")
@click.option("--max-parallel", type=click.IntRange(min=1), default=None, help="At most N tasks at once.")
@click.option("--slurm-arg", "slurm_args", multiple=True, metavar="KEY=VALUE",
              help="Extra sbatch option, e.g. --slurm-arg account=abc (repeatable).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run the first task's command with --dry-run here first and queue nothing if it fails (a bad "
                   "option, a missing input, an output folder fitted with other settings). smplify and eft.")
@click.option("--wait/--no-wait", default=None,
              help="Wait for every task and exit with the worst exit code, where 4 (nothing fitted) counts only when "
                   "no task fitted anyone (default: wait with --cluster local).")
def submit(command, options, jobs, cluster, logs, slurm_partition, gpus_per_job, ranks, cpus_per_job, mem_gb,
           time_min, max_parallel, slurm_args, check, wait):
    """Run 'fit3d COMMAND OPTIONS...' as JOBS shards on SLURM (submitit), or locally.

    The command's own options and the submit options may come in any order, e.g.

        fit3d submit eft --images coco/train2017 --out fits/ --device cuda
            --jobs 64 --slurm-partition gpu --gpus-per-job 1

    then 'fit3d merge --fits fits/' when every task has finished. Each task resumes
    what exists; preempted or timed-out tasks are requeued. Before queueing, the first task's
    command runs here with --dry-run (--no-check skips it).
    """
    from fit3d.pipeline.submit import (ClusterUnavailable, SubmitConfig, array_exit_code, check_cluster, check_gpus,
                                       precheck, precheck_passes, wait_for)
    from fit3d.pipeline.submit import submit as do_submit

    from fit3d.cli.main import run as entry  # what each task runs (the pipeline does not import the CLI)

    extra = {}
    for kv in slurm_args:
        if "=" not in kv:
            raise click.BadParameter(f"{kv!r}: expected KEY=VALUE", param_hint="--slurm-arg")
        k, v = kv.split("=", 1)
        extra[k] = v
    with errors_as(click.UsageError):
        config = SubmitConfig(jobs=jobs, cluster=cluster, logs=logs, partition=slurm_partition,
                              gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job, mem_gb=mem_gb, time_min=time_min,
                              max_parallel=max_parallel, slurm_args=extra, ranks=ranks)
        check_gpus(list(options), config)
    try:
        check_cluster(cluster)  # (before the pre-check, which takes a while)
    except ClusterUnavailable as e:
        raise click.ClickException(str(e)) from e
    if check:
        with errors_as(click.UsageError):
            code = precheck(command, list(options), jobs, entry)
        if not precheck_passes(code, jobs):
            why = "interrupted" if code == 130 else "(above); fix that and submit again"
            click.echo(f"fit3d: nothing submitted: 'fit3d {command} ... --dry-run' exited {code} {why}", err=True)
            raise click.exceptions.Exit(code)
    try:
        with errors_as(click.UsageError):
            submitted = do_submit(command, list(options), config, entry)
    except ClusterUnavailable as e:
        raise click.ClickException(str(e)) from e
    tasks = sum(getattr(j, "num_tasks", 1) for j in submitted)  # NeuralAnnot: one job, a task per rank
    what = f"{len(submitted)} task(s)" if tasks == len(submitted) else f"{len(submitted)} job(s) of {tasks} tasks (ranks)"
    click.echo(f"fit3d: submitted {what} of 'fit3d {command}' to {cluster}: "
               f"{', '.join(str(j.job_id) for j in submitted[:8])}{' ...' if len(submitted) > 8 else ''}; "
               f"logs in {logs}", err=True)
    if wait is None:
        wait = cluster == "local"
    if not wait:
        return
    codes = []
    for task in wait_for(submitted):  # as each task ends
        codes.append(task.code)
        if task.why:
            click.echo(f"fit3d: task {task.name} {task.why}", err=True)
    by_code = Counter(codes)
    click.echo(f"fit3d: {len(codes)} task(s) finished: " + ", ".join(
        f"{n} exit {c}" for c, n in sorted(by_code.items())), err=True)
    raise click.exceptions.Exit(array_exit_code(codes))


@click.command()
@click.option("--fits", "fits_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Output folder of a run (all its shards).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Dataset file (default: FITS/dataset.npz).")
def merge(fits_dir, out):
    """One dataset .npz (every person, every field, image path, shard) and the totals in FITS/summary.json.

    What exists is merged, exit 0; a warning line names the shards of the recorded i/n split that
    left nothing (also 'missing_shards' in the totals), those whose latest run did not finish
    (interrupted, killed, cut short by --limit: 'unfinished_shards'), and the images still to refit. Exit 3
    when some per-image fits could not be read (each named; their people are not in the dataset, as
    'fit3d export' does). A fitting run that later writes into FITS removes the dataset: merge again after it.
    """
    from fit3d.pipeline.merge import check_dataset_name, write_merged
    from fit3d.pipeline.settings import differing_settings

    if out is not None:
        with errors_as(click.UsageError):  # (before anything is read)
            check_dataset_name(out)
    with errors_as(), fits_readable("nothing merged"):
        path, s = write_merged(fits_dir, out)
    med = s["reproj_error_px"]["median"]
    empty = f" ({', '.join(s['shards_without_people'])}: no people)" if s["shards_without_people"] else ""
    click.echo(f"fit3d: merged {s['people']} people ({s['people_fitted']} fitted, {s['people_valid']} valid, "
               f"{s['people_skipped']} skipped) of {s['images_with_outputs']} images from "
               f"{'shards ' + ', '.join(s['shards']) if s['shards'] else 'no shard with people'}{empty}; median reprojection {'n/a' if med is None else f'{med:.2f} px'} "
               f"-> {path}", err=True)
    for line in unfinished_lines(s, fits_dir):
        click.echo(line, err=True)
    missing = echo_unreadable(s["unreadable_outputs"], prefix="fit3d: warning: ", lost=dict(
        fit="its people are not in the dataset", summary="its run's counts are not in the totals", dataset="not merged"))
    if len(s["settings"]) > 1:  # (outputs copied together: merged without a word, found by a review)
        keys = differing_settings(s["settings"])
        named = ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
        click.echo(f"fit3d: warning: the runs' summaries record {len(s['settings'])} different fit settings (in "
                   f"{named}): the dataset mixes fits made with them (see 'settings' under 'merged' in summary.json)",
                   err=True)
    if missing:  # (exit 0 before: a script's 'merge && train' went on without those people)
        raise click.exceptions.Exit(3)

