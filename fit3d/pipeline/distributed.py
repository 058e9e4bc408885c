"""``torch.distributed`` set-up for commands launched by ``torchrun`` (or SLURM through it).

``torchrun --nproc-per-node N -m fit3d.cli.main neuralannot ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_from_env` turns them into a process group (NCCL on CUDA, gloo on CPU)
and the rank's device. Outside ``torchrun`` it does nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

#: How long a rank waits for the others at a collective before failing (instead of
#: hanging forever when a rank died).
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class DistInfo:
    """``rank`` of ``world`` processes, and the torch device this rank uses."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes shared files (checkpoints, messages)."""
        return self.rank == 0


def init_from_env(device: str = "cpu", timeout: timedelta = COLLECTIVE_TIMEOUT) -> DistInfo:
    """Initialise the default process group from ``torchrun``'s environment.

    Args:
        device: ``"cpu"`` or ``"cuda"``; under ``torchrun`` a CUDA rank uses
            ``cuda:<LOCAL_RANK>``.
        timeout: collective timeout.
    Returns:
        :class:`DistInfo` (``rank=0, world=1`` and ``device`` unchanged without ``torchrun``).
    Raises:
        RuntimeError: the process group cannot be set up (from ``torch.distributed``).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not torch.distributed.is_available():
        return DistInfo(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return DistInfo(rank, world, device)


def finish() -> None:
    """Wait for every rank, then tear the process group down (no-op when there is none)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
