"""Fitting batches in worker processes on the CPU (``fit3d eft|smplify --workers``).

A fit is thousands of small tensor operations per iteration, too small for torch's
intra-op threads to share well: on 2 cores, two processes of one thread each fit about
1.3x the people per second of one process of two threads (README, "Throughput"). So a
run on the CPU shares its batches with worker processes (the standard library's
:class:`~concurrent.futures.ProcessPoolExecutor`, started with ``spawn``), each of which
builds the same fitter once from a picklable :class:`FitterRecipe`; the calling process
fits batches too, and every process runs ``cores // workers`` threads. The calling
process keeps everything else (reading, the per-image outputs, the summary), so a run's
outputs are those of a single process.

A worker that dies (killed, out of memory) breaks the pool: the batches the pool held are
recorded as failed (their images are not written, so the next run fits them again) and a
new pool takes the rest. Workers ignore SIGINT (Ctrl-C reaches the whole process group):
the calling process stops them when it is interrupted. A worker's log records (a failed
person, a batch retried in halves) go to the calling process's logging (the standard library's
:class:`~logging.handlers.QueueHandler` over a :class:`multiprocessing.SimpleQueue`), so they read
as the calling process's own: with the command line's prefix, above its progress bar. Their
warnings (:mod:`warnings`) are filtered by the calling process's filters and shown by it, each once
(:mod:`fit3d.pipeline.worker_warnings`), but a set-up's warning about the weights
(:class:`~fit3d.body_models.weights.ReducedSetupWarning`), which the calling process gave already
when it built its own fitter from the same weights.

Measured on 2 cores only (README, "Throughput"); how many processes pay on a larger
machine was not measured.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: ``--workers auto`` uses at most this many processes (each holds its own body model and
#: fitter: ~0.5-0.8 GB on the CPU).
MAX_AUTO_WORKERS = 8
#: ``--workers auto`` adds a process per this many people: starting one (Python, torch, the
#: model) takes ~6 s on one core here, ~16 s of fitting at ~12 EFT fits/s (on 92 people in 2
#: batches a second process was slower: 15.0 against 13.6 s whole process).
PEOPLE_PER_PROCESS = 200

__all__ = ["BrokenProcessPool", "FitterPool", "FitterRecipe", "MAX_AUTO_WORKERS", "PEOPLE_PER_PROCESS",
           "available_cores", "fitter_identity", "plan_workers"]


@dataclass(frozen=True)
class FitterRecipe:
    """How a worker process builds the fitter the calling process built: the body model's
    arguments (:func:`fit3d.body_models.build_body_model`) and ``make_fitter(body)``, which
    must be picklable (a module-level function or a :func:`functools.partial` of one, e.g.
    ``partial(build_eft, steps=30)``; not a lambda)."""

    model: str
    model_path: Path | None
    gender: str
    device: str
    make_fitter: Callable

    def build(self):
        """``(fitter, body_model)``, built in this process."""
        from fit3d.body_models import build_body_model

        body = build_body_model(self.model, self.model_path, gender=self.gender, device=self.device)
        return self.make_fitter(body), body


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_workers(workers: int | None, device: str, batches: int, people: int,
                 cores: int | None = None) -> tuple[int, int]:
    """``(processes, threads per process)`` for a run of ``people`` people in ``batches``
    batches; the processes are the calling one and ``processes - 1`` workers.

    ``workers`` None (``--workers auto``): on the CPU one process per core, at most
    :data:`MAX_AUTO_WORKERS`, one per batch and one per :data:`PEOPLE_PER_PROCESS` people
    (a process takes seconds to start); elsewhere (a GPU) 1. An explicit number is capped at
    ``batches`` only. Threads: ``cores // processes``, at least 1. 1 process means fitting
    in the calling process alone (threads: torch's own default, returned as 0).
    """
    cores = cores or available_cores()
    if workers is None:
        workers = (min(cores, MAX_AUTO_WORKERS, people // PEOPLE_PER_PROCESS)
                   if str(device).startswith("cpu") else 1)
    workers = max(1, min(workers, batches))
    if workers == 1:
        return 1, 0
    return workers, max(1, cores // workers)


_FITTER = None
_BODY = None


def _start_worker(recipe: FitterRecipe, threads: int, log_queue=None, log_level: int = logging.WARNING,
                  warning_filters: list | None = None) -> None:
    """Worker initialiser: ignore Ctrl-C (the caller stops the pool; SIGINT was blocked from the
    start, see :meth:`FitterPool._start`), exit when the caller dies, send log records of
    ``log_level`` and above and the warnings that ``warning_filters`` (the caller's,
    :func:`~fit3d.pipeline.worker_warnings.portable_filters`) let through to ``log_queue`` (the
    caller's :class:`_LogForwarder`), set the thread count, build the fitter."""
    import torch

    global _FITTER, _BODY
    if log_queue is not None:  # (they went to stderr through logging's last resort: no prefix, onto the bar)
        import warnings

        from fit3d.body_models.weights import ReducedSetupWarning
        from fit3d.pipeline.worker_warnings import apply_filters, send_warning

        root = logging.getLogger()
        root.handlers = [_SendNow(log_queue)]
        root.setLevel(log_level)
        if warning_filters is not None:
            apply_filters(warning_filters)
        warnings.showwarning = send_warning  # (they went to this process's stderr, in each worker)
        warnings.filterwarnings("ignore", category=ReducedSetupWarning)  # the caller said it of the same weights
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    parent = multiprocessing.parent_process()
    if parent is not None:  # a caller killed outright (SIGKILL, out of memory) leaves no orphan
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()
    torch.set_num_threads(threads)
    _FITTER, _BODY = recipe.build()


def _exit_with(sentinel) -> None:
    """Exit this worker when ``sentinel`` (its parent process) is gone."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def fitter_identity(fitter) -> tuple:
    """``(name, settings)``: what a worker's fitter must share with the calling process's for
    their fits to mix in one run (``fitter.settings()`` where the fitter has it, else None)."""
    from fit3d.fitters.describe import fitter_settings

    return getattr(fitter, "name", None), fitter_settings(fitter)


def _ready() -> tuple:
    """Worker task that makes the executor start a process; returns its fitter's :func:`fitter_identity`."""
    return fitter_identity(_FITTER)


def _call(fn: Callable, args: tuple):
    """Worker task: ``fn(fitter, body_model, *args)``."""
    return fn(_FITTER, _BODY, *args)


def unspawnable_main() -> str | None:
    """Why spawned worker processes cannot start from this program, or None when they can: a
    script read from standard input (``python - < x.py``) names its main module ``<stdin>``,
    which each spawned process would import again and cannot (a notebook, ``python -c`` and a
    script file are fine)."""
    import sys

    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if path is not None and not os.path.exists(path):
        return (f"worker processes cannot start from a program read from {path} (each would import it again): "
                "this process fits alone (save the script to a file to use them)")
    return None


class _SendNow(logging.handlers.QueueHandler):
    """A worker's handler: each record written to the pipe before the logging call returns (a
    :class:`multiprocessing.SimpleQueue`: no feeder thread, so a task's records are sent before its
    result, and none is left behind when the pool stops the worker; a review found the last ones lost)."""

    def enqueue(self, record: logging.LogRecord) -> None:
        self.queue.put(record)


class _LogForwarder:
    """The calling process's end of its workers' log records: a daemon thread hands each record
    from ``queue`` (a :class:`multiprocessing.SimpleQueue`) to the logger of its name here (so this
    process's handlers, levels and filters apply) until :meth:`stop`. Nothing is ever written to
    the queue from this process: a worker killed while it wrote holds the queue's write lock for
    good (a review: a stop sentinel waited on it, and the interpreter's exit on that). The workers'
    warnings are shown here, each once for the forwarder's life
    (:class:`~fit3d.pipeline.worker_warnings.ShownOnce`)."""

    def __init__(self, queue) -> None:
        from fit3d.pipeline.worker_warnings import ShownOnce

        self.queue = queue
        self._warnings = ShownOnce()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._forward, name="fit3d-worker-logs", daemon=True)
        self._thread.start()

    def _forward(self) -> None:
        while True:
            try:
                if self.queue.empty():
                    if self._stopping.is_set():
                        return
                    self._stopping.wait(0.05)
                    continue
                record = self.queue.get()
            except (EOFError, OSError):  # the queue closed under it
                return
            except Exception:  # noqa: BLE001 - a record this process cannot rebuild (an extra= it cannot
                continue  # unpickle): skipped; a thread that ended here left the workers' writes blocked
            try:
                if hasattr(record, "fit3d_warning"):
                    self._warnings.show(record)
                else:
                    logging.getLogger(record.name).handle(record)
            except Exception:  # noqa: BLE001 - (a filter or a warnings hook that raises): as above
                continue

    def stop(self, timeout: float = 2.0) -> None:
        """Forward what the workers wrote, then stop; waits at most ``timeout`` s (a worker killed
        while it wrote a record leaves half a message, which the thread would wait on forever: it is a
        daemon, and the queue has no thread that the interpreter's exit joins)."""
        self._stopping.set()
        self._thread.join(timeout)


class FitterPool:
    """``workers`` worker processes (besides the caller), each holding the fitter of ``recipe``
    and running ``threads`` threads.

    The workers start at once (see ``started``). :meth:`submit` ``(fn, *args)`` runs ``fn(fitter, body_model,
    *args)`` in a worker and returns its :class:`~concurrent.futures.Future` (``fn`` and
    ``args`` are pickled: ``fn`` must be a module-level function). Its ``result()`` (or the
    next ``submit``) raises :class:`BrokenProcessPool` when a worker died; :meth:`restart`
    then gives a fresh pool. Use as a context manager: leaving it closes the pool (:meth:`close`).

    Raises:
        ValueError: ``workers`` or ``threads`` < 1.
    """

    def __init__(self, recipe: FitterRecipe, workers: int, threads: int) -> None:
        if workers < 1 or threads < 1:
            raise ValueError(f"a FitterPool needs at least 1 worker and 1 thread, not {workers} and {threads}")
        self.recipe, self.workers, self.threads = recipe, workers, threads
        self.started: list[Future] = []
        self._procs: list = []
        #: why no worker can start here (None: they can): a run given this pool fits alone and says so
        self.unusable = unspawnable_main()
        self._executor = self._start() if self.unusable is None else None

    def _start(self) -> ProcessPoolExecutor:
        """A new executor whose workers start now (building a fitter takes seconds: they do it
        while the caller builds its own), not at the first task; ``started`` holds one future
        per worker, answered once a worker has built its fitter (``BrokenProcessPool`` when
        they could not). The workers are spawned with SIGINT blocked, so that a Ctrl-C while
        they import does not stop them with a traceback each (they ignore it once started)."""
        from fit3d.pipeline.worker_warnings import portable_filters

        context = multiprocessing.get_context("spawn")
        self._logs = _LogForwarder(context.SimpleQueue())
        ex = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start_worker,
                                 initargs=(self.recipe, self.threads, self._logs.queue,
                                           logging.getLogger().getEffectiveLevel(), portable_filters()))
        mask = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if mask else None
        try:  # the executor starts one process per task submitted
            self.started = [ex.submit(_ready) for _ in range(self.workers)]
        finally:
            if old is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
        # The executor has no public way to stop running tasks before Python 3.14
        # (terminate_workers), so its processes are kept from its process table.
        self._procs = list((getattr(ex, "_processes", None) or {}).values())
        return ex

    def submit(self, fn: Callable, *args) -> Future:
        """Run ``fn(fitter, body_model, *args)`` in a worker.

        Raises:
            BrokenProcessPool: a worker has died (:meth:`restart`). RuntimeError: no worker can
                start here (:attr:`unusable`)."""
        if self._executor is None:
            raise RuntimeError(self.unusable)
        return self._executor.submit(_call, fn, args)

    def restart(self) -> None:
        """Replace a broken pool (its pending tasks are lost: their futures have failed)."""
        self.close()
        if self.unusable is None:
            self._executor = self._start()

    def close(self) -> None:
        """Shut the pool down and stop its workers at once, running tasks included (they hold
        nothing to save: an interrupted run, a broken pool, or idle workers at the end)."""
        if self._executor is None:  # (never started: :attr:`unusable`)
            return
        self._executor.shutdown(wait=False, cancel_futures=True)
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():  # (one that does not stop on SIGTERM)
                p.kill()
                p.join(timeout=10)
        self._logs.stop()

    def __enter__(self) -> FitterPool:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
