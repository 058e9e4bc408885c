"""NeuralAnnot (Moon, Choi, Lee, CVPRW 2022) with the Three Recipes (Moon et al., CVPRW 2023).

One annotator network is trained over a whole target set of 2D keypoints:
GMoF reprojection on the target set's 2D ground truth, in parallel with 3D
supervision; its predictions on the target set are the pseudo-GT, optionally
refined per person with a few EFT steps, and kept per person only where they
reproject much closer to the keypoints than the pretrained regressor's own
prediction (:data:`ACCEPT_RATIO`). The recipes are switches:

* ``depth``: against depth ambiguity, 3D losses (keypoints, rotations, shape) on
  synthetic people made on the fly from the retargeted CMU training and validation subjects (never test),
  mixed into every step (:func:`fit3d.training.regressor.regressor_loss`);
* ``pretrain``: against weak 2D supervision, start from the pretrained
  regressor (trained on the 2D-to-3D task) instead of random weights;
* ``prior``: against implausible articulation, the VAE prior and an L2 term
  on the predicted body pose during training.

The training length is chosen on held-out target people (early stopping on their 2D
loss, then the chosen length retrained on everyone): a small set seen many times
otherwise ends up following its annotation noise (:meth:`NeuralAnnot.fit_dataset`).
Training is resumable (a checkpoint after every epoch) and runs under
``torch.distributed`` (DDP; each rank takes every world-th target person, runs the
same number of steps and afterwards annotates the images of its shard:
:func:`fit3d.pipeline.selection.shard_of`).
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fit3d.body_models.base import BodyModel
from fit3d.data.batching import PersonBatch, batch_for
from fit3d.data.writers import write_torch
import fit3d.fitters.losses as L
from fit3d.fitters.eft import EFT, EXTRA_DEFAULTS as EFT_EXTRA_DEFAULTS
from fit3d.fitters.result import FitResult, is_valid, refinement_pays, reprojection_error_px
from fit3d.geometry import project
from fit3d.priors.base import as_loss
from fit3d.training.divergence import require_finite

log = logging.getLogger(__name__)

RECIPES = ("depth", "pretrain", "prior")

#: NeuralAnnot keeps a person's annotation only when it reprojects more than this many times
#: closer to the keypoints (mean pixel error) than the pretrained regressor's own prediction,
#: or when that prediction is not a valid fit; otherwise the prediction stands (EFT's rule,
#: :data:`fit3d.fitters.eft.ACCEPT_RATIO`, applied to the annotator, with one more condition: a
#: valid prediction is never replaced by an invalid annotation). An annotator trained on
#: noisy keypoints of ordinary poses has partly learned their noise. Chosen on the two
#: validation subjects with weights trained without them (`docs/experiments.md`; mean
#: PA-MPJPE-12 of subjects 01 and 35, realistic noise / noise-free / twice the noise): always
#: the annotator 65.2 / 45.6 / 84.9 mm, the prediction alone 84.4 / 71.1 / 92.8, 1.2: 64.4 /
#: 45.7 / 80.5, **1.3: 64.1 / 45.7 / 78.9**, 1.4: 64.4 / 45.7 / 78.5 (subject 01 1.4 mm worse
#: with noise than always the annotator, beyond the rule's 1 mm).
ACCEPT_RATIO = 1.3


def parse_recipes(text: str) -> frozenset[str]:
    """``"depth,pretrain,prior"`` (or ``"none"``) -> the set. Raises ValueError on unknown names."""
    names = frozenset(t.strip() for t in text.split(",") if t.strip() and t.strip() != "none")
    bad = names - set(RECIPES)
    if bad:
        raise ValueError(f"unknown recipes {sorted(bad)}; known: {RECIPES}")
    return names


@dataclass
class TrainConfig:
    """Annotator training options: epochs over the target set (at least ``min_steps_per_epoch``
    steps each, sampling the set again when it is small), batch sizes, loss weights, and
    how the training length is chosen.

    ``epochs``: the most epochs trained (10). ``holdout``: the share of the target people
    held out to choose the length (at most ``holdout_max_people``; when fewer than
    ``holdout_min_people`` would be held out, or ``holdout`` is 0, ``epochs`` are trained on
    everyone). ``stop_tolerance``: the length ends before the first epoch whose held-out 2D
    loss exceeds ``(1 + stop_tolerance)`` x its best (:meth:`NeuralAnnot.fit_dataset`).
    0.2 was chosen on the validation subjects' benchmarks (200 people each, weights trained
    without them; `docs/experiments.md`): PA-MPJPE-12 with realistic noise 64.8 mm mean
    against 75.6 for a fixed 10 epochs, 41.7 against 41.7 noise-free; 0.1 stopped
    noise-free sets too early (44.9), 0.3 noisy ones too late (67.1).
    """

    epochs: int = 10
    min_steps_per_epoch: int = 50
    batch_size: int = 128
    synthetic_batch: int = 128
    lr: float = 3e-4
    weight_2d: float = 1.0
    weight_3d: float = 1.0
    weight_vae: float = 0.05
    weight_l2: float = 0.5
    weight_shape: float = 0.1
    seed: int = 0
    holdout: float = 0.2
    holdout_min_people: int = 5
    holdout_max_people: int = 2000
    stop_tolerance: float = 0.2


def _epoch_seed(seed: int, phase: str | None, epoch: int, rank: int, stream: int = 0) -> int:
    """A 63-bit seed (it fits an int64) for one of a training epoch's random streams (0: people's order and
    synthetic batches, :func:`_epoch_generator`; 1: the depth recipe's synthetic pool).

    Derived from ``(seed, phase, epoch, rank, stream)`` through numpy's ``SeedSequence``
    (any non-negative ints, no two tuples sharing a stream in practice), so a run resumed
    from a checkpoint draws what the uninterrupted run drew from that epoch on (same world
    size), and no two ranks, epochs or phases share one.

    Args:
        seed: the run's seed (``TrainConfig.seed``). phase: ``"select"`` or ``"final"``.
        epoch: the 0-based epoch about to run. rank: this process's ``torch.distributed`` rank.
        stream: which of the epoch's streams.
    Raises:
        ValueError: a negative ``seed``, ``epoch``, ``rank`` or ``stream`` (``SeedSequence`` takes none).
    """
    key = [seed, 1 if phase == "select" else 0, epoch, rank] + ([stream] if stream else [])
    state = np.random.SeedSequence(key).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def _epoch_generator(seed: int, phase: str | None, epoch: int, rank: int) -> torch.Generator:
    """The CPU ``torch.Generator`` of one training epoch's people order and synthetic
    batches (:func:`_epoch_seed`'s stream 0)."""
    return torch.Generator().manual_seed(_epoch_seed(seed, phase, epoch, rank))


class NeuralAnnot:
    """Dataset-level annotator. ``fit_dataset(target)`` trains it; ``fitter(batch)`` annotates.

    Args:
        body_model: the body model.
        regressor: the annotator network (a :class:`~fit3d.regressors.keypoint_regressor.KeypointRegressor`;
            of an :class:`~fit3d.regressors.ensemble.EnsembleRegressor`, NeuralAnnot trains one network: its
            first member, which is also the pretrained prediction of ``accept_ratio``). A copy is
            trained (``self.net``; the caller's network is left as it is). With the ``pretrain`` recipe it
            should hold pretrained weights; without it the copy starts as a new network of its sizes
            (:meth:`~fit3d.regressors.keypoint_regressor.KeypointRegressor.blank`, drawn from
            ``config.seed`` on the CPU; the caller's random state is left as it was).
        recipes: subset of :data:`RECIPES`.
        pose_set: retargeted mocap (for the ``depth`` recipe).
        prior: VAE prior (for the ``prior`` recipe).
        config: :class:`TrainConfig`.
        refine_steps: EFT steps per person after prediction (0: none).
        checkpoint: path saved after every epoch and resumed from when present.
        accept_ratio: keep a person's annotation only where the pretrained regressor's
            prediction reprojects more than ``accept_ratio`` times worse (mean px) or is not
            valid, and the annotation is valid where the prediction is; elsewhere the prediction
            stands (:data:`ACCEPT_RATIO`; None: always the
            annotation, as the paper; without the ``pretrain`` recipe there is no
            prediction and the annotation is always kept). The output's extra
            ``annotator_kept`` says which.

    Raises:
        ValueError: a recipe not in :data:`RECIPES`, the ``depth`` recipe without ``pose_set``, or the
            ``prior`` recipe without ``prior``.
        TypeError: a ``checkpoint`` for a network that has no ``state()`` to save (e.g. a
            :class:`~fit3d.regressors.flip.FlipAveraged`: give its inner network).
    """

    name = "neuralannot"
    extra_defaults: dict = {}
    schedule = None
    #: People per annotating call on a CPU, and on a CUDA device (:func:`~fit3d.fitters.base.batch_size_for`):
    #: one network forward per person (with ``refine_steps``, EFT's per-person weights: its GPU size).
    default_batch_size = 64
    cuda_batch_size = 2048

    def __init__(self, body_model: BodyModel, regressor, recipes=frozenset(RECIPES), pose_set: dict | None = None,
                 prior=None, config: TrainConfig | None = None, refine_steps: int = 0,
                 checkpoint: str | Path | None = None, accept_ratio: float | None = ACCEPT_RATIO) -> None:
        self.body_model = body_model
        self.recipes = frozenset(recipes)
        if self.recipes - set(RECIPES):
            raise ValueError(f"unknown NeuralAnnot recipes {sorted(self.recipes - set(RECIPES))}; "
                             f"choose among {list(RECIPES)}")
        self.config = config or TrainConfig()
        regressor = getattr(regressor, "first", regressor)  # an ensemble: NeuralAnnot trains one network
        if checkpoint and not hasattr(regressor, "state"):
            raise TypeError(f"a NeuralAnnot checkpoint saves its network's state(), which a {type(regressor).__name__} "
                            "has not: give a KeypointRegressor (fit3d.regressors.io.load_regressor), or no checkpoint")
        self.net = copy.deepcopy(regressor)  # the one trained (the caller's is left as it is)
        # the pretrained network, whose own prediction an annotation must beat (accept_ratio)
        self.accept_ratio = accept_ratio if "pretrain" in self.recipes else None
        self.pretrained = copy.deepcopy(regressor).to(body_model.device).eval() \
            if self.accept_ratio is not None else None
        if "pretrain" not in self.recipes:  # from scratch: drawn from config.seed, the caller's torch RNG untouched
            with torch.random.fork_rng(devices=[]):  # (drawn on the CPU: the same weights on any device)
                torch.default_generator.manual_seed(self.config.seed)
                self.net.cpu()
                _reinitialise(self.net)
        self.net.to(body_model.device)
        select = getattr(self.net, "select", None)
        if select is not None and "depth" not in self.recipes:
            # nothing trains a prototype head's choice without the depth recipe (an argmax: its
            # cross-entropy is a 3D term), and DDP refuses parameters that get no gradient
            select.requires_grad_(False)
        if "depth" in self.recipes and pose_set is None:
            raise ValueError("the depth recipe needs a pose set (fit3d.mocap.bundled_pose_set())")
        if "prior" in self.recipes and prior is None:
            raise ValueError("the prior recipe needs a pose prior (the VAE)")
        if isinstance(prior, torch.nn.Module):  # a loss here, not trained: no gradients into its weights
            as_loss(prior, body_model.device)
        self.pose_set, self.prior = pose_set, prior
        self._opt: torch.optim.Optimizer | None = None  # the final phase's Adam, which a later call goes on with
        self._world = 1  # the ranks training (recorded in the checkpoint)
        self._pool = None  # the depth recipe's pose pool, built on first use
        self.refine_steps = refine_steps
        # what this fitter reports per person, for people that were not fitted
        self.extra_defaults = dict(EFT_EXTRA_DEFAULTS) if refine_steps > 0 else {}
        if self.accept_ratio is not None:
            self.extra_defaults["annotator_kept"] = np.bool_(False)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.log: list[dict] = []
        self.epoch = 0
        self.phase: str | None = None  # "select" (choosing the training length on held-out people), "final"
        self.held_out: list[float] = []  # held-out 2D loss after each selection epoch (0: the start)
        self.selected_epochs: int | None = None
        self._checkpoint_epochs: int | None = None  # the epochs a resumed checkpoint was asked to train
        self._target_digest: dict | None = None  # the set fit_dataset trains on (target_digest)
        #: called with each epoch's log entry as it ends (rank 0 only), e.g. to print progress
        self.on_epoch: Callable[[dict], None] | None = None

    # ------------------------------------------------------------------ training
    def losses(self, target: PersonBatch, synthetic=None) -> tuple[torch.Tensor, dict]:
        """The training loss of one step and its named parts (what each recipe adds).

        ``synthetic``: ``(PersonBatch, ground truth dict)`` of the depth recipe. Target and
        synthetic people go through the network in one forward (DDP counts one per step).
        """
        from fit3d.training.regressor import regressor_loss

        c = self.config
        use_syn = "depth" in self.recipes and synthetic is not None
        outs = self._forward([target, synthetic[0]] if use_syn else [target])
        out = outs[0]
        parts = {"2d": self.loss_2d(out, target).mean()}
        parts["shape"] = L.shape(out["betas"]).mean()
        if "prior" in self.recipes:
            parts["vae"] = (self.prior.weight_scale * self.prior(out["body_pose"])).mean()
            parts["l2"] = out["body_pose"].pow(2).sum((1, 2)).mean()
        total = c.weight_2d * parts["2d"] + c.weight_shape * parts["shape"]
        total = total + c.weight_vae * parts.get("vae", 0.0) + c.weight_l2 * parts.get("l2", 0.0)
        if use_syn:
            l3, _ = regressor_loss(self._module(), self.body_model, *synthetic, out=outs[1])
            parts["3d"] = l3
            total = total + c.weight_3d * l3
        return total, {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in parts.items()}

    def loss_2d(self, out: dict, batch: PersonBatch) -> torch.Tensor:
        """The 2D term, per person ``(B,)``: GMoF reprojection of the body of the network's
        output ``out`` (``global_orient``, ``body_pose``, ``betas``, full-frame ``transl``)
        against ``batch``'s keypoints, scaled by the person's size (the training term, and
        the held-out measure of :meth:`fit_dataset`)."""
        body = self.body_model(out["global_orient"], out["body_pose"], out["betas"], out["transl"])
        proj = project(body.keypoints_3d, batch.focal_length, batch.principal_point)
        return L.reprojection(proj, batch.keypoints_2d, L.person_scale(batch.keypoints_2d, batch.bbox),
                              mask=self.body_model.keypoint_weights())

    def _module(self):
        return self.net.module if isinstance(self.net, torch.nn.parallel.DistributedDataParallel) else self.net

    def _forward(self, batches: list[PersonBatch]) -> list[dict]:
        """One forward of the (possibly DDP-wrapped) network over several batches, split
        back per batch, each with its full-frame ``transl``."""
        from fit3d.regressors.base import crop_cam_to_transl, regressor_box

        module = self._module()
        out = self.net(torch.cat([module.features(b) for b in batches]))
        res, start = [], 0
        for b in batches:
            o = {k: v[start : start + len(b)] for k, v in out.items()}
            o["transl"] = crop_cam_to_transl(o["cam"], regressor_box(b), b.focal_length, b.principal_point)
            res.append(o)
            start += len(b)
        return res

    def _synthetic_pool(self, n: int, seed: int):
        from fit3d.training.regressor import training_people, training_pool

        if self._pool is None:
            # the pose set's train and val subjects, never test (the tuning scripts, which choose NeuralAnnot's
            # settings on the validation subjects, give a pose set whose val poses are marked test)
            self._pool = training_pool(self.pose_set)
        return training_people(self._pool, self.body_model, n, seed)

    def fit_dataset(self, target: PersonBatch, progress: bool = True) -> list[dict]:
        """Train the annotator on every person of ``target`` (resuming from the checkpoint).

        **Training length from held-out people** (when the set is large enough, see
        :class:`TrainConfig`): the annotator first trains on all but a held-out share of
        the people, and after each epoch the 2D reprojection loss of its *predictions* on
        the held-out people is measured (their noise is independent of the training
        people's, so a rise means the network has started to follow annotation noise).
        Selection stops at the first epoch whose held-out loss exceeds ``(1 +
        stop_tolerance)`` times the best so far; the length is the last epoch before it
        (0: the starting network is kept). The network then restarts from its starting
        weights and trains that many epochs on every person, which gives the pseudo-GT.
        Early stopping on held-out data is the standard remedy for noisy labels; the
        tolerance was chosen on the validation subjects' benchmarks (``docs/experiments.md``;
        on clean keypoints it stops short: "NeuralAnnot on clean keypoints" there).

        Under ``torch.distributed`` (initialised by the caller, e.g.
        :func:`fit3d.pipeline.distributed.init_from_env` under ``torchrun``), wraps the
        network in DDP and gives each rank every world-th person; every rank runs the same
        number of steps per epoch (from the largest share) and draws its own synthetic
        batches (rank-seeded); the held-out loss is averaged over ranks, so every rank
        takes the same decision; rank 0 writes the checkpoint. Each epoch draws from its own
        seeded random stream, so a run resumed from the checkpoint trains as the uninterrupted
        run would (the same weights, with the same world size, on the CPU with the same thread
        count; on a GPU as far as its kernels are deterministic).
        Returns the per-epoch log (this rank's mean loss parts, seconds; selection epochs
        carry ``held_out_2d`` and ``phase`` ``"select"``).

        Raises:
            ValueError: the checkpoint is in the selection phase but this configuration holds
                no people out (a smaller set); the checkpoint is not one of this annotator's
                (another file, another network size, e.g. another body model) or was trained
                with other recipes or :class:`TrainConfig` settings (:meth:`training_settings`;
                ``epochs`` may be raised: without a held-out choice it trains on, with one the
                chosen length stands, with a warning), or on another set of people
                (:func:`target_digest` of ``target``: other images, annotations added or corrected);
                the training diverged (weights not finite after an epoch; nothing is saved then).
            TypeError, ValueError: ``target`` is not a batch for this body model
                (:func:`~fit3d.data.batching.batch_for`; unlabelled keypoints with NaN coordinates
                and confidences above 1 are cleaned as for fitting, as :func:`make_batch` does).

        Called again on the same set with ``epochs`` raised, it trains on with the same Adam state,
        as one call of that many epochs would (as from a checkpoint).
        """
        target = batch_for(target, self.body_model)
        c = self.config
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)
        self._world = world
        split = self.holdout_split(len(target))
        # the starting weights, which the final phase restarts from (only a selection needs them)
        start = {k: v.detach().clone() for k, v in self._module().state_dict().items()} if split is not None else None
        if self.phase is None:  # a first call (a checkpoint, when there is one, says otherwise)
            self.phase = "select" if split is not None else "final"
        # a later call (the last one ended in the final phase) goes on with its Adam
        opt = self._opt if self._opt is not None else torch.optim.Adam(self._module().parameters(), lr=c.lr)
        self._target_digest = target_digest(target)
        resumed = self._resume(opt)
        if dist and not isinstance(self.net, torch.nn.parallel.DistributedDataParallel):
            self.net = torch.nn.parallel.DistributedDataParallel(self.net)
            if self.pretrained is not None:  # what an annotation must beat: rank 0's network, as DDP makes
                _from_rank0(self.pretrained)  # its training weights everyone's
        epochs = c.epochs if self.selected_epochs is None else self.selected_epochs
        if resumed and self.selected_epochs is not None and self._checkpoint_epochs not in (None, c.epochs):
            log.warning("neuralannot: the training length of %s was chosen on held-out people (%d epochs, of at "
                        "most %d): epochs=%d does not change it; a new checkpoint chooses anew", self.checkpoint,
                        self.selected_epochs, self._checkpoint_epochs, c.epochs)
        if resumed and self.phase == "final" and self.epoch > epochs:  # (== epochs: simply finished before)
            log.warning("neuralannot: the checkpoint is at epoch %d, the run asks for %d: the annotator stays at "
                        "epoch %d (a new checkpoint trains %d anew)", self.epoch, epochs, self.epoch, epochs)
        elif resumed and self.phase == "final" and self.epoch == epochs:
            log.info("neuralannot: %s already trained (epoch %d of %d): nothing to train", self.checkpoint,
                     self.epoch, epochs)
        if self.phase == "select":
            if split is None:
                raise ValueError(f"{self.checkpoint} is choosing the training length on held-out people, but this "
                                 "configuration holds none out: use the same configuration or a new checkpoint")
            if self.selected_epochs is None:  # (a checkpoint saved at the stop has it already)
                self._train(target, split[0], opt, c.epochs, (rank, world), progress, held=split[1])
            self._module().load_state_dict(start)  # the chosen length is trained again, on everyone
            if dist:  # DDP made rank 0's weights everyone's when it wrapped: the same again here
                _from_rank0(self._module())
            opt = torch.optim.Adam(self._module().parameters(), lr=c.lr)
            self.phase, self.epoch = "final", 0
            if rank == 0:
                self._save(opt)
            epochs = self.selected_epochs
        self._train(target, torch.arange(len(target)), opt, epochs, (rank, world), progress)
        self.net, self._opt = self._module(), opt
        return self.log

    def holdout_split(self, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(training people, held-out people)`` (sorted indices into a target set of ``n``
        people, the same on every rank), or None when fewer than ``holdout_min_people``
        would be held out (the training length is then ``epochs``)."""
        c = self.config
        n_held = min(round(c.holdout * n), c.holdout_max_people)
        if c.holdout <= 0 or n_held < c.holdout_min_people or n - n_held < 1:
            return None
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(c.seed + 17))
        return perm[n_held:].sort().values, perm[:n_held].sort().values

    @torch.no_grad()
    def held_out_loss(self, target: PersonBatch, held: torch.Tensor, shard: tuple[int, int] = (0, 1)) -> float:
        """Mean 2D reprojection loss (the training term) of the network's predictions on the
        ``held`` people of ``target``; under DDP each rank takes every world-th person and
        the mean is all-reduced, so every rank returns the same value."""
        rank, world = shard
        module, device = self._module(), self.body_model.device
        was_training = module.training
        module.eval()
        total = torch.zeros(2, dtype=torch.float64, device=device)
        mine = held[rank::world]
        for s in range(0, len(mine), 512):
            b = target.index(mine[s : s + 512].to(target.keypoints_2d.device)).to(device)
            per = self.loss_2d(module.predict(b), b)
            total += torch.stack([per.sum().double(), torch.tensor(float(len(b)), dtype=torch.float64,
                                                                    device=device)])
        if world > 1:
            torch.distributed.all_reduce(total)
        module.train(was_training)
        return float(total[0] / total[1].clamp(min=1))

    def _train(self, target: PersonBatch, people: torch.Tensor, opt, epochs: int, shard: tuple[int, int],
               progress: bool, held: torch.Tensor | None = None) -> None:
        """Epochs ``self.epoch + 1 .. epochs`` over ``target[people]``; with ``held``, the
        selection phase: checks the held-out loss after each epoch, sets
        ``self.selected_epochs`` and returns at the first rise beyond the tolerance."""
        from fit3d.training.regressor import to_batch

        c = self.config
        rank, world = shard
        device = self.body_model.device
        mine = people[rank::world]
        if len(mine) == 0:  # more ranks than people: this rank repeats the set
            mine = people
        # the same number of steps on every rank (DDP all-reduces every step): from the
        # largest share, not this rank's
        n_steps = max(-(-(-(-len(people) // world)) // c.batch_size), c.min_steps_per_epoch)
        if held is not None and not self.held_out:
            self.held_out = [self.held_out_loss(target, held, shard)]  # the starting network's
        self._module().train()
        bar = None
        if progress and rank == 0 and self.epoch < epochs:
            from tqdm import tqdm

            desc = "neuralannot (choosing the length)" if held is not None else "neuralannot"
            bar = tqdm(total=epochs, initial=self.epoch, desc=desc, unit="epoch")
        while self.epoch < epochs:
            t0 = time.perf_counter()
            g = _epoch_generator(c.seed, self.phase, self.epoch, rank)
            pool = self._synthetic_pool(max(c.synthetic_batch * 8, 512),
                                        _epoch_seed(c.seed, self.phase, self.epoch, rank, stream=1)) \
                if "depth" in self.recipes else None
            perm = torch.cat([mine[torch.randperm(len(mine), generator=g)]
                              for _ in range(-(-n_steps * c.batch_size // len(mine)))])
            sums: dict[str, float] = {}
            steps = 0
            for s in range(0, n_steps * c.batch_size, c.batch_size):
                idx = perm[s : s + c.batch_size].to(target.keypoints_2d.device)
                syn = None
                if pool is not None:
                    j = torch.randint(0, len(pool["keypoints_2d"]), (c.synthetic_batch,), generator=g).numpy()
                    sb, sgt = to_batch(pool, j, self.body_model.keypoint_convention)
                    syn = (sb.to(device), {k: v.to(device) for k, v in sgt.items()})
                loss, parts = self.losses(target.index(idx).to(device), syn)
                opt.zero_grad()
                loss.backward()
                opt.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
            self.epoch += 1
            # (the weights: the same on every rank under DDP, so every rank stops here together)
            require_finite(self._module(), f"neuralannot: the annotator's training (epoch {self.epoch})",
                           "lower the learning rate (TrainConfig.lr)")
            entry: dict = {k: v / max(steps, 1) for k, v in sums.items()}
            entry.update(epoch=self.epoch, steps=steps, seconds=round(time.perf_counter() - t0, 2),
                         phase=self.phase)
            stop = False
            if held is not None:
                h = self.held_out_loss(target, held, shard)
                entry["held_out_2d"] = h
                best = min(self.held_out)
                self.held_out.append(h)
                stop = h > (1 + c.stop_tolerance) * best
            self.log.append(entry)
            if rank == 0:
                log.info("neuralannot epoch %d: %s", self.epoch, entry)
                if self.on_epoch is not None:
                    self.on_epoch(entry)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in entry.items() if k in ("2d", "3d", "held_out_2d")})
            if stop:
                self.selected_epochs = self.epoch - 1
            if rank == 0:
                self._save(opt)
            if stop:
                break
        if bar is not None:
            bar.close()
        if held is not None and self.selected_epochs is None:
            self.selected_epochs = min(self.epoch, epochs)  # never rose: the full length
        if held is not None and rank == 0:
            log.info("neuralannot: held-out 2D loss by epoch %s: training %d epochs on all people",
                     [round(h, 4) for h in self.held_out], self.selected_epochs)

    def _save(self, opt) -> None:
        if self.checkpoint is None:
            return
        write_torch(self.checkpoint, dict(model=self._module().state(), optimizer=opt.state_dict(), epoch=self.epoch,
                                          log=self.log, recipes=sorted(self.recipes), phase=self.phase,
                                          held_out=self.held_out, selected_epochs=self.selected_epochs,
                                          config=self.training_settings(), max_epochs=self.config.epochs,
                                          target=self._target_digest, world=self._world))

    def training_settings(self) -> dict:
        """What a checkpoint must share with this annotator to be resumed by it: the recipes and
        every :class:`TrainConfig` field but ``epochs`` (which a resumed run may raise)."""
        from dataclasses import asdict

        config = {k: v for k, v in asdict(self.config).items() if k != "epochs"}
        return dict(recipes=sorted(self.recipes), **config)

    def _resume(self, opt) -> bool:
        """Load the checkpoint when there is one (weights, optimiser, epoch, log, selection
        state); returns whether it did."""
        if self.checkpoint is None or not self.checkpoint.is_file():
            return False
        from fit3d.data.writers import read_torch

        ck = read_torch(self.checkpoint, weights_only=False)  # fit3d's own file (optimiser state)
        mine = self.training_settings()
        theirs = {} if not isinstance(ck, dict) else ck["config"] if "config" in ck else \
            dict(recipes=sorted(ck["recipes"])) if "recipes" in ck else {}  # (older checkpoints: recipes only)
        differ = {k: (v, mine[k]) for k, v in theirs.items() if k in mine and v != mine[k]}
        if differ:  # resuming would mix two trainings in one network (checked before anything is loaded)
            raise ValueError(f"{self.checkpoint} was trained with other settings ("
                             + ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items())
                             + "): give the same settings, or another output folder (or delete it) to train anew")
        trained_on, now = (ck.get("target") if isinstance(ck, dict) else None), self._target_digest
        if trained_on is not None and now is not None and trained_on != now:  # (older checkpoints record none)
            raise ValueError(
                f"{self.checkpoint} was trained on another set of people ({trained_on['people']} there, "
                f"{now['people']} now: other images, or annotations added or corrected since); NeuralAnnot learns "
                "from the whole set, so its annotations of this set need an annotator trained on it: give another "
                "output folder, or delete this one's annotator.pt (its annotations are then redone)")
        try:
            self._module().load_state_dict(ck["model"]["state_dict"])
            opt.load_state_dict(ck["optimizer"])
            self.epoch, self.log = int(ck["epoch"]), list(ck["log"])
        except (KeyError, TypeError, RuntimeError, ValueError) as e:  # another file, another annotator
            why = ("its network's shapes differ: trained for another body model or network size"
                   if "size mismatch" in str(e) or "Missing key" in str(e) or "Unexpected key" in str(e)
                   else f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
            raise ValueError(f"{self.checkpoint} is not a checkpoint of this annotator ({why}); use another output "
                             "folder, or delete it to train from the start") from e
        self._checkpoint_epochs = ck.get("max_epochs")  # the epochs asked for when it was written
        if ck.get("world") not in (None, self._world):  # (older checkpoints record none)
            log.warning("neuralannot: %s was trained by %s process(es), this run has %d: it trains on, but not to "
                        "the weights an uninterrupted run would give (each rank draws its own people and batches)",
                        self.checkpoint, ck["world"], self._world)
        # checkpoints from before the length selection trained a fixed length
        self.phase = ck.get("phase", "final")
        self.held_out, self.selected_epochs = list(ck.get("held_out", [])), ck.get("selected_epochs")
        log.info("neuralannot: resumed from %s at epoch %d (%s phase)", self.checkpoint, self.epoch, self.phase)
        return True

    def annotation_state(self) -> dict:
        """What decides this annotator's outputs, as JSON-able values: the epoch and phase
        of its training, ``refine_steps``, ``accept_ratio`` and a SHA-256 (16 hex digits) of
        the annotator's and the pretrained network's weights. Two annotators with the same
        state write the same annotations (a resumed pipeline compares them)."""
        import hashlib

        h = hashlib.sha256()
        for net in (self._module(), self.pretrained):
            for k, v in sorted((net.state_dict() if net is not None else {}).items()):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return dict(epoch=int(self.epoch), phase=self.phase, refine_steps=int(self.refine_steps),
                    accept_ratio=self.accept_ratio, weights=h.hexdigest()[:16])

    # ------------------------------------------------------------------ annotating
    def __call__(self, batch: PersonBatch) -> FitResult:
        """Annotate ``batch`` with the trained network (then ``refine_steps`` EFT steps),
        keeping the pretrained prediction where the annotation does not pay (``accept_ratio``).
        Called before :meth:`fit_dataset`, it annotates with the network as given: the pretrained
        regressor with the ``pretrain`` recipe; without it an untrained network, with a warning.

        Raises:
            ValueError: as :meth:`~fit3d.data.batching.PersonBatch.for_model`.
            TypeError: ``batch`` is no PersonBatch (:func:`~fit3d.data.batching.batch_for`).
        """
        model = self.body_model
        batch = batch_for(batch, model)
        if "pretrain" not in self.recipes and not self.log and self.epoch == 0:
            warnings.warn("NeuralAnnot is called before fit_dataset and without the 'pretrain' recipe: its network "
                          "is untrained, so its annotations mean nothing (train it with fit_dataset first)",
                          stacklevel=2)
        net = self._module().eval()
        if self.refine_steps > 0:
            res = EFT(model, net, steps=self.refine_steps)(batch)
            res.iterations = torch.full_like(res.iterations, self.refine_steps)
        else:
            res = predict(model, net, batch)
        if self.pretrained is None or self.accept_ratio is None:
            return res
        pred = predict(model, self.pretrained, batch)
        keep = refinement_pays(pred.reproj_error_px, res.reproj_error_px, self.accept_ratio, pred.valid)
        keep &= res.valid | ~pred.valid  # a valid prediction beats an invalid (e.g. non-finite) annotation
        # (both invalid: refinement_pays keeps a finite prediction over a non-finite annotation)
        pred.extras = {k: torch.full_like(v, self.extra_defaults[k].item()) for k, v in res.extras.items()}
        res = res.where(keep, pred)
        res.extras["annotator_kept"] = keep
        return res


def _from_rank0(module: torch.nn.Module) -> None:
    """Every rank's ``module`` takes rank 0's parameters and buffers, in place (``torch.distributed``)."""
    for v in module.state_dict().values():
        torch.distributed.broadcast(v, 0)


def _reinitialise(net) -> None:
    """Start ``net`` (a network, or a wrapper of one as ``.inner``) from scratch, in place: a
    :class:`~fit3d.regressors.keypoint_regressor.KeypointRegressor`'s weights as a new network of
    its sizes draws them (:meth:`~fit3d.regressors.keypoint_regressor.KeypointRegressor.blank`:
    LayerNorm gains too, zero output layers); another network's every layer that has
    ``reset_parameters``. Draws from torch's current random state."""
    inner = getattr(net, "inner", net)
    if hasattr(inner, "blank"):
        inner.load_state_dict(inner.blank().state_dict())
        return
    for m in net.modules():
        if m is not net and hasattr(m, "reset_parameters"):
            m.reset_parameters()


@torch.no_grad()
def predict(body_model: BodyModel, net, batch: PersonBatch) -> FitResult:
    """A regressor's own prediction for ``batch`` (on the body model's device) as a
    :class:`FitResult` (no extras, loss 0, 0 iterations)."""
    out = net.predict(batch)
    body = body_model(out["global_orient"], out["body_pose"], out["betas"], out["transl"])
    proj = project(body.keypoints_3d, batch.focal_length, batch.principal_point)
    err = reprojection_error_px(proj, batch.keypoints_2d, body_model.keypoint_weights())
    B = len(batch)
    params = {k: out[k] for k in ("global_orient", "body_pose", "betas", "transl")}
    return FitResult(**params, joints_3d=body.joints_3d, keypoints_3d=body.keypoints_3d, keypoints_2d_fit=proj,
                     reproj_error_px=err, valid=is_valid(err, batch.keypoints_2d, batch.bbox, params=params),
                     loss=torch.zeros(B, device=err.device), iterations=torch.zeros(B, dtype=torch.long,
                                                                                  device=err.device),
                     convention=body_model.keypoint_convention)


def target_digest(target: PersonBatch) -> dict:
    """What identifies a training set (its people's keypoints, boxes and cameras, in order):
    ``{"people": N, "sha256": 16 hex digits}``; a checkpoint trained on another set is not
    resumed (:meth:`NeuralAnnot.fit_dataset`)."""
    import hashlib

    h = hashlib.sha256()
    for t in (target.keypoints_2d, target.bbox, target.focal_length, target.principal_point, target.image_size):
        h.update(np.round(t.detach().to("cpu", torch.float64).numpy(), 2).tobytes())
    return dict(people=len(target), sha256=h.hexdigest()[:16])


def stack_batches(batches: list[PersonBatch]) -> PersonBatch:
    """Concatenate PersonBatches of one convention."""
    from dataclasses import fields, replace

    first = batches[0]
    return replace(first, **{f.name: torch.cat([getattr(b, f.name) for b in batches])
                             for f in fields(first) if f.name != "convention"})


__all__ = ["NeuralAnnot", "TrainConfig", "RECIPES", "parse_recipes", "stack_batches"]
