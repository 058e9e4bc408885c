"""Batches shared with worker processes (fit3d.pipeline.workers): same outputs as one process,
a dying worker fails only its batches, an interruption stops the workers."""

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from fit3d.data.readers import read_coco
from fit3d.data.writers import fit_files, read_fit
from fit3d.fitters import SMPLify
from fit3d.pipeline import RunConfig, run
from fit3d.pipeline.interrupt import Interrupted
from fit3d.pipeline import batches
from fit3d.pipeline.batches import WORKER_DIED
from fit3d.pipeline.workers import (MAX_AUTO_WORKERS, PEOPLE_PER_PROCESS, FitterPool, FitterRecipe, fitter_identity,
                                   plan_workers)

from .conftest import FAST


@pytest.fixture()
def one_thread():
    """This process on one thread, as a shared run sets it (and as it restores it when it gives
    the workers up): one person per batch is several times slower on two threads here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _recipe(**kw):
    spec = dict(model="anny", model_path=None, gender="neutral", device="cpu",
                make_fitter=partial(SMPLify, schedule=FAST, depth_flips=False))
    return FitterRecipe(**{**spec, **kw})


def _params(out):
    recs = {}
    for f in fit_files(out):
        d = read_fit(f)
        for i, a in enumerate(d["annot_id"]):
            recs[int(a)] = (str(d["status"][i]), d["body_pose"][i], d["betas"][i], d["transl"][i])
    return recs


def test_plan_workers():
    assert plan_workers(None, "cpu", batches=8, people=500, cores=2) == (2, 1)
    assert plan_workers(None, "cpu", batches=1, people=500, cores=2) == (1, 0)  # one batch: fitted here
    assert plan_workers(None, "cpu", batches=2, people=92, cores=2) == (1, 0)  # too few people to pay a start
    assert plan_workers(None, "cpu", batches=3, people=3 * PEOPLE_PER_PROCESS, cores=64) == (3, 21)
    assert plan_workers(None, "cpu", batches=100, people=10**5, cores=64) == (MAX_AUTO_WORKERS, 64 // MAX_AUTO_WORKERS)
    assert plan_workers(None, "cuda", batches=100, people=10**5, cores=16) == (1, 0)
    assert plan_workers(3, "cpu", batches=2, people=10, cores=12) == (2, 6)  # never more processes than batches
    assert plan_workers(4, "cuda:0", batches=10, people=10, cores=2) == (4, 1)  # asked for: at least one thread each
    assert plan_workers(1, "cpu", batches=10, people=10**5, cores=8) == (1, 0)


class _WaitForWorkers:
    """The pipeline's fitter, fitting only once the pool's current workers are ready or failed to
    start (so that they take part: without it this process fits the few test batches first)."""

    def __init__(self, inner, pool):
        self.inner, self.pool = inner, pool
        self.schedule, self.extra_defaults, self.name = inner.schedule, inner.extra_defaults, inner.name

    def settings(self):
        return self.inner.settings()

    def __call__(self, batch):
        for f in self.pool.started:
            f.exception(timeout=120)
        return self.inner(batch)



def _shared_run(recipe, images, problems, anny_model, fast_fitter, out):
    """``run`` of ``fast_fitter`` with one worker built from ``recipe``, a batch per person."""
    with FitterPool(recipe, 1, 1) as pool:
        return run(images, _WaitForWorkers(fast_fitter, pool), anny_model,
                   RunConfig(out, batch_size=1, progress=False), problems, pool=pool)

def test_shared_run_writes_what_one_process_writes(tmp_path, sample_copy, anny_model, fast_fitter):
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the shared run: the same arithmetic
    try:
        one = run(images, fast_fitter, anny_model, RunConfig(tmp_path / "one", batch_size=3, progress=False),
                  problems)
    finally:
        torch.set_num_threads(threads)
    with FitterPool(_recipe(), 1, 1) as pool:
        two = run(images, _WaitForWorkers(fast_fitter, pool), anny_model,
                  RunConfig(tmp_path / "two", batch_size=3, progress=False), problems, pool=pool)
    assert torch.get_num_threads() == threads  # restored after the run
    assert one["processes"] == 1 and two["processes"] == 2 and two["threads_per_process"] == 1  # (the worker fitted)
    for k in ("people_fitted", "people_valid", "people_skipped", "images_written", "exit_code"):
        assert one["this_run"][k] == two["this_run"][k], k
    a, b = _params(tmp_path / "one"), _params(tmp_path / "two")
    assert a.keys() == b.keys() and len(a) >= 12
    for k in a:
        assert a[k][0] == b[k][0]
        for x, y in zip(a[k][1:], b[k][1:]):  # (not bit for bit: a process that computed on two threads and
            # then on one sums otherwise than one on one thread from its start, by up to 4e-6 on a CPU with
            # AMX, 2026-12-04; the same fits)
            assert np.allclose(x, y, rtol=0, atol=1e-4, equal_nan=True), k


def test_workers_that_cannot_start_lose_no_batch(tmp_path, sample_copy, anny_model, fast_fitter, caplog,
                                                one_thread, monkeypatch):
    """Workers that fail building their model: restarted once, then this process fits everything."""
    monkeypatch.setattr(batches, "MAX_POOL_RESTARTS", 1)
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    s = _shared_run(_recipe(model="smpl", model_path=tmp_path / "missing.pkl"), images, problems, anny_model,
                    fast_fitter, tmp_path / "fits")
    r = s["this_run"]
    assert r["images_written"] == 4 and r["people_failed"] == 0 and r["exit_code"] == 0
    assert s["processes"] == 1  # (no worker fitted anything)
    assert "could not start" in caplog.text and "fits the rest alone" in caplog.text


def test_a_script_read_from_standard_input_fits_alone_and_says_why(tmp_path, sample_copy, anny_model, fast_fitter,
                                                                   caplog, one_thread, monkeypatch):
    """Found by a trial of the README: `python - < x.py` spawned workers that each failed with a traceback
    (they import the main module again: '<stdin>'), restarted twice, and no line said why."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__file__="<stdin>"))
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    with FitterPool(_recipe(), 1, 1) as pool:
        assert "read from <stdin>" in pool.unusable and pool.started == [] and pool._procs == []  # none spawned
        s = run(images, fast_fitter, anny_model, RunConfig(tmp_path / "fits", batch_size=3, progress=False),
                problems, pool=pool)
    assert s["this_run"]["images_written"] == 4 and s["this_run"]["exit_code"] == 0 and s["processes"] == 1
    assert "cannot start from a program read from <stdin>" in caplog.text and "could not start" not in caplog.text


def test_a_worker_that_dies_mid_batch_fails_its_batch_and_the_next_run_fits_it(tmp_path, sample_copy, anny_model,
                                                                              fast_fitter, monkeypatch, one_thread):
    """One worker start (no restart: that path is the test above's): it dies on its first batch."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "fixtures"))  # (inherited by the workers)
    monkeypatch.setattr(batches, "MAX_POOL_RESTARTS", 0)
    from dying_fitter import DiesInWorker

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    config = RunConfig(out, batch_size=1, progress=False)  # a batch per image
    with FitterPool(_recipe(make_fitter=partial(DiesInWorker, identity=fitter_identity(fast_fitter))), 1, 1) as pool:
        s = run(images, _WaitForWorkers(fast_fitter, pool), anny_model, config, problems, pool=pool)
    r = s["this_run"]
    assert r["images_failed"] == 1 and r["images_written"] == 3 and r["exit_code"] == 5
    assert r["people_failed"] >= 1 and all(f["reason"] == WORKER_DIED for f in r["failures"])
    s = run(images, fast_fitter, anny_model, config, problems)
    assert s["this_run"]["images_already_done"] == 3 and s["this_run"]["exit_code"] == 0
    assert len(fit_files(out)) == 4


def test_a_worker_that_stops_answering_is_stopped_and_its_batch_failed(tmp_path, sample_copy, anny_model,
                                                                     fast_fitter, monkeypatch, one_thread):
    """A worker that never returns its batch (a deadlock) is given up once the batch has taken
    HUNG_FACTOR times the run's slowest time per person (here: 2 s at least), and stopped."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "fixtures"))
    monkeypatch.setattr(batches, "MAX_POOL_RESTARTS", 0)
    monkeypatch.setattr(batches, "HUNG_MIN_SECONDS", 2.0)
    monkeypatch.setattr(batches, "HUNG_FACTOR", 1.0)
    from dying_fitter import HangsInWorker

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    config = RunConfig(out, batch_size=1, progress=False)  # a batch per image
    pool = FitterPool(_recipe(make_fitter=partial(HangsInWorker, identity=fitter_identity(fast_fitter))), 1, 1)
    procs = list(pool._procs)
    with pool:
        s = run(images, _WaitForWorkers(fast_fitter, pool), anny_model, config, problems, pool=pool)
    r = s["this_run"]
    assert r["images_failed"] == 1 and r["images_written"] == 3 and r["exit_code"] == 5
    assert r["people_failed"] >= 1 and all(f["reason"] == batches.WORKER_HUNG for f in r["failures"])
    assert procs and not any(p.is_alive() for p in procs)


def test_workers_building_another_fitter_are_not_used(tmp_path, sample_copy, anny_model, fast_fitter, caplog,
                                                      one_thread):
    """A pool whose recipe builds another fitter (here another schedule) than the one given to
    run(): its fits would mix into the folder, so this process fits everything, saying why."""
    from dataclasses import replace

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    other = partial(SMPLify, schedule=[replace(st, iterations=st.iterations + 1) for st in FAST], depth_flips=False)
    s = _shared_run(_recipe(make_fitter=other), images, problems, anny_model, fast_fitter, tmp_path / "fits")
    r = s["this_run"]
    assert r["images_written"] == 4 and r["people_fitted"] == 12 and r["exit_code"] == 0
    assert s["processes"] == 1  # (no worker fitted anything)
    assert "is not this run's" in caplog.text and "fits the rest alone" in caplog.text


class _Interrupting:
    """A fitter interrupted (SIGTERM) on its first call."""

    def __init__(self, inner):
        self.schedule, self.extra_defaults = inner.schedule, inner.extra_defaults

    def __call__(self, batch):
        raise Interrupted(15)


def test_an_interrupted_shared_run_stops_its_workers(tmp_path, sample_copy, anny_model, fast_fitter):
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    pool = FitterPool(_recipe(), 1, 1)
    procs = list(pool._procs)
    s = run(images, _Interrupting(fast_fitter), anny_model, RunConfig(tmp_path / "fits", batch_size=3,
                                                                      progress=False), problems, pool=pool)
    assert s["this_run"]["interrupted"] and s["this_run"]["exit_code"] == 143
    assert procs and not any(p.is_alive() for p in procs)
    assert not list((tmp_path / "fits").glob(".*.tmp"))


def test_a_pool_needs_a_worker():
    for workers, threads in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match="at least 1"):
            FitterPool(_recipe(), workers, threads)


def test_a_future_s_timeout_is_waited_through_whatever_its_class(monkeypatch):
    """Found by a review: on Python 3.10 a future's timeout is concurrent.futures.TimeoutError, not the
    built-in one, so every worker batch longer than the 1 s poll was recorded as failed."""
    import threading

    from fit3d.pipeline import batches

    class OldTimeout(Exception):  # as Python 3.10's concurrent.futures.TimeoutError
        pass

    monkeypatch.setattr(batches, "FutureTimeout", OldTimeout)

    class SlowFuture:
        calls = 0

        def result(self, timeout=None):
            SlowFuture.calls += 1
            if SlowFuture.calls < 3:
                raise OldTimeout()
            return 123, ["done"]

    shared = batches.SharedFitting.__new__(batches.SharedFitting)
    shared.generation, shared.stop, shared.worker_pids, shared.per_person = 0, threading.Event(), set(), 0.0
    assert shared._wait(SlowFuture(), 0, 1) == (["done"], None) and shared.worker_pids == {123}


def _warn_here(fitter, body_model, text, count=1):
    """Worker task: log ``count`` warnings as fit3d's batches do (a failed person), and say which process."""
    import logging
    import os

    for _ in range(count):
        logging.getLogger("fit3d.pipeline.batches").warning(text)
    logging.getLogger("fit3d.pipeline.batches").debug("below the caller's level")
    return os.getpid()


def test_a_workers_log_records_reach_the_calling_process_logging(caplog):
    """They went to the worker's stderr through logging's last resort: without the command line's
    prefix, and onto its progress bar (a review)."""
    import os

    with caplog.at_level("WARNING"):
        with FitterPool(_recipe(), 1, 1) as pool:
            pid = pool.submit(_warn_here, "a warning in a worker").result(timeout=300)
            # the last task's records, the pool stopped as soon as its result is in (a trial: with a
            # queue's feeder thread most were lost, and a worker stopped mid-write hung the exit)
            long = "x" * 5000
            pool.submit(_warn_here, long, 20).result(timeout=300)
    assert pid != os.getpid()
    records = [r.getMessage() for r in caplog.records if r.name == "fit3d.pipeline.batches"]
    assert records == ["a warning in a worker"] + [long] * 20


class _TwoArguments(Exception):
    """Pickles (its args: one string) but does not unpickle: its constructor takes two."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


def _warn_with_an_extra_that_does_not_unpickle(fitter, body_model, count):
    import logging

    log = logging.getLogger("fit3d.pipeline.batches")
    log.warning("with an odd extra", extra={"odd": _TwoArguments(1, 2)})
    for i in range(count):
        log.warning("record %d %s", i, "y" * 1000)
    return count


def test_a_record_the_caller_cannot_rebuild_is_skipped_and_the_rest_still_arrive(caplog):
    """A review: the caller's reading thread ended on it, the pipe filled, and the worker's next
    logging call blocked for good (the task never returned)."""
    with caplog.at_level("WARNING"):
        with FitterPool(_recipe(), 1, 1) as pool:
            assert pool.submit(_warn_with_an_extra_that_does_not_unpickle, 200).result(timeout=120) == 200
    got = [r.getMessage() for r in caplog.records if r.name == "fit3d.pipeline.batches"]
    assert len(got) == 200 and got[-1].startswith("record 199 ")


def _warn_as_python_does(fitter, body_model):
    """Worker task: a library's warning (twice, one line: the worker's filters say it once), two the
    caller silenced (by message; by category and module), and a set-up's warning about the weights,
    which the caller gives itself."""
    import warnings

    from fit3d.body_models.weights import ReducedSetupWarning

    with warnings.catch_warnings():  # (as fit3d's image reading does: this worker says its warnings again)
        pass
    for _ in range(2):
        warnings.warn("a library's warning in a worker", RuntimeWarning)
    warnings.warn("a worker's silenced warning", UserWarning)
    warnings.warn("a worker's deprecation, silenced by module", DeprecationWarning)
    warnings.warn("the weights come from a reduced set-up", ReducedSetupWarning)
    return 1


def test_a_workers_warnings_are_filtered_and_shown_by_the_calling_process_once():
    """They went to each worker's own stderr (a left-out item), once per worker, past the caller's
    filters (a spawned worker has the interpreter's defaults); a first version issued them again in
    the caller, where filters by module did not match and any catch_warnings() (fit3d reads each
    image in one) made them said again (a review). The set-up's warning is the caller's to give (it
    built its fitter from the same weights)."""
    import warnings

    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", message="a worker's silenced")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(tests\.pipeline\.)?test_workers$")
        with FitterPool(_recipe(), 2, 1) as pool:
            assert [f.result(timeout=300) for f in [pool.submit(_warn_as_python_does) for _ in range(4)]] == [1] * 4
            with warnings.catch_warnings():  # (clears the warnings registries)
                pass
            assert [f.result(timeout=300) for f in [pool.submit(_warn_as_python_does) for _ in range(4)]] == [1] * 4
    said = [(w.category, str(w.message)) for w in got if "worker" in str(w.message) or "set-up" in str(w.message)]
    assert said == [(RuntimeWarning, "a library's warning in a worker")]


def test_a_warning_the_caller_made_an_error_raises_in_the_worker_as_in_the_caller():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with FitterPool(_recipe(), 1, 1) as pool:
            with pytest.raises(RuntimeWarning, match="a library's warning"):
                pool.submit(_warn_as_python_does).result(timeout=300)
