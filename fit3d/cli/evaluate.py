"""``fit3d evaluate``, ``fit3d benchmark make|run``, ``fit3d print-schedule``: score fits
(:mod:`fit3d.evaluation`) and show SMPLify's schedule."""

from __future__ import annotations

from pathlib import Path

import click

from fit3d.cli.options import (PRIOR_CHOICE, check_device, check_model_options, errors_as, model_options,
                               writable_folder)
from fit3d.names import GENDERS


@click.command()
@click.option("--fits", "fits_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="Folder of .npz fits.")
@click.option("--gt", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="Ground truth: COCO keypoint .json (2D), or SPIN-style .npz (2D; also 3D when it holds "
                   "SPIN's 3D joints S, as SPIN's own files do; fit3d's spin export does not).")
@click.option("--joints", type=click.Choice(["limbs12", "coco17"]), default="limbs12", show_default=True,
              help="Joints for MPJPE/PA-MPJPE (limbs12: shoulders, elbows, wrists, hips, knees, ankles).")
@click.option("--match", type=click.Choice(["ids", "keypoints"]), default="ids", show_default=True,
              help="Pair fits with ground-truth people by image and annotation id, or, within each image, by "
                   "where their input keypoints lie (fits of a detector's keypoints, e.g. OpenPose, scored "
                   "against annotations).")
@click.option("--per-sample", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write one CSV row per ground-truth person here.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="metrics.json path (default: FITS/metrics.json).")
def evaluate(fits_dir, gt, joints, match, per_sample, out):
    """Score fits against ground truth: MPJPE, PA-MPJPE (mm), 2D error (px), PCK, shares fitted and valid.

    Exit 3 when some fits or ground-truth entries could not be read (each said on stderr and
    in the metrics file; the rest is scored).
    """
    from fit3d.data.writers import write_json
    from fit3d.evaluation.evaluate import evaluate as run_eval
    from fit3d.evaluation.evaluate import write_per_sample

    for path, option in ((per_sample, "--per-sample"), (out, "--out")):  # (said before anything is written)
        if path is not None:
            writable_folder(path, option)
    try:
        summary, rows = run_eval(fits_dir, gt, joints, match)
    except (ValueError, KeyError) as e:
        raise click.ClickException(str(e)) from e
    fmt = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
    click.echo(f"{'count':>6} {'fitted':>6} {'MPJPE':>8} {'PA-MPJPE':>9} {'2D px':>7} {'PCK@.05':>8} {'PCK@.1':>7} {'valid':>6}")
    click.echo(f"{summary['count']:>6} {summary['fitted']:>6} {fmt(summary['mpjpe'], '8.1f'):>8} "
               f"{fmt(summary['pa_mpjpe'], '9.1f'):>9} {fmt(summary['error_2d_px'], '7.2f'):>7} "
               f"{fmt(summary['pck_05'], '8.3f'):>8} {fmt(summary['pck_10'], '7.3f'):>7} {summary['share_valid']:>6.2f}")
    click.echo(f"fit3d: valid is a share of the {summary['count']} ground-truth people; {summary['valid']} of the "
               f"{summary['fitted']} fitted are valid", err=True)  # (a trial read the share as of the fitted)
    if summary["duplicate_ids"]:
        click.echo(f"fit3d: {summary['duplicate_ids']} ground-truth people left out: their image and annotation id "
                   "are used more than once (in the ground truth or in the fits), so they cannot be matched", err=True)
    for f in summary["unreadable_fits"][:10]:
        click.echo(f"fit3d: unreadable fit {f}: its people count as not fitted", err=True)
    if len(summary["unreadable_fits"]) > 10:
        click.echo(f"fit3d: ... and {len(summary['unreadable_fits']) - 10} more unreadable fits (all in the metrics "
                   "file)", err=True)
    if summary["ground_truth_left_out"]:
        n = len(summary["ground_truth_left_out"])
        click.echo(f"fit3d: {n} ground-truth entr{'ies' if n > 1 else 'y'} left out (e.g. "
                   f"{summary['ground_truth_left_out'][0]}); all in metrics.json", err=True)
    if summary["fitted_without_common_keypoints"]:
        click.echo(f"fit3d: {summary['fitted_without_common_keypoints']} fitted people share no keypoint name with "
                   "the ground truth's layout: no 2D error for them", err=True)
    if summary["unscored_3d"]:
        n = summary["unscored_3d"]
        click.echo(f"fit3d: warning: {n} fitted {'people have' if n > 1 else 'person has'} 3D ground truth but no "
                   "finite MPJPE / PA-MPJPE (non-finite 3D joints, fewer than 4 labelled 3D joints, no labelled hip, or "
                   "a joint of the set the fit lacks): left out of those means (people behind each: "
                   "people_per_metric)", err=True)
    if summary["nonfinite_points_2d"]:
        click.echo(f"fit3d: warning: {summary['nonfinite_points_2d']} labelled keypoints have a non-finite fitted point: "
                   "counted as misses for PCK, left out of the 2D error", err=True)
    if summary["ground_truth_without_fit"]:
        n, m = summary["ground_truth_without_fit"], summary["images_without_fits"]
        click.echo(f"fit3d: {n} ground-truth {'people have' if n > 1 else 'person has'} no fit in {fits_dir} (counted "
                   f"as not fitted)" + (f"; {m} of their images have no readable fit file (a run cut by --limit or "
                                        "--shard, fits of other images, or unreadable fits)" if m else ""), err=True)
    if summary["fitted_not_in_ground_truth"]:
        n = summary["fitted_not_in_ground_truth"]
        if match == "ids":
            click.echo(f"fit3d: {n} fitted {'people match' if n > 1 else 'person matches'} no ground-truth image and "
                       "annotation id (fits of other annotations, or of OpenPose input, whose people are numbered 0, "
                       "1, ... per image: --match keypoints pairs them by where their keypoints lie): not scored",
                       err=True)
        else:
            click.echo(f"fit3d: {n} fitted {'people were' if n > 1 else 'person was'} paired with no ground-truth "
                       "person of their image (a detection of someone not annotated, one far off, or a second "
                       "detection of a person another fit was paired with): not scored", err=True)
    write_json(out or fits_dir / "metrics.json", summary)
    if per_sample:
        write_per_sample(rows, per_sample)
    if summary["unreadable_fits"] or summary["ground_truth_left_out"]:
        raise click.exceptions.Exit(3)  # as the fitting commands: some inputs could not be read, the rest is scored


@click.command("print-schedule")
def print_schedule():
    """Print SMPLify's default stage schedule as JSON (edit it, then pass --schedule)."""
    from fit3d.fitters.stages import default_smplify_schedule, schedule_to_json

    click.echo(schedule_to_json(default_smplify_schedule()))


@click.group()
def benchmark():
    """Synthetic benchmarks from held-out mocap: make one, run a fitter on it."""


@benchmark.command("make")
@click.option("--mocap", "poses", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Pose set from 'fit3d prepare-mocap' (default: the bundled CMU set; for a SMPL-family "
                   "model the set 'fit3d setup-model' retargeted to it).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .npz.")
@click.option("--count", type=click.IntRange(min=1), default=500, show_default=True, help="People.")
@click.option("--protocol", type=click.Choice(["subjects", "trials-v1"]), default="subjects", show_default=True,
              help="subjects: held-out subjects and action types, unknown focal length, realistic noise (the "
                   "development benchmark); trials-v1: the earlier benchmark, for comparison.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True,
              help="subjects: test (held-out subjects) or val (tuning subjects); trials-v1: test or train trials.")
@click.option("--subjects", default=None,
              help="subjects protocol: only these CMU subjects of the split, comma-separated (e.g. '35' for the "
                   "ordinary motions of the val split; default: all of the split's subjects).")
@click.option("--noise", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Scale of the 2D annotator noise: 0 = noise-free keypoints, 2 = twice the noise.")
@click.option("--framing", type=click.Choice(["full", "closeup"]), default="full", show_default=True,
              help="subjects protocol: full (people placed whole or cut by a border) or closeup (every person "
                   "framed from the waist or chest up, as in upper-body photos; those with >= 6 keypoints kept).")
@click.option("--scores", type=click.Choice(["labels", "detector"]), default="labels", show_default=True,
              help="subjects protocol: labels (confidence 1 for every labelled keypoint, as annotations) or "
                   "detector (graded detector-like confidences, ~0.6, lower for worse points).")
@click.option("--boxes", type=click.Choice(["keypoints", "silhouette"]), default="keypoints", show_default=True,
              help="subjects protocol: each person's box around their labelled keypoints (padded 10 %), or around "
                   "their whole projected body, as COCO's annotations box people.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--no-vertices", is_flag=True, help="Do not store ground-truth vertices (no PVE; smaller file).")
@model_options
def benchmark_make(poses, out, count, protocol, split, subjects, noise, framing, scores, boxes, seed, no_vertices,
                   body):
    """Make a synthetic benchmark (fit3d.evaluation.benchmark: protocols; fit3d.training.synthetic:
    cameras and 2D errors)."""
    from fit3d.body_models.weights import existing_weights
    from fit3d.data.writers import write_npz
    from fit3d.evaluation.benchmark import make_benchmark
    from fit3d.mocap.pose_set import load_pose_set

    with errors_as():  # (a SMPL-family model not set up yet: one line saying to run fit3d setup-model)
        bench = make_benchmark(load_pose_set(poses or existing_weights(body, "pose_set")), body, n=count, seed=seed,
                               protocol=protocol, split=split, noise=noise, with_vertices=not no_vertices,
                               subjects=None if subjects is None else tuple(s.strip() for s in subjects.split(",")),
                               framing=framing, scores=scores, boxes=boxes)
    write_npz(out, bench)
    click.echo(f"fit3d: {count} synthetic people ({protocol}, {split}, noise x{noise:g}"
               f"{', close-up' if framing == 'closeup' else ''}{', detector scores' if scores == 'detector' else ''}"
               f"{', silhouette boxes' if boxes == 'silhouette' else ''})"
               f" -> {out}", err=True)


@benchmark.command("run")
@click.option("--bench", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="Benchmark .npz from 'fit3d benchmark make'.")
@click.option("--fitter", type=click.Choice(["smplify", "eft", "regressor"]), default="smplify", show_default=True,
              help="regressor: the pretrained regressor alone (EFT with 0 steps; flip-averaged unless --no-flip).")
@click.option("--prior", type=PRIOR_CHOICE, default=None,
              help="smplify and eft: pose prior (default: smplify gmm, eft none).")
@click.option("--pose-space", type=click.Choice(["axis_angle", "latent"]), default="axis_angle", show_default=True,
              help="smplify: its pose variables, axis-angle or the VAE prior's latent code.")
@click.option("--schedule", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="smplify: its stage schedule (JSON/YAML, see 'fit3d print-schedule').")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="People per batched fit (default: 64 on the CPU; on a GPU the fitter's GPU batch, as "
                   "'fit3d smplify' / 'fit3d eft': 4096 / 2048). A batch that runs out of GPU memory is fitted "
                   "again in halves, and so are the later ones.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="First N people only.")
@click.option("--model-path", type=click.Path(path_type=Path), default=None,
              help="Licensed model file or folder, for a benchmark made with a SMPL-family model.")
@click.option("--gender", type=click.Choice(GENDERS), default="neutral", show_default=True,
              help="SMPL family model gender.")
@click.option("--device", default="cpu", show_default=True, callback=check_device,
              help="torch device: cpu, cuda, cuda:1...")
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="eft and regressor: flip test-time augmentation (as 'fit3d eft').")
@click.option("--finetune", type=click.Choice(["all", "fast"]), default="all", show_default=True,
              help="eft: the weights fine-tuned per person (as 'fit3d eft --finetune').")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="metrics .json (as printed: null for a metric without people).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def benchmark_run(ctx, bench, fitter, prior, pose_space, schedule, batch_size, limit, model_path, gender, device, flip,
                  finetune, out, no_progress):
    """Fit a benchmark's 2D keypoints and print the metrics as JSON.

    pa_mpjpe and mpjpe (mm) are on the 12 limb keypoints (the README's PA-MPJPE-12; MPJPE aligned on
    the mid-hip), with _common / _rare and rare_ratio where the file has a rare tenth; torso_deg is the
    torso's direction error in the camera frame; error_2d_px and pck_05 / pck_10 compare the fit's
    projection with the clean keypoints, reproj_median_px with the (noisy) input; pve (mm) needs
    vertices in the file; share_valid, fits_per_s. Every field: fit3d.evaluation.benchmark.run_benchmark.

    --prior applies to smplify and eft, --pose-space and --schedule to smplify, --flip/--no-flip to
    eft and regressor, --finetune to eft; giving one to another fitter is a usage error (exit 2).
    """
    from fit3d.body_models import build_body_model
    from fit3d.data.writers import json_text, write_json
    from fit3d.evaluation.benchmark import default_benchmark_batch, load_benchmark, run_benchmark
    from fit3d.fitters.build import build_eft, build_smplify

    check_fitter_options(ctx, fitter)
    if fitter == "smplify" and pose_space == "latent" and prior != "vae":  # (found by a new user's trial: exit 1)
        raise click.UsageError("--pose-space latent fits the VAE prior's latent code: add --prior vae")
    with errors_as():
        data = load_benchmark(bench)
    model = str(data.get("model", "anny"))
    check_model_options(model, model_path, gender, hint=f"{bench.name} was made with anny, which takes neither")
    with errors_as():
        body = build_body_model(model, model_path, gender=gender, device=device)
        if fitter == "smplify":
            f = build_smplify(body, prior, schedule=schedule, pose_space=pose_space)
        else:
            f = build_eft(body, steps=0 if fitter == "regressor" else None, prior=prior, flip=flip, finetune=finetune)
    if batch_size is None:
        batch_size = default_benchmark_batch(f, body.device)
    res = run_benchmark(data, f, body, batch_size=batch_size, limit=limit, progress=not no_progress, label=fitter)
    s = dict(res["summary"], fitter=fitter, prior=getattr(getattr(f, "prior", None), "name", None),
             pose_space=pose_space if fitter == "smplify" else None, bench=str(bench),
             flip=flip if fitter != "smplify" else None, finetune=finetune if fitter == "eft" else None,
             batch_size=batch_size)
    click.echo(json_text(s, strict=True))
    if out:
        write_json(out, s, strict=True)


#: ``fit3d benchmark run``'s options that apply to some fitters only: parameter name -> fitters.
FITTER_OPTIONS = {"prior": ("smplify", "eft"), "pose_space": ("smplify",), "schedule": ("smplify",),
                  "flip": ("eft", "regressor"), "finetune": ("eft",)}


def check_fitter_options(ctx: click.Context, fitter: str) -> None:
    """Refuse a :data:`FITTER_OPTIONS` option given on the command line (not left at its default)
    that ``fitter`` does not use, so that the output never records an option as used.

    Raises:
        click.UsageError: naming the option, the fitter and the fitters it applies to (exit 2).
    """
    from click.core import ParameterSource

    for name, fitters in FITTER_OPTIONS.items():
        if fitter not in fitters and ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT):
            option = next(p for p in ctx.command.params if p.name == name)
            raise click.UsageError(f"{'/'.join(option.opts + option.secondary_opts)} does not apply to --fitter "
                                   f"{fitter} (only to {' and '.join(fitters)})", ctx=ctx)
