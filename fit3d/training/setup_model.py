"""``fit3d setup-model``: everything fit3d learns for a body model, made for a SMPL-family
model from the user's licensed file and the bundled CMU mocap.

1. Retarget: the bundled pose set (CMU mocap retargeted to anny, split by subject) is
   posed on anny, and its skeleton points are retargeted to the model by the same
   direction-matching inverse kinematics as ``prepare-mocap``
   (:func:`fit3d.mocap.retarget.retarget`), the spine and head relative to the two models'
   rest poses (anny at rest becomes the model at rest: their spine3, head and ear points lie
   apart); subjects, trials and splits are kept, so the test subjects stay out of training.
2. Train the GMM, VAE and articulation priors and the prototype memory
   (:func:`fit3d.training.priors.train_prior`) and the EFT regressor
   (:func:`fit3d.training.regressor.train_ensemble`, as many members as anny's) on the training subjects.
3. Save them where :mod:`fit3d.body_models.weights` finds them, with ``setup.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fit3d.body_models import weights
from fit3d.training.regressor import REGRESSOR_MEMBERS, REGRESSOR_ROUNDS

@dataclass
class SetupConfig:
    """How much to train (defaults: as the bundled anny weights).

    Attributes:
        max_poses: retarget at most this many poses (evenly spaced; None: all).
        retarget_iterations: inverse-kinematics steps per chunk.
        regressor_rounds, regressor_people: regressor training size.
        regressor_members: regressors in its deep ensemble (:func:`fit3d.training.regressor.train_ensemble`).
        recombined: limb-recombined poses added for the priors (None: the default).
        vae_epochs, articulation_steps: prior training lengths.
        seed: random seed.
    """

    max_poses: int | None = None
    retarget_iterations: int = 300
    regressor_rounds: int = REGRESSOR_ROUNDS
    regressor_people: int = 8192
    regressor_members: int = REGRESSOR_MEMBERS
    recombined: int | None = None
    vae_epochs: int = 60
    articulation_steps: int = 4000
    seed: int = 0

    @classmethod
    def quick(cls) -> "SetupConfig":
        """A smoke-test set-up (about a minute on a 2-core CPU, plus anny's ~2-minute build on a
        first run; longer on a loaded machine): few poses and short training, to check an
        installation and a model file, not to fit with."""
        return cls(max_poses=256, retarget_iterations=30, regressor_rounds=1, regressor_people=512,
                   regressor_members=1, recombined=0, vae_epochs=2, articulation_steps=50)


#: Files an interrupted set-up leaves in its folder: the finished steps' statistics and the
#: regressor's last finished round. A rerun with the same model file and settings resumes
#: from them; a finished set-up removes them (running it again then trains everything anew).
PARTIAL = weights.PARTIAL
REGRESSOR_CHECKPOINT = "regressor.partial.pt"
#: Held while a set-up runs: a second ``setup-model`` of the same model file stops at once.
LOCK = "setup.lock"


def retarget_pose_set(body, source: dict, config: SetupConfig, progress: bool = True) -> dict[str, np.ndarray]:
    """The bundled anny pose set retargeted to ``body`` (see the module docstring).

    The directions of :data:`fit3d.mocap.retarget.REST_RELATIVE_PAIRS` (pelvis -> spine3 ->
    mid-shoulders -> head -> mid-ears) are matched relative to anny's and the model's rest poses
    (:func:`fit3d.mocap.retarget.rest_offsets`), as ``prepare-mocap`` matches the mocap's to
    anny's: both models' points are joints of the same name, but not at the same places (the SMPL
    stand-in of the tests leans 11 degrees further forward from spine3 to the shoulders and 26
    degrees less from the head joint to the ears), and matched as they are, anny standing at rest
    became a model with its spine3 and neck bent 10 degrees and its head 23.
    """
    import roma

    from fit3d.body_models import build_body_model
    from fit3d.mocap.retarget import model_points, retarget

    anny = build_body_model("anny", device=body.device)
    with torch.no_grad():
        rest = model_points(anny, anny.canonical(torch.zeros(1, anny.num_body_joints, 3, device=body.device),
                                                 torch.zeros(1, anny.num_betas, device=body.device)))[:, :-1]
    n = len(source["body_pose"])
    keep = np.arange(n) if config.max_poses is None or config.max_poses >= n else \
        np.linspace(0, n - 1, config.max_poses).round().astype(np.int64)
    points = []
    with torch.no_grad():
        for s in range(0, len(keep), 2048):
            idx = keep[s : s + 2048]
            bp = torch.as_tensor(source["body_pose"][idx], device=body.device)
            out = anny.canonical(bp, torch.zeros(len(idx), anny.num_betas, device=body.device))
            R = roma.rotvec_to_rotmat(torch.as_tensor(source["global_orient"][idx], device=body.device))
            points.append((model_points(anny, out) @ R.transpose(-1, -2))[:, :-1])  # without shoulder_mid
    points = torch.cat(points)
    r = retarget(points, body, iterations=config.retarget_iterations, progress=progress,
                 rest=rest.expand(len(points), -1, -1))
    out = {k: v[keep] if getattr(v, "ndim", 0) and len(v) == n else v for k, v in source.items()}
    out.update(body_pose=r["body_pose"].cpu().numpy().astype(np.float32),
               global_orient=r["global_orient"].cpu().numpy().astype(np.float32),
               residual_mm=r["residual_mm"].cpu().numpy().astype(np.float32),
               direction_error_deg=r["direction_error_deg"].cpu().numpy().astype(np.float32),
               joint_names=np.asarray(body.joint_names), model=np.str_(body.name))
    return out


def setup_model(body, config: SetupConfig | None = None, out_dir: str | Path | None = None,
                progress: bool = True, log=print) -> dict:
    """Make and save every learned piece fit3d needs for ``body`` (see the module docstring).

    One at a time per model file (a second process stops with an error instead of training
    the same weights again). Resumable: an interrupted set-up run again with the same model
    file and settings skips the steps it finished (:data:`PARTIAL`) and resumes the
    regressor's training at its last finished round, ending with the weights an
    uninterrupted run makes (on the same device type and thread count).

    Args:
        body: a SMPL-family :class:`~fit3d.body_models.smplx_model.SMPLXModel`.
        out_dir: where to write (default :func:`fit3d.body_models.weights.setup_dir`).
        log: called with one line per step.
    Returns:
        ``setup.json``'s content: the config, per-step seconds and statistics (after a resume,
        the regressor's seconds and the ``regressor`` statistics count from the resume on).
    Raises:
        ValueError: ``body`` is anny (its weights are bundled); another process is setting up
            the same model file now (it holds :data:`LOCK`).
    """
    from filelock import FileLock, Timeout

    if body.name == "anny":
        raise ValueError("anny's priors and regressor are bundled with fit3d: setup-model is for SMPL, SMPL-H, SMPL-X")
    config = config or SetupConfig()
    out_dir = Path(out_dir) if out_dir else weights.setup_dir(body)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out_dir / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ValueError(f"another 'fit3d setup-model' is setting up {body.name} in {out_dir} now ({out_dir / LOCK} "
                         "is held): wait for it; if it is stopped, run this again to resume it") from None
    try:
        return _setup(body, config, out_dir, progress, log)
    finally:
        lock.release()


def _setup(body, config: SetupConfig, out_dir: Path, progress: bool, log) -> dict:
    """:func:`setup_model`'s work, under its lock."""
    from fit3d.data.writers import write_json, write_npz
    from fit3d.mocap import bundled_pose_set
    from fit3d.mocap.pose_set import load_pose_set
    from fit3d.training.priors import train_prior
    from fit3d.training.regressor import remove_checkpoints, train_regressor_file

    path = (lambda kind: out_dir / weights.weights_file_name(kind))  # noqa: E731 (no warning about the old set-up)
    partial = out_dir / PARTIAL
    stats: dict = dict(model=body.name, model_file=str(body.model_file), model_key=weights.model_key(body),
                       device=torch.device(body.device).type, config=asdict(config),
                       retargeting=weights.SETUP_RETARGETING, seconds={})
    full = config == SetupConfig(seed=config.seed)
    stats["full"] = full  # False: fitting with these weights warns (fit3d.body_models.weights)
    if not full:  # (what the warning names: the settings a full set-up has otherwise)
        stats["reduced"] = {k: v for k, v in asdict(config).items() if v != getattr(SetupConfig(seed=config.seed), k)}
    done = _resumable(partial, stats)
    if done:
        stats = done
        log(f"fit3d: resuming the set-up in {out_dir}: {', '.join(stats['seconds'])} done")
    else:
        log(f"fit3d: setting up {body.name} in {out_dir}; "
            + (f"expected ~{weights.expected_setup_minutes():.0f} min on a 2-core CPU alone, longer beside other jobs (less with "
               "--device cuda)" if full
               else "reduced settings: expect less time and less accurate priors"))
    is_done = (lambda step, kind: step in stats["seconds"] and path(kind).is_file())  # noqa: E731
    if not is_done("retarget", "pose_set"):
        stats["seconds"].clear()  # (every later step learns from the pose set)
        t = time.perf_counter()
        ps = retarget_pose_set(body, load_pose_set(bundled_pose_set()), config, progress)
        write_npz(path("pose_set"), ps)
        stats["seconds"]["retarget"] = round(time.perf_counter() - t, 1)
        stats["retarget_residual_mm_median"] = float(np.median(ps["residual_mm"]))
        write_json(partial, stats)
        log(f"fit3d: retargeted {len(ps['body_pose'])} poses (median residual "
            f"{stats['retarget_residual_mm_median']:.1f} mm) in {stats['seconds']['retarget']:.0f} s")
    for kind in ("gmm", "vae", "articulation", "prototypes"):
        if is_done(kind, kind):
            continue
        kw = {} if config.recombined is None else dict(recombined=config.recombined)
        kw.update({"vae": dict(epochs=config.vae_epochs), "articulation": dict(steps=config.articulation_steps)}.get(
            kind, {}))
        r = train_prior(kind, path("pose_set"), path(kind), seed=config.seed, progress=progress, body_model=body,
                        command="fit3d setup-model", **kw)
        stats["seconds"][kind] = r["seconds"]
        write_json(partial, stats)
        log(f"fit3d: {kind} trained on {r['poses']} poses (with their mirror images and recombined limbs) in "
            f"{r['seconds']:.0f} s")
    t = time.perf_counter()
    checkpoint = out_dir / REGRESSOR_CHECKPOINT
    rs = train_regressor_file(path("pose_set"), path("regressor"), body, "fit3d setup-model",
                              members=config.regressor_members, seed=config.seed, checkpoint=checkpoint,
                              rounds=config.regressor_rounds, people_per_round=config.regressor_people,
                              progress=progress, recombined=config.recombined)
    stats["seconds"]["regressor"] = round(time.perf_counter() - t, 1)
    stats["regressor"] = rs
    resumed = [m["resumed_at_round"] for m in rs.get("members", [rs])]
    log(f"fit3d: regressor trained in {stats['seconds']['regressor']:.0f} s"
        + (f" (resumed at round {', '.join(map(str, resumed))}"
           + (" of its members)" if len(resumed) > 1 else ")") if any(resumed) else ""))
    write_json(out_dir / "setup.json", stats)
    partial.unlink(missing_ok=True)
    remove_checkpoints(checkpoint)
    return stats


def _resumable(partial: Path, stats: dict) -> dict | None:
    """The statistics of an interrupted set-up in ``partial`` when it had the same model
    file (type, gender, content), device type, configuration and retargeting
    (:data:`fit3d.body_models.weights.SETUP_RETARGETING`) as ``stats`` (its finished steps are then
    skipped), else None."""
    import json

    if not partial.is_file():
        return None
    try:
        before = json.loads(partial.read_text())
    except ValueError:
        return None
    keys = ("model", "model_key", "device", "config", "full", "retargeting")
    return before if all(before.get(k) == stats[k] for k in keys) and isinstance(before.get("seconds"), dict) else None
