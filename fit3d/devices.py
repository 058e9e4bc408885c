"""Which torch devices this installation can use (a one-line answer instead of torch's assertion),
and what a run does after a GPU ran out of memory (:class:`MemoryLimit`)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def check_device(device) -> None:
    """Whether this torch can use ``device`` (a string or :class:`torch.device`; None: torch's default).

    Raises:
        ValueError: ``cuda`` asked for on a torch without usable CUDA (how to install a CUDA
            build), a CUDA device index this machine does not have, ``meta`` (a device without
            data: nothing can be fitted on it), another kind this torch cannot allocate on (``mps``
            on Linux, ``xpu`` without its build), or a string torch does not read as a device.
    """
    import torch

    if device is None:  # torch's default device
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{device!r} is not a torch device: {e}") from e
    if kind == "cuda" and not torch.cuda.is_available():
        build = torch.__version__
        raise ValueError(f"{device} asked for, but this torch ({build}) has no usable CUDA: install a CUDA build with "
                         f"'pip install --force-reinstall torch=={build.split('+')[0]} --index-url "
                         "https://download.pytorch.org/whl/cu128' (then pip install -e . again)")
    if kind == "cuda":
        index, count = torch.device(device).index, torch.cuda.device_count()
        if index is not None and index >= count:
            raise ValueError(f"{device} asked for, but this machine has {count} CUDA device{'s' if count != 1 else ''} "
                             f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
        return
    if kind == "meta":
        raise ValueError("meta is a device without data (for shapes only): fit on cpu or cuda")
    if kind != "cpu":
        try:
            torch.empty(1, device=device)
        except (RuntimeError, AssertionError, TypeError) as e:
            why = (str(e).splitlines() or [type(e).__name__])[0]
            why = why if len(why) <= 100 else why[:97] + "..."
            raise ValueError(f"this torch ({torch.__version__}) cannot use the device {device!r} ({why}): "
                             "use cpu or cuda") from e


class MemoryLimit:
    """The most people per batch since a batch ran out of GPU memory (None: none has), kept
    over a run's batches by :func:`fit3d.pipeline.batches.fit_people` and
    :func:`fit3d.evaluation.benchmark.run_benchmark`, so that after a batch of ``n`` people ran out
    of memory no later batch tries more than ``n // 2`` (each would run out again first: with
    ``fit3d eft --device cuda``'s 2,048 people on a small card, every batch). It only goes
    down: memory taken for a while by another process also lowers the rest of the run."""

    def __init__(self) -> None:
        self.size: int | None = None

    def cap(self, batch_size: int) -> int:
        """``batch_size``, or the limit where it is lower."""
        return batch_size if self.size is None else min(batch_size, self.size)

    def lower(self, failed: int) -> None:
        """A batch of ``failed`` people ran out of memory: at most half of it from now on."""
        half = max(failed // 2, 1)
        if self.size is None or half < self.size:
            self.size = half
            log.warning("a batch of %d people ran out of GPU memory: this run fits at most %d per batch from now on "
                        "(--batch-size %d says so from the start)", failed, half, half)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the GPU ran out of memory: torch's ``OutOfMemoryError`` (the caching
    allocator), or a ``RuntimeError`` from a CUDA library or the driver (cuBLAS's or
    cuSOLVER's ``..._ALLOC_FAILED``, ``CUDA error: out of memory``)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "ALLOC_FAILED" in text)
