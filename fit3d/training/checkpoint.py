"""Resumable training: a checkpoint written (atomically) after each round, epoch or block of
steps, and read back by a rerun with the same settings (the thread count, the weights' shapes,
the optimiser's settings and torch's and fit3d's versions among them), so that an interrupted
training ends with the same weights as an uninterrupted one."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from fit3d.data.writers import read_torch, write_torch

log = logging.getLogger(__name__)


def checkpoint_path(out: str | Path) -> Path:
    """Where a training into ``out`` keeps its checkpoint (``out`` + ``.partial``): an
    interrupted training run again resumes from it."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def digest(*arrays: np.ndarray) -> str:
    """SHA-256 of the arrays' bytes: a checkpoint's settings name its training data by it."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _complete(settings: dict, model: torch.nn.Module, opt) -> dict:
    """The caller's settings and what the code and the machine fix: torch's CPU thread count
    (another count sums in another order: not the same weights to the bit, so a training starts
    again rather than mix two), every weight's shape (an architecture changed since: not loaded
    half), the optimiser's own settings (its weight decay), torch's and fit3d's versions, and the
    device type when it is not the CPU (a GPU's arithmetic is another: a checkpoint of one is not
    resumed on the other; CPU checkpoints written before this was recorded still resume)."""
    from fit3d import __version__

    plain = (int, float, bool, str, tuple, type(None))
    state = model.state_dict()
    device = _device(model).type
    # (a CUDA checkpoint keeps the device's generator since it is marked so: one written before,
    # without it, is of other settings and not resumed into other dropout masks)
    on_device = {"device": device, **({"cuda_rng": True} if device == "cuda" else {})} if device != "cpu" else {}
    return dict(settings, **on_device, threads=torch.get_num_threads(),
                shapes={k: tuple(v.shape) for k, v in state.items()},
                optimizer={k: v for k, v in opt.defaults.items() if isinstance(v, plain)},
                torch=torch.__version__, fit3d=__version__)


def save_checkpoint(path: str | Path, settings: dict, next_index: int, model: torch.nn.Module, opt, sched,
                    g: torch.Generator) -> None:
    """Write the training state after ``next_index`` rounds / epochs / steps: the weights, the
    optimiser and its schedule, the training generator and torch's and NumPy's global generators
    (and, for a model on a CUDA device, that device's generator, which its dropout draws from),
    with ``settings`` completed by what the code and the machine fix (the thread count, the
    weights' shapes, the optimiser's settings, the versions)."""
    device = _device(model)
    cuda_rng = {"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}
    write_torch(path, dict(settings=_complete(settings, model, opt), next_round=next_index, model=model.state_dict(),
                           opt=opt.state_dict(), sched=sched.state_dict(), generator=g.get_state(),
                           torch_rng=torch.get_rng_state(), numpy_rng=np.random.get_state(), **cuda_rng))


def _device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first weight or buffer (the CPU for a model of none)."""
    return next((t.device for t in model.state_dict().values()), torch.device("cpu"))


def resume(path: str | Path | None, settings: dict, model: torch.nn.Module, opt, sched, g: torch.Generator,
           who: str, total: int) -> int:
    """Load a :func:`save_checkpoint` of the same ``settings`` into the training state (a warning
    says so). The settings should hold what changes the weights; the thread count, the weights'
    shapes, the optimiser's settings and the versions are compared too.

    Args:
        who: the training, for the log (``"train_vae"``). total: its rounds / epochs / steps.
    Returns:
        where to start (0: no checkpoint, or one of other settings or unreadable, said in a warning).
    Raises:
        ValueError: a checkpoint of the same settings that still cannot be loaded (the message
            says to delete it).
    """
    if path is None or not Path(path).is_file():
        return 0
    settings = _complete(settings, model, opt)
    try:
        ck = read_torch(path, weights_only=False)  # (a dict: read_torch says why not in its ValueError)
        same = ck.get("settings") == settings
    except Exception as e:  # noqa: BLE001 - unreadable (truncated, another torch): train from the start
        log.warning("%s: cannot read the checkpoint %s (%s); training from the start", who, path, e)
        return 0
    if not same:
        old = ck.get("settings") if isinstance(ck.get("settings"), dict) else {}
        changed = ", ".join(f"{k} {old.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(old) | set(settings))
                            if old.get(k) != settings.get(k))
        log.warning("%s: %s is a checkpoint of other settings (%s); training from the start (it will be "
                    "overwritten)", who, path, changed)
        return 0
    try:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        g.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        np.random.set_state(ck["numpy_rng"])
        if "cuda_rng" in ck:  # (the settings hold the device type: only a GPU training's has one)
            torch.cuda.set_rng_state(ck["cuda_rng"], _device(model))
    except (RuntimeError, ValueError, KeyError, TypeError) as e:  # (the state may be half loaded: stop)
        raise ValueError(f"{who}: cannot resume from {path} ({str(e).splitlines()[0]}): delete it to train from "
                         "the start") from e
    log.warning("%s: resuming from %s at %d of %d", who, path, ck["next_round"], total)
    return int(ck["next_round"])
