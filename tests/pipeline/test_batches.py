"""fit3d.pipeline.batches: a batch that runs out of GPU memory is fitted in halves, and the run's
later batches are no larger than what then fitted."""

import logging

import torch

from fit3d.data.readers import read_coco
from fit3d.devices import MemoryLimit
from fit3d.pipeline import RunConfig, run
from fit3d.pipeline.batches import fit_people


def _people(sample_copy, n):
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    people = [p for r in images for p in r.people if p.num_visible >= 6]
    return (people * n)[:n]


OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (simulated)"


def _small_gpu(fast_fitter, most, tried, error=torch.cuda.OutOfMemoryError, message=OOM):
    """A fitter that fails above ``most`` people (``error(message)``: out of memory by default),
    recording each batch size."""
    def fit(batch):
        tried.append(len(batch))
        if len(batch) > most:
            raise error(message)
        return fast_fitter(batch)
    return fit


def test_after_running_out_of_memory_no_batch_tries_more_again(sample_copy, anny_model, fast_fitter, caplog):
    tried = []
    fitter = _small_gpu(fast_fitter, 2, tried)
    memory = MemoryLimit()
    conv, config = anny_model.keypoint_convention, RunConfig("unused", batch_size=8)
    with caplog.at_level(logging.WARNING, logger="fit3d.devices"):
        first = fit_people(fitter, _people(sample_copy, 8), conv, config, "cpu", memory)
    assert tried == [8, 4, 2, 2, 2, 2] and memory.size == 2  # 8 and 4 ran out: at most 2 from then on
    assert "ran out of GPU memory: this run fits at most 2 per batch" in caplog.text
    tried.clear()
    second = fit_people(fitter, _people(sample_copy, 8), conv, config, "cpu", memory)  # the run's next batch
    assert tried == [2, 2, 2, 2]  # (without the limit: 8 and 4 would run out again first)
    assert all(r is not None for r, _ in first + second) and len(first) == len(second) == 8


def test_other_failures_leave_the_batch_size_alone(sample_copy, anny_model, fast_fitter):
    tried = []
    memory = MemoryLimit()
    fitter = _small_gpu(fast_fitter, 2, tried, RuntimeError, "linalg.svd: the algorithm failed to converge")
    fit_people(fitter, _people(sample_copy, 4), anny_model.keypoint_convention, RunConfig("unused", batch_size=4),
               "cpu", memory)
    assert tried == [4, 2, 2] and memory.size is None


def test_a_cuda_librarys_failed_allocation_counts_as_out_of_memory(sample_copy, anny_model, fast_fitter):
    """cuBLAS and cuSOLVER say so in a RuntimeError, not torch's OutOfMemoryError."""
    for message in ("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
                    "CUDA error: out of memory"):
        tried = []
        memory = MemoryLimit()
        fit_people(_small_gpu(fast_fitter, 2, tried, RuntimeError, message), _people(sample_copy, 4),
                   anny_model.keypoint_convention, RunConfig("unused", batch_size=4), "cpu", memory)
        assert memory.size == 2, message


def test_a_worker_process_keeps_its_limit_over_its_batches(sample_copy, anny_model, fast_fitter):
    """``--workers N``: each worker fits many batches of the run (its own MemoryLimit, kept)."""
    import fit3d.pipeline.batches as batches

    tried = []
    fitter = _small_gpu(fast_fitter, 2, tried)
    config = RunConfig("unused", batch_size=4)
    mine = batches.MemoryLimit()
    batches._WORKER_MEMORY, before = mine, batches._WORKER_MEMORY
    try:
        batches._fit_batch(fitter, anny_model, _people(sample_copy, 4), config)
        tried.clear()
        batches._fit_batch(fitter, anny_model, _people(sample_copy, 4), config)
    finally:
        batches._WORKER_MEMORY = before
    assert tried == [2, 2] and mine.size == 2


def test_a_run_remembers_its_memory_limit_over_its_batches(tmp_path, sample_copy, anny_model, fast_fitter):
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    tried = []
    fitter = _small_gpu(fast_fitter, 1, tried)
    s = run(images, fitter, anny_model, RunConfig(tmp_path / "out", batch_size=2, progress=False), problems)
    assert s["this_run"]["people_failed"] == 0 and s["this_run"]["people_fitted"] > 2
    first = next(i for i, n in enumerate(tried) if n > 1)  # the first batch ran out of memory ...
    assert tried[first + 1:] and set(tried[first + 1:]) == {1}  # ... and every later one was fitted one by one
    assert s["batch_size"] == 2 and s["batch_size_lowered_to"] == 1  # (what ran, beside what was asked)
