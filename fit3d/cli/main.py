"""The ``fit3d`` command line. Only options and wiring: the work is in
:mod:`fit3d.pipeline`, :mod:`fit3d.fitters` and :mod:`fit3d.data`."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click


def _common_fit_options(f):
    """Options shared by every fitting command (smplify now; eft, neuralannot later)."""
    opts = [
        click.option("--images", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Folder of the images."),
        click.option("--annotations", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="COCO person-keypoint JSON. Default: a person_keypoints_*.json found beside or above --images."),
        click.option("--keypoints", "keypoints_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Folder of OpenPose JSON files (<image stem>_keypoints.json) instead of COCO annotations."),
        click.option("--spin-npz", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="SPIN-style dataset .npz (imgname, center, scale, part) instead of COCO annotations."),
        click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Output folder: one .npz per image and summary.json."),
        click.option("--model", type=click.Choice(["anny", "smpl", "smplh", "smplx"]), default="anny", show_default=True,
                     help="Body model. anny is bundled; the SMPL family needs --model-path."),
        click.option("--model-path", type=click.Path(path_type=Path), default=None,
                     help="Licensed SMPL/SMPL-H/SMPL-X model file or folder."),
        click.option("--gender", type=click.Choice(["neutral", "male", "female"]), default="neutral", show_default=True,
                     help="SMPL family model gender."),
        click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1..."),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                     help="People per batched fit."),
        click.option("--focal-length", type=click.FloatRange(min=1.0), default=None,
                     help="Focal length in pixels for every image. Default: the image diagonal."),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="Fit at most N images."),
        click.option("--shard", default="1/1", show_default=True,
                     help="i/n: fit every n-th image starting at the i-th (one job of n)."),
        click.option("--overwrite", is_flag=True, help="Refit images whose .npz already exists."),
        click.option("--min-visible", type=click.IntRange(min=1), default=None,
                     help="Skip people with fewer usable keypoints (default 6)."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _load_inputs(images: Path, annotations: Path | None, keypoints_dir: Path | None, spin_npz: Path | None = None):
    from fit3d.data.readers import discover_annotations, read_coco, read_openpose

    if not images.is_dir():
        raise click.UsageError(f"--images {images} is not a folder")
    if keypoints_dir is not None:
        return read_openpose(keypoints_dir, images)
    if spin_npz is not None:
        from fit3d.data.spin import read_spin

        try:
            return read_spin(spin_npz, images)
        except (FileNotFoundError, ValueError) as e:
            raise click.UsageError(str(e)) from e
    if annotations is None:
        annotations = discover_annotations(images)
        if annotations is None:
            raise click.UsageError(
                f"no --annotations given and no person_keypoints_*.json beside or above {images}; "
                "pass --annotations FILE.json (COCO) or --keypoints DIR (OpenPose)"
            )
        click.echo(f"fit3d: using annotations {annotations}", err=True)
    try:
        return read_coco(annotations, images)
    except (FileNotFoundError, ValueError) as e:
        raise click.UsageError(str(e)) from e


@click.group(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(verbose: bool) -> None:
    """fit3d: 3D human body pseudo-ground-truth from 2D keypoints.

    Fits a body model (anny by default, or SMPL/SMPL-H/SMPL-X) to every annotated
    person of a folder of images and writes one .npz of parameters per image.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@_common_fit_options
@click.option("--prior", type=click.Choice(["l2", "gmm", "vae", "articulation"]), default=None,
              help="Pose prior (default: the best on the synthetic benchmark, see README; anny: bundled weights; "
                   "SMPL family: see --prior-path).")
@click.option("--prior-path", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Prior weights: 'fit3d train-prior' output, SMPLify's gmm_08.pkl, or a VPoser v2 .ckpt.")
@click.option("--schedule", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON/YAML list of stages overriding the default schedule (see --print-schedule).")
@click.option("--hypotheses", type=click.IntRange(min=1), default=2, show_default=True,
              help="Orientation hypotheses (of 4) kept per person after the camera stage.")
@click.option("--render", "render_", is_flag=True, help="Also render overlays + side views to OUT/render/.")
@click.option("--save-mesh", type=click.Choice(["obj", "ply"]), default=None,
              help="Also write one mesh per fitted person to OUT/render/.")
def smplify(images, annotations, keypoints_dir, spin_npz, out_dir, model, model_path, gender, device, batch_size,
            focal_length, limit, shard, overwrite, min_visible, no_progress, prior, prior_path, schedule, hypotheses,
            render_, save_mesh):
    """Fit SMPLify (staged optimisation from the mean pose) to every annotated person.

    Example: fit3d smplify --images coco/val2017 --annotations person_keypoints_val2017.json --out fits/
    """
    _fit_command(
        "smplify", lambda body: _build_fitter("smplify", body, prior, schedule, prior_path, hypotheses=hypotheses),
        images, annotations, keypoints_dir, spin_npz, out_dir, model, model_path, gender, device, batch_size,
        focal_length, limit, shard, overwrite, min_visible, no_progress, render_, save_mesh,
    )


def _fit_command(fitter_name, make_fitter, images, annotations, keypoints_dir, spin_npz, out_dir, model, model_path,
                 gender, device, batch_size, focal_length, limit, shard, overwrite, min_visible, no_progress, render_,
                 save_mesh):
    """What every fitting command does: read inputs, build the model and fitter, run, report, render."""
    from fit3d.body_models import build_body_model
    from fit3d.pipeline import MIN_VISIBLE_KEYPOINTS, RunConfig, parse_shard, run

    try:
        shard_t = parse_shard(shard)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--shard") from e
    records, problems = _load_inputs(images, annotations, keypoints_dir, spin_npz)
    for p in problems:
        click.echo(f"fit3d: skipped input {p.source}: {p.reason}", err=True)
    try:
        body = build_body_model(model, model_path, gender=gender, device=device)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from e
    fitter = make_fitter(body)
    config = RunConfig(
        out_dir=out_dir, batch_size=batch_size, focal_length=focal_length, overwrite=overwrite, shard=shard_t,
        limit=limit, min_visible=min_visible or MIN_VISIBLE_KEYPOINTS, progress=not no_progress,
        fitter_name=fitter_name,
    )
    s = run(records, fitter, body, config, problems)
    _report(s, out_dir)
    if render_ or save_mesh:
        names = [Path(n).stem for n in s["this_run"]["image_keys"]]
        _render(out_dir, images, out_dir / "render", body, side=True, keypoints=True, save_mesh=save_mesh,
                names=names, progress=not no_progress, overlays=render_)


def _render(fits, images, out, body, side, keypoints, save_mesh, names, progress, overlays=True):
    from fit3d.render.fits import render_dir, save_meshes_dir
    from fit3d.render.overlay import RenderError

    if not overlays:
        n = save_meshes_dir(fits, out, body, save_mesh, names=names)
        click.echo(f"fit3d: wrote {n} meshes -> {out}", err=True)
        return
    try:
        st = render_dir(fits, images, out, body, side=side, keypoints=keypoints, save_mesh=save_mesh, names=names,
                        progress=progress)
    except RenderError as e:
        raise click.ClickException(str(e)) from e
    for m in st["missing_images"]:
        click.echo(f"fit3d: image not found, rendered on grey: {m}", err=True)
    for er in st["errors"]:
        click.echo(f"fit3d: could not render {er['file']}: {er['reason']}", err=True)
    click.echo(f"fit3d: rendered {st['images']} images in {st['seconds']:.1f} s "
               f"({st['images_per_s']:.2f} images/s) -> {out}", err=True)


@cli.command()
@_common_fit_options
@click.option("--steps", type=click.IntRange(min=0), default=None, help="Fine-tuning steps per person (default 30).")
@click.option("--lr", type=float, default=None, help="Fine-tuning learning rate.")
@click.option("--regressor", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Pretrained regressor (default: the bundled one for anny).")
@click.option("--prior", type=click.Choice(["l2", "gmm", "vae", "articulation"]), default=None,
              help="Optional extra pose prior term.")
@click.option("--prior-path", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None)
@click.option("--refine", is_flag=True, help="Refine with SMPLify's final stage after fine-tuning.")
@click.option("--render", "render_", is_flag=True, help="Also render overlays + side views to OUT/render/.")
@click.option("--save-mesh", type=click.Choice(["obj", "ply"]), default=None)
def eft(images, annotations, keypoints_dir, spin_npz, out_dir, model, model_path, gender, device, batch_size,
        focal_length, limit, shard, overwrite, min_visible, no_progress, steps, lr, regressor, prior, prior_path,
        refine, render_, save_mesh):
    """Exemplar fine-tuning: per-person fine-tuning of a pretrained regressor, batched (Joo et al. 2021).

    Example: fit3d eft --images coco/val2017 --out fits/
    """
    _fit_command(
        "eft", lambda body: _build_eft(body, regressor, steps, lr, prior, prior_path, refine),
        images, annotations, keypoints_dir, spin_npz, out_dir, model, model_path, gender, device, batch_size,
        focal_length, limit, shard, overwrite, min_visible, no_progress, render_, save_mesh,
    )


def _build_eft(body, regressor_path=None, steps=None, lr=None, prior=None, prior_path=None, refine=False):
    from fit3d.fitters import EFT
    from fit3d.priors import build_prior
    from fit3d.regressors import bundled_regressor
    from fit3d.training.regressor import load_regressor

    path = regressor_path or bundled_regressor(body.name)
    if not Path(path).is_file():
        raise click.ClickException(f"no pretrained regressor for {body.name}: train one with 'fit3d train-regressor' "
                                   "and pass --regressor")
    reg = load_regressor(path)
    if reg.num_keypoints != len(body.keypoint_convention) or reg.num_joints != body.num_body_joints:
        raise click.ClickException(f"{path} was trained for another body model")
    pose_prior = build_prior(prior, body, prior_path) if prior else None
    kw = {k: v for k, v in dict(steps=steps, lr=lr).items() if v is not None}
    return EFT(body, reg, prior=pose_prior, refine=refine, **kw)


@cli.command()
@click.option("--images", "images_dirs", multiple=True, required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Image folder (repeat for several sets).")
@click.option("--annotations", "annotations_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="COCO JSON per --images, in the same order (default: found beside each folder).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--recipes", default="depth,pretrain,prior", show_default=True,
              help="Comma-separated subset of depth, pretrain, prior (or none).")
@click.option("--refine", is_flag=True, help="A few EFT steps per person after the annotator's prediction.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--no-progress", is_flag=True)
def neuralannot(images_dirs, annotations_files, out_dir, epochs, recipes, refine, batch_size, device, no_progress):
    """NeuralAnnot: train one annotator on the whole target set, then annotate it (Moon et al. 2022/2023).

    The annotator checkpoint is OUT/annotator.pt; an interrupted run resumes from it.
    Multi-GPU: launch with torchrun (DDP).
    """
    from fit3d.body_models import build_body_model
    from fit3d.data.batching import make_batch
    from fit3d.fitters.neuralannot import NeuralAnnot, TrainConfig, parse_recipes, stack_batches
    from fit3d.mocap import bundled_pose_set
    from fit3d.pipeline import MIN_VISIBLE_KEYPOINTS, RunConfig, run, usable_keypoints
    from fit3d.priors import build_prior
    from fit3d.training.priors import load_pose_set
    from fit3d.regressors import bundled_regressor
    from fit3d.training.regressor import load_regressor

    try:
        rec = parse_recipes(recipes)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--recipes") from e
    if annotations_files and len(annotations_files) != len(images_dirs):
        raise click.UsageError("give one --annotations per --images (or none)")
    body = build_body_model("anny", device=device)
    sets = []
    for i, d in enumerate(images_dirs):
        records, problems = _load_inputs(d, annotations_files[i] if annotations_files else None, None)
        for p in problems:
            click.echo(f"fit3d: skipped input {p.source}: {p.reason}", err=True)
        sets.append((d, records, problems))
    people = [p for _, records, _ in sets for r in records for p in r.people
              if usable_keypoints(p, body.keypoint_convention)[0] >= MIN_VISIBLE_KEYPOINTS]
    if not people:
        raise click.ClickException("no person with enough keypoints to train on")
    target = stack_batches([make_batch(people[s : s + 256], body.keypoint_convention, device=device)
                            for s in range(0, len(people), 256)])
    out_dir.mkdir(parents=True, exist_ok=True)
    annot = NeuralAnnot(body, load_regressor(bundled_regressor()), rec,
                        pose_set=load_pose_set(bundled_pose_set()) if "depth" in rec else None,
                        prior=build_prior("vae", body) if "prior" in rec else None,
                        config=TrainConfig(epochs=epochs), refine_steps=30 if refine else 0,
                        checkpoint=out_dir / "annotator.pt")
    t0 = time.perf_counter()
    history = annot.fit_dataset(target, progress=not no_progress)
    train_s = time.perf_counter() - t0
    for e in history:
        click.echo("fit3d: epoch " + ", ".join(f"{k} {v:.4g}" for k, v in e.items()), err=True)
    for d, records, problems in sets:
        sub = out_dir / d.name if len(sets) > 1 else out_dir
        s = run(records, annot, body, RunConfig(sub, batch_size=batch_size, progress=not no_progress,
                                                fitter_name="neuralannot"), problems)
        _report(s, sub)
    click.echo(f"fit3d: annotator trained on {len(people)} people in {train_s:.1f} s -> {out_dir / 'annotator.pt'}",
               err=True)


@cli.command("train-regressor")
@click.option("--poses", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Pose set from 'fit3d prepare-mocap' (default: the bundled CMU set; training trials only).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .pt.")
@click.option("--rounds", type=int, default=16, show_default=True, help="Rounds of fresh synthetic people.")
@click.option("--people", type=int, default=8192, show_default=True, help="People per round.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def train_regressor_cmd(poses, out, rounds, people, seed, device):
    """Pretrain the keypoint-conditioned regressor that EFT fine-tunes (seeded)."""
    import json

    from fit3d.body_models import build_body_model
    from fit3d.mocap import bundled_pose_set
    from fit3d.training.priors import load_pose_set
    from fit3d.training.regressor import save_regressor, train_regressor

    torch_seed(seed)
    body = build_body_model("anny", device=device)
    model, stats = train_regressor(load_pose_set(poses or bundled_pose_set()), body, rounds=rounds,
                                   people_per_round=people, seed=seed)
    save_regressor(model, out)
    click.echo(json.dumps(stats, indent=2))


@cli.command()
@click.option("--fits", "fits_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="Folder of .npz fits.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder of the images.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder for <image stem>.png.")
@click.option("--side/--no-side", default=True, show_default=True, help="Side view beside the overlay.")
@click.option("--keypoints", is_flag=True, help="Draw input keypoints (circles) and reprojected ones (crosses).")
@click.option("--save-mesh", type=click.Choice(["obj", "ply"]), default=None, help="Also write one mesh per person.")
@click.option("--model-path", type=click.Path(path_type=Path), default=None,
              help="Licensed SMPL-family model (when the fits used one).")
@click.option("--gender", type=click.Choice(["neutral", "male", "female"]), default="neutral", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def render(fits_dir, images, out_dir, side, keypoints, save_mesh, model_path, gender, device, no_progress):
    """Render fitted meshes over their images (pyrender, headless EGL), with side views."""
    from fit3d.body_models import build_body_model
    from fit3d.data.writers import read_fit

    files = sorted(fits_dir.glob("*.npz"))
    if not files:
        raise click.UsageError(f"no .npz fits in {fits_dir}")
    model_name = str(read_fit(files[0])["model"])
    try:
        body = build_body_model(model_name, model_path, gender=gender, device=device)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from e
    _render(fits_dir, images, out_dir, body, side, keypoints, save_mesh, None, not no_progress)


@cli.command()
@click.option("--fits", "fits_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="Folder of .npz fits.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .html file.")
@click.option("--renders", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="PNGs from 'fit3d render' to show as thumbnails (default: FITS/render if present).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Images to show as thumbnails when there are no renders.")
def report(fits_dir, out, renders, images):
    """Write a self-contained HTML page reviewing a run (worst reprojection error first)."""
    from fit3d.render.report import write_report

    if renders is None and (fits_dir / "render").is_dir():
        renders = fits_dir / "render"
    s = write_report(fits_dir, out, renders, images)
    click.echo(f"fit3d: report of {s['people']} people ({s['fitted']} fitted, {s['valid']} valid) -> {out}", err=True)


@cli.command()
@click.option("--fits", "fits_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="Folder of .npz fits.")
@click.option("--gt", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="Ground truth: COCO keypoint .json (2D) or SPIN-style .npz (3D).")
@click.option("--joints", type=click.Choice(["limbs12", "coco17"]), default="limbs12", show_default=True,
              help="Joints for MPJPE/PA-MPJPE (limbs12: shoulders, elbows, wrists, hips, knees, ankles).")
@click.option("--per-sample", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write one CSV row per ground-truth person here.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="metrics.json path (default: FITS/metrics.json).")
def evaluate(fits_dir, gt, joints, per_sample, out):
    """Score fits against ground truth: MPJPE, PA-MPJPE (mm), 2D error (px), PCK, shares fitted and valid."""
    from fit3d.data.writers import write_json
    from fit3d.evaluation.evaluate import evaluate as run_eval
    from fit3d.evaluation.evaluate import write_per_sample

    try:
        summary, rows = run_eval(fits_dir, gt, joints)
    except (ValueError, KeyError) as e:
        raise click.ClickException(str(e)) from e
    fmt = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
    click.echo(f"{'count':>6} {'fitted':>6} {'MPJPE':>8} {'PA-MPJPE':>9} {'2D px':>7} {'PCK@.05':>8} {'PCK@.1':>7} {'valid':>6}")
    click.echo(f"{summary['count']:>6} {summary['fitted']:>6} {fmt(summary['mpjpe'], '8.1f'):>8} "
               f"{fmt(summary['pa_mpjpe'], '9.1f'):>9} {fmt(summary['error_2d_px'], '7.2f'):>7} "
               f"{fmt(summary['pck_05'], '8.3f'):>8} {fmt(summary['pck_10'], '7.3f'):>7} {summary['share_valid']:>6.2f}")
    write_json(out or fits_dir / "metrics.json", summary)
    if per_sample:
        write_per_sample(rows, per_sample)


@cli.command("print-schedule")
def print_schedule():
    """Print SMPLify's default stage schedule as JSON (edit it, then pass --schedule)."""
    from fit3d.fitters.stages import default_smplify_schedule, schedule_to_json

    click.echo(schedule_to_json(default_smplify_schedule()))


@cli.group()
def benchmark():
    """Synthetic benchmarks from held-out mocap: make one, run a fitter on it."""


@benchmark.command("make")
@click.option("--mocap", "poses", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Pose set from 'fit3d prepare-mocap' (default: the bundled CMU set).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .npz.")
@click.option("--count", type=click.IntRange(min=1), default=500, show_default=True, help="People.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="Which trials: the held-out test trials, or the training ones (for tuning).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-vertices", is_flag=True, help="Do not store ground-truth vertices (no PVE; smaller file).")
def benchmark_make(poses, out, count, split, seed, no_vertices):
    """Make a synthetic benchmark (see fit3d.training.synthetic for the camera and 2D error model)."""
    from fit3d.body_models import build_body_model
    from fit3d.data.writers import write_npz
    from fit3d.training.synthetic import make_synthetic_benchmark
    from fit3d.mocap import bundled_pose_set
    from fit3d.training.priors import load_pose_set

    body = build_body_model("anny")
    bench = make_synthetic_benchmark(load_pose_set(poses or bundled_pose_set()), body, n=count, seed=seed,
                                     split=split, with_vertices=not no_vertices)
    write_npz(out, bench)
    click.echo(f"fit3d: {count} synthetic people from the {split} trials -> {out}", err=True)


@benchmark.command("run")
@click.option("--bench", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True)
@click.option("--fitter", type=click.Choice(["smplify", "eft", "regressor"]), default="smplify", show_default=True,
              help="regressor: the pretrained regressor alone (EFT with 0 steps).")
@click.option("--prior", type=click.Choice(["l2", "gmm", "vae", "articulation"]), default=None,
              help="Pose prior (default: the fitter's default).")
@click.option("--pose-space", type=click.Choice(["axis_angle", "latent"]), default="axis_angle", show_default=True)
@click.option("--schedule", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="First N people only.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="metrics .json.")
def benchmark_run(bench, fitter, prior, pose_space, schedule, batch_size, limit, device, out):
    """Fit a benchmark's 2D keypoints and print MPJPE, PA-MPJPE, PVE, 2D error, PCK and fits/s."""
    import json

    import numpy as np

    from fit3d.body_models import build_body_model
    from fit3d.data.writers import write_json
    from fit3d.evaluation.benchmark import run_benchmark

    with np.load(bench, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    body = build_body_model(str(data.get("model", "anny")), device=device)
    if fitter == "smplify":
        f = _build_fitter(fitter, body, prior, schedule, pose_space=pose_space)
    else:
        f = _build_eft(body, steps=0 if fitter == "regressor" else None, prior=prior)
    res = run_benchmark(data, f, body, batch_size=batch_size, limit=limit, progress=True)
    s = dict(res["summary"], fitter=fitter, prior=getattr(getattr(f, "prior", None), "name", None), pose_space=pose_space,
             bench=str(bench))
    click.echo(json.dumps(s, indent=2))
    if out:
        write_json(out, s)


def _build_fitter(name, body, prior=None, schedule=None, prior_path=None, pose_space="axis_angle", hypotheses=2):
    from fit3d.fitters import SMPLify, load_schedule
    from fit3d.priors import build_prior

    if prior is None:  # bundled learned priors exist for anny; SMPL users pass --prior-path
        prior = DEFAULT_PRIOR if body.name == "anny" or prior_path else "l2"
    try:
        pose_prior = build_prior(prior, body, prior_path)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    stages = load_schedule(schedule) if schedule else None
    return SMPLify(body, prior=pose_prior, schedule=stages, keep_hypotheses=hypotheses, pose_space=pose_space)


#: SMPLify's default pose prior (the best on the synthetic held-out benchmark, see README).
DEFAULT_PRIOR = "gmm"


@cli.command("train-prior")
@click.option("--kind", type=click.Choice(["gmm", "vae", "articulation"]), required=True)
@click.option("--poses", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="Pose set from 'fit3d prepare-mocap' (default: the bundled CMU set).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .pt file.")
@click.option("--seed", type=int, default=0, show_default=True)
def train_prior_cmd(kind, poses, out, seed):
    """Train a learned pose prior (seeded; the bundled weights come from this command)."""
    import json

    from fit3d.mocap import bundled_pose_set
    from fit3d.training.priors import train_prior

    torch_seed(seed)
    click.echo(json.dumps(train_prior(kind, poses or bundled_pose_set(), out, seed=seed), indent=2))


@cli.command("prepare-mocap")
@click.option("--mocap", "sources", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="Folder or .tar.xz archive of CMU ASF/AMC and/or BVH trials (repeatable).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .npz.")
@click.option("--fps", type=float, default=10.0, show_default=True, help="Subsampled frame rate.")
@click.option("--dedupe-m", type=float, default=0.03, show_default=True,
              help="Drop frames whose root-centred points moved less than this (metres).")
@click.option("--test-every", type=int, default=5, show_default=True, help="Hold out every n-th trial.")
@click.option("--iterations", type=int, default=300, show_default=True, help="IK steps per chunk.")
@click.option("--device", default="cpu", show_default=True)
def prepare_mocap_cmd(sources, out, fps, dedupe_m, test_every, iterations, device):
    """Retarget CMU mocap to anny's pose space and save the poses, split by trial."""
    import json

    from fit3d.body_models import build_body_model
    from fit3d.mocap.prepare import prepare_mocap

    torch_seed()
    body = build_body_model("anny", device=device)
    stats = prepare_mocap(list(sources), out, body, fps=fps, dedupe_m=dedupe_m, test_every=test_every,
                          iterations=iterations)
    click.echo(json.dumps(stats, indent=2))


def torch_seed(seed: int = 0) -> None:
    """Seed torch and numpy (deterministic training and preparation on CPU)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _report(s: dict, out_dir: Path) -> None:
    r = s["this_run"]
    med = s["reproj_error_px"]["median"]
    click.echo(
        f"fit3d: {r['people_fitted']} people fitted, {r['people_skipped']} skipped in {r['images']} images "
        f"({r['images_already_done']} already done) in {r['seconds']:.1f} s, {r['fits_per_second']:.2f} fits/s; "
        f"all outputs: {s['fitted']} fitted, {s['valid']} valid, median reprojection error "
        f"{'n/a' if med is None else f'{med:.2f} px'} -> {out_dir}",
        err=True,
    )


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="fit3d")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
