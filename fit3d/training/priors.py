"""Training the learned priors on a retargeted pose set (``fit3d prepare-mocap`` output).

Seeded and deterministic on CPU for a given thread count. Training reads only the
``train`` and ``val`` subjects of a pose set (:func:`training_poses`), doubled by
left-right mirroring and widened by limb-wise recombination
(:mod:`fit3d.training.augment`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from fit3d.mocap.pose_set import load_pose_set
from fit3d.names import PRIOR_KINDS
from fit3d.priors.articulation import ArticulationPrior
from fit3d.priors.gmm import GMMPrior
from fit3d.priors.io import save_prior
from fit3d.training.checkpoint import digest, resume, save_checkpoint
from fit3d.training.divergence import require_finite
from fit3d.priors.vae import VAEPrior

log = logging.getLogger(__name__)


def training_poses(pose_set: dict, include_val: bool = True, mirrored: bool = True, recombined: int = 0,
                   seed: int = 0) -> np.ndarray:
    """``(N, J, 3)`` float32 poses that training may read: the ``train`` split (and ``val``
    unless ``include_val`` is False; never ``test``, see :func:`fit3d.mocap.splits.training_mask`),
    their mirror images when ``mirrored``, and ``recombined`` limb-wise recombinations
    (:func:`fit3d.training.augment.recombine`).

    Raises:
        KeyError: the pose set has no subject split (:func:`load_pose_set` refuses such a file).
    """
    from fit3d.mocap.splits import training_mask
    from fit3d.training.augment import augmented_poses, mirror

    sel = training_mask(pose_set, include_val)
    x = pose_set["body_pose"][sel].astype(np.float32)
    names = list(pose_set["joint_names"])
    if not mirrored:
        return x
    if recombined <= 0:
        return np.concatenate([x, mirror(x, names)])
    go = pose_set["global_orient"][sel].astype(np.float32)
    return augmented_poses(x, go, names, recombined, seed=seed)[0]


def _seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def train_gmm(poses: np.ndarray, n_components: int = 8, seed: int = 0) -> GMMPrior:
    """SMPLify's 8-component full-covariance GMM (scikit-learn EM) on ``(N, J, 3)`` axis-angle poses.

    Raises:
        ValueError: fewer poses than components (``N < n_components``).
    """
    if len(poses) < n_components:
        raise ValueError(f"{len(poses)} poses cannot train a GMM of {n_components} components: it needs at least "
                         f"{n_components} poses (after mirroring and recombination)")
    return GMMPrior.fit(poses, n_components=n_components, seed=seed)


#: What to do when a checkpointed prior training diverges (a rerun of the same settings resumes
#: from the last checkpoint and diverges again).
DIVERGED_HINT = ("lower lr or train with another seed (--seed): the same settings resume from the last checkpoint, "
                 "kept in OUT.partial, and diverge again")


def train_vae(poses: np.ndarray, epochs: int = 60, batch_size: int = 256, lr: float = 1e-3,
              kl_weight: float = 5e-3, seed: int = 0, progress: bool = True,
              checkpoint: str | Path | None = None, device: str | torch.device = "cpu") -> VAEPrior:
    """VPoser-style training: squared error on rotation matrices plus ``kl_weight`` KL to N(0, I).

    ``poses``: ``(N, J, 3)`` axis-angle. Batches of ``batch_size`` poses, or of all of them when
    there are fewer (before, such a set trained nothing: every epoch had no full batch).
    ``checkpoint``: a file written (atomically) after every epoch and resumed from by a run of the
    same poses and settings (:mod:`fit3d.training.checkpoint`: the same weights as an
    uninterrupted run); the caller removes it. ``device``: where it trains (the batches and the
    noise are drawn on the CPU either way; the dropout's masks on the device, whose generator a GPU
    checkpoint keeps); the prior is returned on the CPU.

    Raises:
        ValueError: no poses; the training diverged (weights not finite).
    """
    import roma

    g = _seed(seed)
    x = torch.as_tensor(poses).to(device)
    if len(x) == 0:
        raise ValueError("train_vae: no poses to train on")
    batch_size = min(batch_size, len(x))
    m = VAEPrior(num_joints=x.shape[1]).to(device)
    opt = torch.optim.Adam(m.parameters(), lr=lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    settings = dict(kind="vae", epochs=epochs, batch_size=batch_size, lr=lr, kl_weight=kl_weight, seed=seed,
                    poses=digest(np.asarray(poses, dtype=np.float32)))
    start = resume(checkpoint, settings, m, opt, sched, g, "train_vae", epochs)
    R = roma.rotvec_to_rotmat(x)
    it = range(start, epochs)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="train vae", unit="epoch", initial=start, total=epochs)
    for epoch in it:
        m.train()
        perm = torch.randperm(len(x), generator=g).to(device)
        for s in range(0, len(x) - batch_size + 1, batch_size):
            idx = perm[s : s + batch_size]
            mu, sigma = m.encode(x[idx])
            z = mu + sigma * torch.randn(mu.shape, generator=g).to(device)
            rec = m.decode_rotmat(z)
            loss_rec = (rec - R[idx]).pow(2).sum((-1, -2, -3)).mean()
            kl = (0.5 * (mu.pow(2) + sigma.pow(2)) - torch.log(sigma.clamp(min=1e-6)) - 0.5).sum(-1).mean()
            loss = loss_rec + kl_weight * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if progress:
            it.set_postfix(rec=f"{loss_rec.item():.4f}", kl=f"{kl.item():.2f}")
        if checkpoint is not None:
            require_finite(m, "the VAE prior's training", DIVERGED_HINT)
            save_checkpoint(checkpoint, settings, epoch + 1, m, opt, sched, g)
    require_finite(m, "the VAE prior's training")
    return m.eval().cpu()


#: Steps of the articulation prior's training between two checkpoints (~25 s on 2 CPU cores).
ARTICULATION_CHECKPOINT_STEPS = 200


def train_articulation(poses: np.ndarray, steps: int = 4000, batch_size: int = 512, lr: float = 2e-3,
                       seed: int = 0, progress: bool = True, checkpoint: str | Path | None = None,
                       device: str | torch.device = "cpu") -> ArticulationPrior:
    """Maximum likelihood of every joint's rotation under its flow; small Gaussian noise (0.02 rad)
    on the inputs smooths the density between the training poses. ``checkpoint``: as
    :func:`train_vae`'s, written every :data:`ARTICULATION_CHECKPOINT_STEPS` steps; ``device`` as
    its too (the prior is returned on the CPU).

    Raises:
        ValueError: the training diverged (weights not finite).
    """
    g = _seed(seed)
    x = torch.as_tensor(poses)
    m = ArticulationPrior(num_joints=x.shape[1], mean=x.mean(0), std=x.std(0).clamp(min=0.02)).to(device)
    x = x.to(device)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    settings = dict(kind="articulation", steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                    poses=digest(np.asarray(poses, dtype=np.float32)))
    start = resume(checkpoint, settings, m, opt, sched, g, "train_articulation", steps)
    it = range(start, steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="train articulation", unit="step", initial=start, total=steps)
    for step in it:
        idx = torch.randint(0, len(x), (batch_size,), generator=g).to(device)
        xb = x[idx]
        xb = xb + 0.02 * torch.randn(xb.shape, generator=g).to(device)
        loss = m(xb).mean() / x.shape[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress and step % 100 == 0:
            it.set_postfix(nll_per_joint=f"{loss.item():.3f}")
        if checkpoint is not None and ((step + 1) % ARTICULATION_CHECKPOINT_STEPS == 0 or step + 1 == steps):
            require_finite(m, "the articulation prior's training", DIVERGED_HINT)
            save_checkpoint(checkpoint, settings, step + 1, m, opt, sched, g)
    require_finite(m, "the articulation prior's training")
    m.eval()
    m.set_range(x)
    return m.cpu()


#: Limb-wise recombinations added to the captured (and mirrored) poses for training priors.
RECOMBINED_POSES = 20000


def train_prior(kind: str, pose_set_path: str | Path, out: str | Path, seed: int = 0, progress: bool = True,
                include_val: bool = True, recombined: int = RECOMBINED_POSES, body_model=None,
                command: str = "fit3d.training.priors.train_prior", checkpoint: str | Path | None = None,
                **kwargs) -> dict:
    """Train one prior kind (:data:`PRIOR_KINDS`) on the training subjects (:func:`training_poses`)
    and save it. ``prototypes`` (the PM-Net memory) needs the pose set's body model
    (``body_model``; None: anny, for an anny pose set only, since the SMPL family needs its
    licensed file); the other kinds do not use it. ``command``: what the file records as having
    made it (:func:`fit3d.training.provenance.training_record`). ``checkpoint``: where the VAE and
    the articulation prior (minutes of training) keep their checkpoint (:func:`train_vae`); the
    GMM and the prototypes (seconds) have none. The VAE, the articulation prior and the
    prototypes train on ``body_model``'s device (the GMM: scikit-learn, on the CPU).

    Returns:
        ``{kind, poses, seconds, path}``.
    Raises:
        ValueError: unknown kind, not a pose set (:func:`load_pose_set`), too few poses, a pose
            set whose model is not ``body_model`` (any kind; with no ``body_model``, ``prototypes``
            of a set that is not anny's), another training into ``out`` running
            (:func:`fit3d.training.lock.training_lock`). FileNotFoundError: no such pose set.
    """
    from fit3d.training.lock import training_lock

    t0 = time.perf_counter()
    if kind not in PRIOR_KINDS:
        raise ValueError(f"unknown prior kind {kind!r}; use one of {PRIOR_KINDS}")
    with training_lock(out):
        ps = load_pose_set(pose_set_path)
        if body_model is not None:  # (every kind: a prior of another model's joints fits nothing)
            pose_set_body(ps, pose_set_path, body_model)
        x = training_poses(ps, include_val=include_val, recombined=recombined, seed=seed)
        device = getattr(body_model, "device", "cpu")  # (the VAE and the articulation prior train there)
        if kind == "prototypes":
            from fit3d.training.prototypes import learn_prototypes

            prior = learn_prototypes(pose_set_body(ps, pose_set_path, body_model), x, seed=seed, **kwargs)
        elif kind == "gmm":
            prior = train_gmm(x, seed=seed, **kwargs)
        elif kind == "vae":
            prior = train_vae(x, seed=seed, progress=progress, checkpoint=checkpoint, device=device, **kwargs)
        else:
            prior = train_articulation(x, seed=seed, progress=progress, checkpoint=checkpoint, device=device, **kwargs)
        from fit3d.training.provenance import training_record

        save_prior(prior, out, training_record(command, pose_set_path, kind=kind, seed=seed,
                                               include_val=include_val, recombined=recombined, poses=len(x), **kwargs))
        return dict(kind=kind, poses=len(x), seconds=round(time.perf_counter() - t0, 1), path=str(out))


def pose_set_body(pose_set: dict, path, body_model=None):
    """The body model that posed ``pose_set`` (its ``model``; a set without one is anny's):
    ``body_model``, or, when None, anny built here.

    Raises:
        ValueError: the pose set is for another model than ``body_model``, or for a SMPL-family
            model and no ``body_model`` is given (its licensed file is needed).
    """
    name = str(pose_set.get("model", "anny"))
    if body_model is None:
        if name != "anny":
            raise ValueError(f"{path} is a {name} pose set: its prototypes need the {name} model (body_model=; "
                             f"on the command line --model {name} --model-path DIR)")
        from fit3d.body_models import build_body_model

        return build_body_model("anny")
    joints = np.asarray(pose_set["body_pose"]).shape[1]
    if body_model.name != name or joints != body_model.num_body_joints:
        said = name if body_model.name != name else f"{name} pose set of {joints} joints"
        raise ValueError(f"{path} is a {said} pose set, not {body_model.name}'s ({body_model.num_body_joints} joints): "
                         f"pass --model {name}" + (" --model-path DIR" if name != "anny" else "")
                         + " or a pose set of the model")
    return body_model
