"""The Fitter protocol (``docs/design.md``): what the pipeline, the benchmarks and a notebook
call. SMPLify, EFT, NeuralAnnot and Fallback follow it, so one swaps for another in one line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from fit3d.data.batching import PersonBatch
    from fit3d.fitters.result import FitResult


@runtime_checkable
class Fitter(Protocol):
    """``fitter(batch) -> FitResult``: fit B people (:class:`~fit3d.data.batching.PersonBatch`, in
    the fitter's body-model keypoint convention or one :meth:`~fit3d.data.batching.PersonBatch.for_model`
    maps) and return one :class:`~fit3d.fitters.result.FitResult` of B people, on the model's
    device; each person fitted independently of the others in the batch.

    Optional attributes the pipeline (:func:`fit3d.pipeline.run`) reads when a fitter has them,
    with its defaults otherwise (a fitter of one's own needs none of them):

    * ``name`` (str): recorded in the fits and the folder's settings (default: ``"fitter"``);
    * ``default_batch_size`` (int): people per call on a CPU, and ``cuda_batch_size`` (int) on a
      CUDA device (:func:`batch_size_for`; the command line's defaults, default:
      :class:`~fit3d.pipeline.RunConfig`'s);
    * ``extra_defaults`` (dict): the value of each ``FitResult.extras`` field for people who were
      not fitted (skipped or failed), so every output file has the same fields (default: none);
    * ``settings()`` -> JSON-able dict: what decides its fits, compared when a folder is resumed
      (:mod:`fit3d.pipeline.settings`; default: nothing but the name);
    * ``schedule`` (list of :class:`~fit3d.fitters.stages.Stage`): printed with the run.
    """

    def __call__(self, batch: PersonBatch) -> FitResult:
        """Fit the batch's people; raises ValueError for an empty batch or an unusable convention."""
        ...


def batch_size_for(fitter, device: str | torch.device, fallback: int = 64) -> int:
    """People per call for ``fitter`` (an instance or its class) on ``device``: its
    ``cuda_batch_size`` on a CUDA device, else (or without one) its ``default_batch_size``, else
    ``fallback``.

    The CPU sizes are the fastest on a 2-core CPU; the CUDA ones are chosen to fill a GPU within
    ~10 GiB (an H200, 2026-12-04: SMPLify 42 fits/s at 256 people and 742 at 4,096; EFT 273 at
    256 and 2,499 at 4,096, ~4.5 MiB of GPU memory per person with flip averaging; README,
    "GPU"). A batch that runs out of memory is fitted again in halves, and the run's later
    batches are no larger (:func:`fit3d.pipeline.batches.fit_people`).

    Raises:
        RuntimeError: ``device`` is no device name (``torch.device``'s error).
    """
    default = getattr(fitter, "default_batch_size", fallback)
    if torch.device(device).type == "cuda":
        return getattr(fitter, "cuda_batch_size", default)
    return default
