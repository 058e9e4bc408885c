"""The batch job: image records -> batches -> fitter -> one ``.npz`` per image -> ``summary.json``.

Resumable (images whose ``.npz`` exists are skipped unless ``overwrite``),
shardable (``shard = (i, n)`` takes every n-th image of the sorted list, so n
jobs, on n GPUs or SLURM array tasks, split the work without talking to each
other), and tolerant of bad input (people with too few usable keypoints and
batches that fail are recorded as skipped with their reason; the run goes on).
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fit3d.data.batching import make_batch, person_camera, sanitize_keypoints
from fit3d.data.conventions import convert, index_map
from fit3d.data.readers import ImageRecord, InputProblem, Person
from fit3d.data.writers import output_path, read_fit, write_json, write_npz
from fit3d.fitters.camera_init import METHODS
from fit3d.fitters.result import FitResult

log = logging.getLogger(__name__)

#: Integer fitter extras written as their names.
EXTRA_LABELS = {"init_method": METHODS}

#: People with fewer usable keypoints (finite, confidence > 0, known to the
#: body model) than this are not fitted: below 6 points a full-body fit is
#: under-determined (6 points x 2 coordinates vs. camera + orientation alone).
MIN_VISIBLE_KEYPOINTS = 6


@dataclass
class RunConfig:
    """Options of a batch run.

    Attributes:
        out_dir: output folder.
        batch_size: people per fitter call.
        focal_length: pixels for every image (default: each image's diagonal).
        overwrite: refit images whose ``.npz`` exists.
        shard: ``(i, n)``, zero-based: this job takes images ``i, i+n, i+2n...``.
        limit: at most this many images (after sharding).
        min_visible: see :data:`MIN_VISIBLE_KEYPOINTS`.
        progress: show a progress bar.
        fitter_name: recorded in the output (``"smplify"``).
    """

    out_dir: Path
    batch_size: int = 64
    focal_length: float | None = None
    overwrite: bool = False
    shard: tuple[int, int] = (0, 1)
    limit: int | None = None
    min_visible: int = MIN_VISIBLE_KEYPOINTS
    progress: bool = True
    fitter_name: str = "smplify"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` with 1 <= i <= n (one-based, as users count) -> zero-based ``(i-1, n)``.

    Raises:
        ValueError: malformed text or out-of-range index.
    """
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 2/8), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard {text}: need 1 <= i <= n")
    return i - 1, n


def select_images(images: list[ImageRecord], config: RunConfig) -> tuple[list[ImageRecord], int]:
    """The images this job fits: sharded, limited, without those already done.

    Returns:
        ``(todo, n_already_done)``.
    """
    images = sorted(images, key=lambda r: r.image_key)
    i, n = config.shard
    mine = images[i::n]
    if config.limit is not None:
        mine = mine[: config.limit]
    if config.overwrite:
        return mine, 0
    todo = [r for r in mine if not output_path(config.out_dir, r.image_key).is_file()]
    return todo, len(mine) - len(todo)


def usable_keypoints(person: Person, model_convention) -> tuple[int, int]:
    """``(usable, non_finite)``: keypoints that are finite, labelled and known to the model."""
    clean, n_bad = sanitize_keypoints(person.keypoints_2d)
    mapped = convert(clean, person.convention, model_convention)
    return int((mapped[:, 2] > 0).sum()), n_bad


def _person_arrays(
    person: Person, result: FitResult | None, i: int, body_model, focal, pp, reason: str, extra_defaults: dict
) -> dict:
    """One person's output arrays (NaN parameters, ``extra_defaults`` extras when not fitted)."""
    conv = person.convention
    K = len(conv)
    nan = lambda *s: np.full(s, np.nan, dtype=np.float32)  # noqa: E731
    rec = dict(
        annot_id=np.int64(person.annot_id),
        bbox=np.asarray(person.bbox, dtype=np.float32),
        keypoints_2d=np.asarray(person.keypoints_2d, dtype=np.float32),
        focal_length=np.asarray(focal, dtype=np.float32),
        principal_point=np.asarray(pp, dtype=np.float32),
    )
    if result is None:
        rec.update(
            global_orient=nan(3),
            body_pose=nan(body_model.num_body_joints, 3),
            betas=nan(body_model.num_betas),
            transl=nan(3),
            joints_3d=nan(len(body_model.joint_names), 3),
            keypoints_3d=nan(K, 3),
            keypoints_2d_fit=nan(K, 2),
            reproj_error_px=np.float32(np.nan),
            valid=np.bool_(False),
            loss=np.float32(np.nan),
            iterations=np.int64(0),
            status="skipped",
            skip_reason=reason,
        )
        rec.update(extra_defaults)
        return rec
    r = result.numpy(i)
    src, dst = index_map(result.convention, conv)
    kp3 = nan(K, 3)
    kp3[dst] = r["keypoints_3d"][src]
    kp2 = nan(K, 2)
    kp2[dst] = r["keypoints_2d_fit"][src]
    rec.update(
        global_orient=r["global_orient"],
        body_pose=r["body_pose"],
        betas=r["betas"],
        transl=r["transl"],
        joints_3d=r["joints_3d"],
        keypoints_3d=kp3,
        keypoints_2d_fit=kp2,
        reproj_error_px=np.float32(r["reproj_error_px"]),
        valid=np.bool_(r["valid"]),
        loss=np.float32(r["loss"]),
        iterations=np.int64(r["iterations"]),
        status="fitted",
        skip_reason="",
    )
    for k in result.extras:
        labels = EXTRA_LABELS.get(k)
        rec[k] = np.str_(labels[int(r[k])]) if labels else r[k]
    return rec


def _image_arrays(image: ImageRecord, people: list[dict], body_model, fitter_name: str) -> dict[str, np.ndarray]:
    conv = image.people[0].convention if image.people else None
    out: dict[str, np.ndarray] = dict(
        image=np.str_(image.image_key),
        image_size=np.asarray(image.image_size, dtype=np.int64),
        fitter=np.str_(fitter_name),
        model=np.str_(body_model.name),
        keypoint_names=np.asarray(conv.names if conv else [], dtype=str),
        joint_names=np.asarray(body_model.joint_names, dtype=str),
    )
    for k in sorted({k for p in people for k in p}):
        out[k] = np.stack([np.asarray(p[k]) for p in people])
    return out


def run(
    images: list[ImageRecord],
    fitter,
    body_model,
    config: RunConfig,
    problems: list[InputProblem] | None = None,
) -> dict:
    """Fit every person of ``images`` and write the outputs.

    Args:
        images: records from :mod:`fit3d.data.readers`.
        fitter: ``fitter(PersonBatch) -> FitResult``.
        body_model: the fitter's body model (its convention, names and shapes).
        config: see :class:`RunConfig`.
        problems: input problems found by the reader, copied into the summary.
    Returns:
        The summary dict, also written to ``summary.json`` (``summary.shard-i-of-n.json`` when sharded).
    """
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo, already = select_images(images, config)
    conv = body_model.keypoint_convention
    device = body_model.device
    n_people = sum(len(r.people) for r in todo)
    bar = None
    if config.progress:
        from tqdm import tqdm

        bar = tqdm(total=n_people, unit="person", desc=f"fit3d {config.fitter_name}", dynamic_ncols=True)
    t0 = time.perf_counter()
    fitted = 0
    skipped_now: list[dict] = []

    chunk: list[ImageRecord] = []
    chunk_people = 0
    extra_defaults = dict(getattr(fitter, "extra_defaults", {}))

    def flush(chunk: list[ImageRecord]) -> None:
        nonlocal fitted
        entries = []  # (image index, person, reason or None)
        for ii, img in enumerate(chunk):
            for p in img.people:
                usable, n_bad = usable_keypoints(p, conv)
                reason = None
                if usable < config.min_visible:
                    reason = f"too few usable keypoints: {usable} < {config.min_visible}"
                    if n_bad:
                        reason += f" ({n_bad} non-finite keypoints ignored)"
                entries.append((ii, p, reason))
        to_fit = [e for e in entries if e[2] is None]
        results: dict[int, tuple[FitResult | None, int, str]] = {}
        for s in range(0, len(to_fit), config.batch_size):
            part = to_fit[s : s + config.batch_size]
            people = [e[1] for e in part]
            try:
                batch = make_batch(people, conv, focal_length=config.focal_length, device=device)
                res = fitter(batch).cpu()
                for j, e in enumerate(part):
                    results[id(e[1])] = (res, j, "")
                fitted += len(part)
            except Exception as exc:  # a failed batch must not lose the run
                log.exception("fitting a batch of %d people failed", len(part))
                for e in part:
                    results[id(e[1])] = (None, 0, f"fit failed: {type(exc).__name__}: {exc}")
            if bar is not None:
                bar.update(len(part))
                el = time.perf_counter() - t0
                bar.set_postfix(fits_per_s=f"{fitted / max(el, 1e-9):.2f}")
        per_image: dict[int, list[dict]] = {i: [] for i in range(len(chunk))}
        for ii, p, reason in entries:
            img = chunk[ii]
            focal, pp = person_camera(p, config.focal_length)
            if reason is None:
                res, j, reason = results[id(p)]
            else:
                res, j = None, 0
                if bar is not None:
                    bar.update(1)
            if res is None:
                skipped_now.append(dict(image=img.image_key, annot_id=p.annot_id, reason=reason))
            per_image[ii].append(_person_arrays(p, res, j, body_model, focal, pp, reason, extra_defaults))
        for ii, img in enumerate(chunk):
            write_npz(output_path(out_dir, img.image_key), _image_arrays(img, per_image[ii], body_model, config.fitter_name))

    for img in todo:
        chunk.append(img)
        chunk_people += len(img.people)
        if chunk_people >= config.batch_size:
            flush(chunk)
            chunk, chunk_people = [], 0
    if chunk:
        flush(chunk)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0

    summary = summarize(out_dir)
    i, n = config.shard
    summary.update(
        fitter=config.fitter_name,
        model=body_model.name,
        device=str(device),
        shard=f"{i + 1}/{n}",
        this_run=dict(
            images=len(todo),
            image_keys=[r.image_key for r in todo],
            images_already_done=already,
            people_fitted=fitted,
            people_skipped=len(skipped_now),
            seconds=round(elapsed, 3),
            fits_per_second=round(fitted / elapsed, 3) if elapsed > 0 and fitted else 0.0,
            skipped=skipped_now,
        ),
        input_problems=[dict(source=p.source, reason=p.reason) for p in (problems or [])],
        versions=versions(),
        batch_size=config.batch_size,
    )
    schedule = getattr(fitter, "schedule", None)
    if schedule is not None:
        from dataclasses import asdict

        summary["schedule"] = [asdict(s) for s in schedule]
    name = "summary.json" if n == 1 else f"summary.shard-{i + 1}-of-{n}.json"
    write_json(out_dir / name, summary)
    return summary


def neuralannot_target(images: list[ImageRecord], body_model, min_visible: int = MIN_VISIBLE_KEYPOINTS):
    """NeuralAnnot's target set: every person of ``images`` with at least ``min_visible``
    usable keypoints, as one :class:`~fit3d.data.batching.PersonBatch` on the model's device.

    Raises:
        ValueError: no such person.
    """
    from fit3d.fitters.neuralannot import stack_batches

    conv = body_model.keypoint_convention
    people = [p for r in images for p in r.people if usable_keypoints(p, conv)[0] >= min_visible]
    if not people:
        raise ValueError("no person with enough keypoints to train on")
    return stack_batches([make_batch(people[s : s + 256], conv, device=body_model.device)
                          for s in range(0, len(people), 256)])


def run_neuralannot(sets: list[tuple[Path, list[ImageRecord], list[InputProblem]]], annotator, target, body_model,
                    out_dir: str | Path, batch_size: int = 64, progress: bool = True, on_trained=None,
                    on_run=None) -> float:
    """Train a :class:`~fit3d.fitters.NeuralAnnot` on ``target`` (resuming from its
    checkpoint), then annotate every set ``(images_dir, records, problems)`` with
    :func:`run`, into ``out_dir`` (``out_dir/<images_dir name>`` when there are several).

    ``on_trained(history)`` is called after training with the per-epoch log,
    ``on_run(summary, out)`` after each set. Returns the training seconds.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    history = annotator.fit_dataset(target, progress=progress)
    train_s = time.perf_counter() - t0
    if on_trained is not None:
        on_trained(history)
    for d, records, problems in sets:
        sub = out_dir / Path(d).name if len(sets) > 1 else out_dir
        s = run(records, annotator, body_model, RunConfig(sub, batch_size=batch_size, progress=progress,
                                                          fitter_name="neuralannot"), problems)
        if on_run is not None:
            on_run(s, sub)
    return train_s


def summarize(out_dir: str | Path) -> dict:
    """Counts and reprojection statistics over every ``.npz`` in ``out_dir``."""
    errors, people, fitted, valid, unreadable = [], 0, 0, 0, []
    files = sorted(Path(out_dir).glob("*.npz"))
    for f in files:
        try:
            d = read_fit(f)
        except Exception as e:  # a corrupt file is reported, not fatal
            unreadable.append(dict(file=str(f), reason=str(e)))
            continue
        status = d.get("status", np.zeros(0, dtype=str))
        people += len(status)
        ok = status == "fitted"
        fitted += int(ok.sum())
        valid += int(d["valid"].sum()) if "valid" in d else 0
        errors.extend(d["reproj_error_px"][ok].tolist())
    err = np.asarray(errors, dtype=np.float64)
    err = err[np.isfinite(err)]
    return dict(
        images=len(files) - len(unreadable),
        people=people,
        fitted=fitted,
        skipped=people - fitted,
        valid=valid,
        invalid=fitted - valid,
        reproj_error_px=dict(
            median=float(np.median(err)) if len(err) else None,
            mean=float(err.mean()) if len(err) else None,
            p90=float(np.percentile(err, 90)) if len(err) else None,
        ),
        unreadable_outputs=unreadable,
    )


def versions() -> dict[str, str]:
    """Versions of Python, fit3d and the main dependencies."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("fit3d", "anny", "smplx", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
