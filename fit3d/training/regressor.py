"""Pretraining the keypoint regressor on synthetic people from the training subjects.

The pool of poses is every pose training may read (:func:`fit3d.mocap.splits.training_mask`:
never a test subject), mirrored and widened by limb-wise recombination
(:mod:`fit3d.training.augment`). Each round draws fresh people from it with
:func:`training_people`: random shapes, orientations of every kind, full-frame
cameras whose focal length the network is not told (it gets the image diagonal,
as at run time), truncation (and a share of people framed from the waist or chest
up, :data:`REGRESSOR_CLOSEUP`) and annotator noise at a scale drawn per round
(noise-free to twice the benchmark's). Losses: root-relative 3D keypoints,
rotation matrices, shape, the 2D reprojection of the full-frame prediction
(normalised by the box size) and, with a prototype memory, the cross-entropy of
the prototype pick against the prototype nearest to the true pose (PM-Net).
Seeded; deterministic on CPU for a given thread count.
"""

from __future__ import annotations

import glob
import logging
import time
from pathlib import Path

import numpy as np
import roma
import torch

from fit3d.body_models.weights import model_key
from fit3d.data.batching import PersonBatch
from fit3d.training.checkpoint import digest, resume, save_checkpoint
from fit3d.training.divergence import require_finite
from fit3d.geometry import project
from fit3d.training.synthetic import CameraModel, NoiseModel, OrientationModel, make_people
from fit3d.regressors.keypoint_regressor import KeypointRegressor

log = logging.getLogger(__name__)


#: Rounds of fresh synthetic people (8,192 each, two epochs) in the shipped training: 384
#: rounds (25-38 min on 2 CPU cores). Chosen on the validation subjects with weights
#: trained without them: EFT's PA-MPJPE-12 on subject 01 was 150 / 109 / 106 mm at 12 / 64 /
#: 192 rounds with noise, 142 / 94 / 87 mm noise-free (the regressor was undertrained); from
#: 192 to 384 rounds the regressor alone went 88.1 -> 84.4 mm (mean of subjects 01 and 35
#: with noise) and EFT 74.8 -> 74.5, no subject or noise level more than 1 mm worse.
REGRESSOR_ROUNDS = 384
#: People per training step (:func:`train_regressor`'s ``batch_size``): a round needs at least this many.
REGRESSOR_BATCH_SIZE = 256
#: Synthetic people per training round (:func:`train_regressor`'s ``people_per_round``).
REGRESSOR_PEOPLE = 8192
#: Regressors in the shipped deep ensemble (:func:`train_ensemble`).
REGRESSOR_MEMBERS = 1
#: Noise scales of the training rounds (cycled): noise-free to twice the benchmark's.
TRAIN_NOISE_SCALES = (1.0, 0.0, 2.0, 0.5, 1.5)
#: Orientations beyond the captured ones in training people.
TRAIN_ORIENTATIONS = OrientationModel(p_any=0.1, p_high=0.1)
#: Share of training people framed from the waist or chest up (:class:`CameraModel` ``p_closeup``).
#: Without them the network never saw a person whose hips are out of the picture, and fitted such
#: people lying into depth (a fifth of coco_mini's fitted people have no hip labelled). Chosen on
#: the validation subjects with tuning regressors (192 rounds, train subjects only), EFT PA-MPJPE-12
#: mm on subjects 01 / 35, 0 -> 0.15: close-ups with noise 155.0 / 78.4 -> 147.4 / 66.4 (MPJPE 284.8 /
#: 145.3 -> 229.2 / 87.7, torso direction 28.7 / 12.6 -> 20.7 / 5.7 deg), full framing with noise
#: 113.0 / 35.8 -> 111.4 / 36.7, noise-free 95.5 / 21.1 -> 93.7 / 22.0, 2x noise 122.0 / 47.4 ->
#: 120.9 / 47.9 (docs/experiments.md, "Close-ups").
REGRESSOR_CLOSEUP = 0.15
#: Trunk width of the shipped regressor (:class:`~fit3d.regressors.keypoint_regressor.KeypointRegressor`).
#: EFT fine-tunes every person's copy of it, so its cost grows with the width squared.
REGRESSOR_WIDTH = 192


def training_pool(pose_set: dict, include_val: bool = True, recombined: int | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(body_pose (N, J, 3), global_orient (N, 3))`` that training people are drawn from:
    the training subjects' poses (never ``test``), mirrored, plus ``recombined`` limb-wise
    recombinations (default :data:`fit3d.training.priors.RECOMBINED_POSES`)."""
    from fit3d.mocap.splits import training_mask
    from fit3d.training.augment import augmented_poses
    from fit3d.training.priors import RECOMBINED_POSES

    sel = training_mask(pose_set, include_val)
    n = RECOMBINED_POSES if recombined is None else recombined
    return augmented_poses(pose_set["body_pose"][sel].astype(np.float32),
                           pose_set["global_orient"][sel].astype(np.float32), list(pose_set["joint_names"]), n,
                           seed=seed)


def training_people(pool: tuple[np.ndarray, np.ndarray], body_model, n: int, seed: int, noise_scale: float = 1.0,
                    batch_size: int = 256, closeup: float = 0.0) -> dict:
    """``n`` synthetic training people from a :func:`training_pool` (see module docstring);
    ``closeup``: the share framed from the waist or chest up."""
    from fit3d.training.synthetic import NOISE_FREE

    noise = NoiseModel(scale=noise_scale) if noise_scale > 0 else NOISE_FREE
    return make_people(pool[0], pool[1], body_model, n, seed=seed, camera=CameraModel(p_closeup=closeup),
                       noise=noise, orientations=TRAIN_ORIENTATIONS, batch_size=batch_size)


def to_batch(data: dict, idx, convention) -> tuple[PersonBatch, dict]:
    """Rows ``idx`` of synthetic people (:func:`~fit3d.training.synthetic.make_people`'s arrays) as
    ``(PersonBatch in convention, ground truth)``: the truth's ``global_orient (N, 3)``, ``body_pose
    (N, J, 3)``, ``betas (N, S)``, ``keypoints_3d (N, K, 3)`` metres and ``keypoints_2d_clean (N, K, 3)``
    pixels, as tensors."""
    t = lambda k: torch.as_tensor(data[k][idx])  # noqa: E731
    batch = PersonBatch(t("keypoints_2d"), t("bbox"), t("focal_length"), t("principal_point"), t("image_size"),
                        convention)
    gt = {k: t(k) for k in ("global_orient", "body_pose", "betas", "keypoints_3d", "keypoints_2d_clean")}
    return batch, gt


def regressor_loss(model, body_model, batch: PersonBatch, gt: dict,
                   out: dict | None = None) -> tuple[torch.Tensor, dict]:
    """Training loss of a batch (mean over people) and its parts.

    ``out``: the network's outputs for ``batch`` when already computed (one forward
    of a DDP-wrapped network per step), else ``model.predict(batch)``.
    """
    out = model.predict(batch) if out is None else out
    body = body_model(out["global_orient"], out["body_pose"], out["betas"], out["transl"])
    names = body_model.keypoint_convention.names
    hips = [names.index("left_hip"), names.index("right_hip")]
    kp = body.keypoints_3d
    rel = kp - kp[:, hips].mean(1, keepdim=True)
    gkp = gt["keypoints_3d"]
    grel = gkp - gkp[:, hips].mean(1, keepdim=True)
    l3d = (rel - grel).norm(dim=-1).mean()
    R = roma.rotvec_to_rotmat(torch.cat([out["global_orient"][:, None], out["body_pose"]], 1))
    Rg = roma.rotvec_to_rotmat(torch.cat([gt["global_orient"][:, None], gt["body_pose"]], 1))
    lrot = (R - Rg).pow(2).sum((-1, -2)).mean()
    lshape = (out["betas"] - gt["betas"]).pow(2).mean()
    b = batch.bbox[:, 2:].max(-1).values.clamp(min=1.0)
    proj = project(kp, batch.focal_length, batch.principal_point)
    l2d = ((proj - gt["keypoints_2d_clean"]).norm(dim=-1) / b[:, None]).clamp(max=1.0).mean()
    loss = 5.0 * l3d + lrot + 0.1 * lshape + 2.0 * l2d
    parts = dict(l3d_m=l3d.item(), rot=lrot.item(), shape=lshape.item(), l2d=l2d.item())
    if "prototype_logits" in out:
        target = nearest_prototype(model.prototypes, gt["body_pose"])
        lpick = torch.nn.functional.cross_entropy(out["prototype_logits"], target)
        loss = loss + 0.1 * lpick
        parts["pick"] = lpick.item()
    return loss, parts


def nearest_prototype(prototypes: torch.Tensor, body_pose: torch.Tensor) -> torch.Tensor:
    """``(B,)`` index of the prototype ``(P, J, 3)`` nearest to each ``(B, J, 3)`` pose
    (summed squared chordal distance of the joint rotations)."""
    Rp = roma.rotvec_to_rotmat(prototypes).flatten(1)
    Rb = roma.rotvec_to_rotmat(body_pose).flatten(1)
    return torch.cdist(Rb, Rp).argmin(-1)


def train_regressor(pose_set: dict, body_model, rounds: int = REGRESSOR_ROUNDS,
                    people_per_round: int = REGRESSOR_PEOPLE,
                    epochs_per_round: int = 2, batch_size: int = REGRESSOR_BATCH_SIZE, lr: float = 1e-3, seed: int = 0,
                    progress: bool = True, include_val: bool = True, recombined: int | None = None,
                    prototypes: torch.Tensor | None = None, width: int = REGRESSOR_WIDTH,
                    blocks: int = 2, checkpoint: str | Path | None = None,
                    closeup: float = REGRESSOR_CLOSEUP) -> tuple[KeypointRegressor, dict]:
    """Train a :class:`KeypointRegressor` for ``body_model`` on :func:`training_people`.

    Args:
        pose_set: a ``fit3d prepare-mocap`` pose set (its test subjects are never read).
        include_val: also train on the ``val`` subjects (the shipped weights do; tuning runs don't).
        recombined: limb-wise recombinations in the pool (see :func:`training_pool`).
        prototypes: ``(P, J, 3)`` prototype poses for a PM-Net start head (None: the mean pose).
        closeup: share of training people framed from the waist or chest up (:data:`REGRESSOR_CLOSEUP`).
        checkpoint: a file written (atomically) after every round and resumed
            from when it holds a run of the same settings (body model file, gender and shape
            size, device type, CPU thread count, pose pool, training sizes), so an interrupted
            training ends with the same weights as an uninterrupted one; a checkpoint of other
            settings, or one that cannot be read, is ignored (a warning names what differs) and
            overwritten. The caller
            removes it when done (:func:`fit3d.training.checkpoint.checkpoint_path`); a checkpoint of
            the last round returns the finished model without training.
    Returns:
        ``(model, stats)``: the model on ``body_model.device``.
    Raises:
        ValueError: ``rounds``, ``epochs_per_round`` or ``batch_size`` < 1, or ``people_per_round``
            < ``batch_size`` (a round of no full batch: no training step), naming both; the
            training diverged (weights not finite after a round: that round is not checkpointed).
    """
    check_training_size(rounds, people_per_round, epochs_per_round, batch_size)
    torch.manual_seed(seed)
    np.random.seed(seed)
    conv = body_model.keypoint_convention
    pool = training_pool(pose_set, include_val, recombined, seed)
    device = body_model.device
    model = KeypointRegressor(len(conv), body_model.num_body_joints, body_model.num_betas, width=width, blocks=blocks,
                              prototypes=prototypes).to(device)
    steps_per_round = epochs_per_round * (people_per_round // batch_size)
    total = rounds * steps_per_round
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.05)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    settings = dict(rounds=rounds, people_per_round=people_per_round, epochs_per_round=epochs_per_round,
                    batch_size=batch_size, lr=lr, seed=seed, include_val=include_val, recombined=recombined,
                    width=width, blocks=blocks, model=model_key(body_model), betas=body_model.num_betas,
                    device=torch.device(device).type, pool=digest(*pool),
                    prototypes=None if prototypes is None else digest(prototypes.cpu().numpy()),
                    **({"closeup": closeup} if closeup else {}))  # (checkpoints from before it have none)
    start = resume(checkpoint, settings, model, opt, sched, g, "train_regressor", rounds)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start * steps_per_round, desc="train regressor", unit="step")
    parts = {}
    for r in range(start, rounds):
        data = training_people(pool, body_model, people_per_round, round_seed(seed, r),
                               TRAIN_NOISE_SCALES[r % len(TRAIN_NOISE_SCALES)], closeup=closeup)
        model.train()
        for _ in range(epochs_per_round):
            perm = torch.randperm(people_per_round, generator=g)
            for s in range(0, people_per_round - batch_size + 1, batch_size):
                batch, gt = to_batch(data, perm[s : s + batch_size].numpy(), conv)
                batch, gt = batch.to(device), {k: v.to(device) for k, v in gt.items()}
                loss, parts = regressor_loss(model, body_model, batch, gt)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                sched.step()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(mm=f"{parts['l3d_m'] * 1000:.0f}", rot=f"{parts['rot']:.2f}")
        require_finite(model, f"the regressor's training (seed {seed}, round {r + 1} of {rounds})",
                       "lower lr (the last checkpoint, if any, is kept)")
        if checkpoint is not None:  # after the last round too: a finished member of an ensemble resumes as done
            save_checkpoint(checkpoint, settings, r + 1, model, opt, sched, g)
    if bar is not None:
        bar.close()
    model.eval()
    return model, dict(steps=(rounds - start) * steps_per_round, seconds=round(time.perf_counter() - t0, 1),
                       final=parts, resumed_at_round=start)


def round_seed(seed: int, r: int) -> int:
    """The synthetic people's seed of round ``r`` of the training of ``seed``: ``1000 seed + r`` for the
    first 1,000 rounds (the shipped weights' people), beyond them a seed drawn from ``(seed, r)``,
    so that no round repeats another member's (``seed + 1``'s round ``r - 1000``)."""
    if r < 1000:
        return seed * 1000 + r
    return int(np.random.SeedSequence([seed, r]).generate_state(1, np.uint64)[0] >> 1)


def check_training_size(rounds: int, people_per_round: int, epochs_per_round: int = 2,
                        batch_size: int = REGRESSOR_BATCH_SIZE) -> None:
    """Refuse a :func:`train_regressor` size that makes no training step (the learning-rate
    schedule needs at least one): each round trains on its full batches only.

    Raises:
        ValueError: ``rounds``, ``epochs_per_round`` or ``batch_size`` < 1, or ``people_per_round``
            < ``batch_size``.
    """
    for name, value in (("rounds", rounds), ("epochs_per_round", epochs_per_round), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, not {value}")
    if people_per_round < batch_size:
        raise ValueError(f"people_per_round ({people_per_round}) must be >= batch_size ({batch_size}): "
                         "a round trains on full batches only")


def train_ensemble(pose_set: dict, body_model, members: int = REGRESSOR_MEMBERS, seed: int = 0,
                   checkpoint: str | Path | None = None, **kwargs):
    """Train ``members`` regressors alike (:func:`train_regressor`) from seeds ``seed``, ``seed + 1``, ...:
    each draws its own recombined pose pool, synthetic people and batch order, so they disagree
    where the training poses are thin. Together they are an
    :class:`~fit3d.regressors.ensemble.EnsembleRegressor` (a deep ensemble, Lakshminarayanan et
    al., NeurIPS 2017); member 0 is the regressor :func:`train_regressor` gives for ``seed``.

    Args:
        members: how many (1: the plain regressor). The time is ``members`` times one's.
        checkpoint: as :func:`train_regressor`'s, for member 0; member ``k > 0`` uses
            ``<checkpoint>.member<k>``. Every member's checkpoint stays after its last round, so
            an interrupted ensemble resumes at the member and round it reached; the caller
            removes them when done (:func:`remove_checkpoints`).
        kwargs: the rest of :func:`train_regressor`'s arguments, the same for every member.
    Returns:
        ``(model, stats)``: the :class:`KeypointRegressor` (one member) or the ensemble, and
        ``stats`` (one member's) or ``{"members": [stats, ...]}``.

    Raises:
        ValueError: ``members`` < 1, ``prototypes`` with more than one member, or a training size
            of no step (:func:`check_training_size`).
    """
    if members < 1:
        raise ValueError(f"members must be >= 1, not {members}")
    if members > 1 and kwargs.get("prototypes") is not None:
        raise ValueError("an ensemble's members cannot have a prototype head (each would pick its own start)")
    paths = ensemble_checkpoints(checkpoint, members) if checkpoint is not None else [None] * members
    trained = [train_regressor(pose_set, body_model, seed=seed + k, checkpoint=paths[k], **kwargs)
               for k in range(members)]
    if members == 1:
        return trained[0]
    from fit3d.regressors.ensemble import EnsembleRegressor

    return EnsembleRegressor([m for m, _ in trained]).eval(), {"members": [st for _, st in trained]}


def ensemble_checkpoints(checkpoint: str | Path, members: int) -> list[Path]:
    """The checkpoint file of each member of :func:`train_ensemble` (member 0's is ``checkpoint``)."""
    checkpoint = Path(checkpoint)
    return [checkpoint] + [checkpoint.with_name(f"{checkpoint.name}.member{k}") for k in range(1, members)]


def train_regressor_file(pose_set_path: str | Path, out: str | Path, body_model, command: str,
                         members: int = REGRESSOR_MEMBERS, seed: int = 0, prototypes_path: str | Path | None = None,
                         checkpoint: str | Path | None = None, **train) -> dict:
    """Train the regressor EFT and NeuralAnnot start from (:func:`train_ensemble`, on the pose
    set's training and validation subjects) and save it to ``out`` with the record of what made it
    (:func:`~fit3d.training.provenance.training_record`); what ``fit3d train-regressor`` and
    ``fit3d setup-model`` do.

    Args:
        pose_set_path: a retargeted pose set (``.npz``). out: the ``.pt`` to write.
        body_model: the model it regresses. command: the command named in the record.
        members, seed: :func:`train_ensemble`'s. prototypes_path: a prototype memory file
            (``fit3d train-prior --kind prototypes``) the network starts its pose from (PM-Net).
        checkpoint: resumed from when present (:func:`fit3d.training.checkpoint.checkpoint_path`); kept
            (the caller removes it).
        train: :func:`train_regressor`'s settings (``rounds``, ``people_per_round``, ``width``,
            ``recombined``, ``progress``...).
    Returns:
        :func:`train_ensemble`'s statistics.
    Raises:
        FileNotFoundError: no pose set or prototype file. ValueError: see :func:`train_regressor`; a
            pose set of another model than ``body_model``, a prototype file that is no prototype memory,
            another training into ``out`` running (:func:`fit3d.training.lock.training_lock`).
    """
    from fit3d.body_models.weights import file_digest
    from fit3d.mocap.pose_set import load_pose_set
    from fit3d.priors.io import load_prior
    from fit3d.priors.prototypes import PoseMemory
    from fit3d.regressors.io import save_regressor
    from fit3d.training.lock import training_lock
    from fit3d.training.priors import pose_set_body
    from fit3d.training.provenance import training_record

    with training_lock(out):
        prototypes = None
        if prototypes_path is not None:
            memory = load_prior(prototypes_path)
            if not isinstance(memory, PoseMemory):
                raise ValueError(f"{prototypes_path} is a {type(memory).__name__}, not a prototype memory ('fit3d "
                                 "train-prior --kind prototypes' makes one)")
            prototypes = memory.prototypes
        pose_set = load_pose_set(pose_set_path)
        pose_set_body(pose_set, pose_set_path, body_model)
        model, stats = train_ensemble(pose_set, body_model, members, seed=seed, checkpoint=checkpoint,
                                      prototypes=prototypes, **train)
        settings = dict(rounds=train.get("rounds", REGRESSOR_ROUNDS),
                        people=train.get("people_per_round", REGRESSOR_PEOPLE), seed=seed, members=members,
                        width=train.get("width", REGRESSOR_WIDTH))
        if train.get("recombined") is not None:
            settings["recombined"] = train["recombined"]
        if prototypes_path is not None:
            settings["prototypes_sha256"] = file_digest(prototypes_path)
        save_regressor(model.cpu(), out, training_record(command, pose_set_path, **settings))
        return stats


def remove_checkpoints(checkpoint: str | Path) -> None:
    """Remove ``checkpoint`` and every member's (:func:`ensemble_checkpoints`), also those of an
    earlier, larger ensemble trained into the same file and interrupted."""
    checkpoint = Path(checkpoint)
    checkpoint.unlink(missing_ok=True)
    for path in checkpoint.parent.glob(f"{glob.escape(checkpoint.name)}.member*"):
        path.unlink(missing_ok=True)
