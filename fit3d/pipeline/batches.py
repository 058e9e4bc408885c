"""Fitting the people of a run in batches: :func:`fit_people` (a batch that raises is split and
retried), in this process or shared with worker processes (:class:`SharedFitting`, over a
:class:`~fit3d.pipeline.workers.FitterPool`)."""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from fit3d.data.batching import make_batch
from fit3d.data.records import ImageRecord, Person
from fit3d.devices import MemoryLimit, is_out_of_memory
from fit3d.fitters.base import batch_size_for
from fit3d.pipeline.interrupt import Interrupted
from fit3d.pipeline.workers import BrokenProcessPool, FitterPool, fitter_identity

if TYPE_CHECKING:  # (run.py imports this module)
    from fit3d.pipeline.runner import RunConfig

log = logging.getLogger(__name__)


def _failed(exc: BaseException, n: int) -> list[tuple]:
    """:func:`fit_people`'s output for ``n`` people whose batch failed with ``exc``."""
    return [(None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])] * n


def fit_people(fitter, people: list[Person], convention, config: RunConfig, device,
               memory: MemoryLimit | None = None) -> list[tuple]:
    """Fit people in batches; a batch that raises is split in halves and retried down to
    single people. The halves are retried after the failure is let go (only its message kept):
    its traceback held every tensor of the failed fit (a batch that ran out of GPU memory kept
    that memory while its halves were retried, a CUDA audit).

    Args:
        config: the run's; ``batch_size`` None: the fitter's on ``device``
            (:func:`~fit3d.fitters.base.batch_size_for`).
        memory: the run's :class:`MemoryLimit`: batches no larger than its size, lowered when a
            batch runs out of GPU memory (None: a new one for this call).
    Returns:
        one ``(FitResult, row)`` or ``(None, one-line failure reason)`` per person, in order.
    Raises:
        Interrupted: SIGINT/SIGTERM (never caught here).
    """
    out: list[tuple] = []
    memory = memory if memory is not None else MemoryLimit()
    size = config.batch_size or batch_size_for(fitter, device)

    def attempt(part: list[Person]) -> None:
        most = memory.cap(size)
        if len(part) > most:  # (the people, or a part cut before the limit was lowered)
            for s in range(0, len(part), most):
                attempt(part[s : s + most])
            return
        try:
            batch = make_batch(part, convention, focal_length=config.focal_length, device=device)
            res = fitter(batch).cpu()
            out.extend((res, j) for j in range(len(part)))
            return
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of one batch must not lose the run
            kind, text, failed = type(exc).__name__, str(exc), _failed(exc, 1)  # strings only: exc is let go here
            oom = is_out_of_memory(exc)
        batch = None  # noqa: F841 - (neither the failed batch is kept while the halves are fitted)
        if len(part) == 1:
            log.warning("fitting %s #%s failed: %s", part[0].image_key, part[0].annot_id, text)
            out.extend(failed)
            return
        if oom:
            memory.lower(len(part))
        else:
            log.warning("a batch of %d people failed (%s: %s): retrying in halves", len(part), kind, text)
        attempt(part[: len(part) // 2])
        attempt(part[len(part) // 2 :])

    if people:
        attempt(people)
    return out


#: A worker process's :class:`MemoryLimit`, kept over the batches it fits (each process has its own).
_WORKER_MEMORY = MemoryLimit()


def _fit_batch(fitter, body_model, people: list[Person], config: RunConfig) -> tuple[int, list[tuple]]:
    """:func:`fit_people` in a worker process (:class:`~fit3d.pipeline.workers.FitterPool`),
    with the worker's process id."""
    return os.getpid(), fit_people(fitter, people, body_model.keypoint_convention, config, body_model.device,
                                   _WORKER_MEMORY)


#: A run whose worker pool broke this many times fits its remaining batches in its own process.
MAX_POOL_RESTARTS = 2

#: Why the people of a batch lost with a worker are recorded as failed.
WORKER_DIED = "the worker process fitting this batch died; fitted again by the next run"
#: Why the people of a batch whose worker stopped answering are recorded as failed.
WORKER_HUNG = "the worker process fitting this batch stopped answering and was stopped; fitted again by the next run"

#: A worker's batch is given up as hung after ``HUNG_FACTOR`` times as long as the slowest batch of
#: the run so far took per person (any process's), and never before ``HUNG_MIN_SECONDS``; before any
#: batch has finished, never.
HUNG_FACTOR = 20.0
HUNG_MIN_SECONDS = 600.0


@dataclass
class _Batch:
    """One batch of a shared run: its images, :meth:`_Job.prepare`'s entries and the people to fit."""

    chunk: list[ImageRecord]
    entries: list[tuple]
    to_fit: list[Person]


class SharedFitting:
    """A run's batches shared by this process and a :class:`~fit3d.pipeline.workers.FitterPool`.

    Every batch waits in one queue. One feeder thread per worker waits until its worker has
    built its fitter, then hands it the next batch each time it has returned the last (so a
    worker never holds a batch another process could fit now); this process fits the next
    batch itself between recording finished ones. Only this process records and writes.

    A worker that dies breaks the pool: the batches the pool held are failures (their images
    are not written: the next run fits them again) and the pool is restarted. So does a worker
    that stops answering: a batch taking longer than :data:`HUNG_FACTOR` times the run's slowest
    time per person so far (at least :data:`HUNG_MIN_SECONDS`) is failed and its pool stopped
    (a deadlocked worker would otherwise hold the run forever). Workers that
    cannot start (they fail building their fitter) lose no batch. After
    :data:`MAX_POOL_RESTARTS` restarts this process fits the rest alone, with its threads
    as before. An interruption keeps the batches the workers have finished and stops them.

    ``job`` is the run's state (:mod:`fit3d.pipeline.runner`): ``prepare(chunk) -> (entries,
    to_fit)``, ``finish(chunk, entries, results)`` with :func:`fit_people`'s results for
    ``to_fit``, and its ``fitter``, ``conv``, ``config`` and ``body_model``.
    """

    def __init__(self, job, pool: FitterPool) -> None:
        self.job, self.pool = job, pool
        self.todo: collections.deque[_Batch] = collections.deque()
        self.done: queue.Queue = queue.Queue()  # (batch or None, results, why broken or None, generation)
        self.generation = self.restarts = self.left = self.threads_before = 0
        self.stop = threading.Event()
        self.feeders: list[threading.Thread] = []
        self.worker_pids: set[int] = set()  # the workers that returned a batch
        self.expected = fitter_identity(job.fitter)  # what every worker's fitter must be
        self.mismatch: str | None = None  # why the workers' fitter may not be used
        self.per_person = 0.0  # the slowest batch so far, seconds per person (0: none finished)

    def run(self, chunks: list[list[ImageRecord]], threads: int) -> None:
        """Fit and record every chunk; this process runs ``threads`` threads meanwhile.

        Raises:
            Interrupted, KeyboardInterrupt: as :func:`fit_people` (the finished batches recorded).
        """
        job = self.job
        self.todo.extend(_Batch(chunk, *job.prepare(chunk)) for chunk in chunks)
        self.left = len(self.todo)
        self.threads_before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            self.feed()
            while self.left:
                self.record(wait=False)
                batch = self.take()
                if batch is not None:
                    t0 = time.perf_counter()
                    results = fit_people(job.fitter, batch.to_fit, job.conv, job.config, job.body_model.device,
                                         job.memory)
                    self.timed(time.perf_counter() - t0, len(batch.to_fit))
                    self.finish(batch, results)
                elif self.left:
                    self.record(wait=True)
        except BaseException:
            self.stop.set()
            try:
                self.record(wait=False, interrupted=True)  # what the workers finished is kept
            finally:
                self.pool.close()  # the workers stop now, not after their batches
            raise
        finally:
            self.stop.set()
            torch.set_num_threads(self.threads_before)

    def take(self) -> _Batch | None:
        """The next batch to fit, or None when every batch has been taken."""
        try:
            return self.todo.popleft()
        except IndexError:
            return None

    def timed(self, seconds: float, people: int) -> None:
        """Note a finished batch's time (for :meth:`deadline`)."""
        self.per_person = max(self.per_person, seconds / max(people, 1))

    def deadline(self, people: int) -> float:
        """Seconds after which a worker's batch of ``people`` is given up as hung (inf until a
        batch has finished)."""
        if not self.per_person:
            return float("inf")
        return max(HUNG_MIN_SECONDS, HUNG_FACTOR * self.per_person * max(people, 1))

    def finish(self, batch: _Batch, results: list[tuple]) -> None:
        """Record a fitted batch (the run's ``job.finish``: counts and outputs) and count it done."""
        self.job.finish(batch.chunk, batch.entries, results)
        self.left -= 1

    def feed(self) -> None:
        """Start one feeder thread per worker of the current pool."""
        for ready in self.pool.started:
            t = threading.Thread(target=self.feeder, args=(self.generation, ready), daemon=True)
            t.start()
            self.feeders.append(t)

    def feeder(self, generation: int, ready) -> None:
        """Hand batches to the pool one at a time until none is left, the run stops or the pool
        of ``generation`` breaks. Every batch taken is put on ``done`` (with its results, or as
        broken), and a pool that could not start is reported without a batch."""
        try:
            identity = ready.result()
        except BaseException:  # noqa: BLE001 - the worker could not start: the main thread restarts the pool
            self.done.put((None, [], WORKER_DIED, generation))
            return
        if identity != self.expected:  # another fitter: its fits must not mix with this run's
            self.mismatch = (f"the worker processes' fitter ({identity[0]}) is not this run's ({self.expected[0]}, "
                             "or not with the same settings): the pool's recipe must build the fitter given to run()")
            self.done.put((None, [], WORKER_DIED, generation))
            return
        while not self.stop.is_set() and generation == self.generation:
            batch = self.take()
            if batch is None:
                return
            results, broken = [], None
            try:
                future = self.pool.submit(_fit_batch, batch.to_fit, self.job.config)
            except BaseException:  # noqa: BLE001 - a broken or closed pool
                broken = WORKER_DIED
            else:
                results, broken = self._wait(future, generation, len(batch.to_fit))
            self.done.put((batch, results, broken, generation))
            if broken:
                return

    def _wait(self, future, generation: int, n: int) -> tuple[list[tuple], str | None]:
        """``(results, why broken or None)`` of a batch of ``n`` people; a pool replaced or closed
        meanwhile counts as broken (its future may never be answered), and so does a batch past
        its :meth:`deadline` (:data:`WORKER_HUNG`)."""
        t0 = time.perf_counter()
        while True:
            try:
                pid, results = future.result(timeout=1.0)
                self.worker_pids.add(pid)
                self.timed(time.perf_counter() - t0, n)
                return results, None
            except (TimeoutError, FutureTimeout):  # (3.10: a future's timeout is not the built-in one)
                if generation != self.generation or self.stop.is_set():
                    return [], WORKER_DIED
                if time.perf_counter() - t0 > self.deadline(n):
                    log.warning("a worker process has fitted a batch of %d people for %.0f s, over %.0f times the "
                                "run's slowest time per person so far: giving it up as hung", n,
                                time.perf_counter() - t0, HUNG_FACTOR)
                    return [], WORKER_HUNG
            except (BrokenProcessPool, CancelledError):
                return [], WORKER_DIED
            except BaseException as e:  # noqa: BLE001 - e.g. a result that could not be sent back
                return _failed(e, n), None

    def record(self, wait: bool, interrupted: bool = False) -> None:
        """Record what the feeders have put on ``done`` (``wait``: wait for something first).
        ``interrupted``: only the batches the workers finished (the others are left for the
        next run, like the batch in flight of a single process)."""
        got = False
        while True:
            try:
                batch, results, broken, generation = (self.done.get(timeout=0.5) if wait and not got
                                                      else self.done.get_nowait())
            except queue.Empty:
                if wait and not got:
                    self._check_feeders()
                    continue  # (a timeout, so that Ctrl-C is seen)
                return
            got = True
            if broken and interrupted:
                continue
            if broken:
                self.broken(generation, started=batch is not None, hung=broken == WORKER_HUNG)
                if batch is None:
                    continue
                log.warning("%s", broken)
                results = [(None, broken)] * len(batch.to_fit)
            self.finish(batch, results)

    def _check_feeders(self) -> None:
        """A guard: waiting with no live feeder and nothing to record would wait forever.

        Raises:
            RuntimeError: batches are unaccounted for (a bug, not a fitting failure).
        """
        if not any(t.is_alive() for t in self.feeders) and self.done.empty() and not self.todo and self.left:
            raise RuntimeError(f"{self.left} batches were given to worker processes and never came back")

    def broken(self, generation: int, started: bool, hung: bool = False) -> None:
        """The pool of ``generation`` broke (``started``: mid-batch, else at start-up; ``hung``: a
        worker stopped answering): restart it once per break (stopping its workers), at most
        :data:`MAX_POOL_RESTARTS` times; then fit the rest here."""
        if generation != self.generation:
            return
        self.generation += 1
        self.restarts += 1
        if self.mismatch is not None:  # restarting builds the same fitter again
            log.warning("%s; this process fits the rest alone", self.mismatch)
            self.restarts = MAX_POOL_RESTARTS + 1
        elif self.restarts <= MAX_POOL_RESTARTS:
            log.warning("a worker process %s: starting the workers again",
                        "stopped answering" if hung else "died" if started else "could not start (its error is above)")
            self.pool.restart()
            self.feed()
            return
        else:
            log.warning("worker processes failed %d times: this process fits the rest alone", self.restarts)
        self.pool.close()
        torch.set_num_threads(self.threads_before)
