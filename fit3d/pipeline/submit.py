"""Sharded fitting runs on a cluster through submitit (SLURM job arrays), or as local
processes with the same code path (``cluster="local"``, used by the tests).

Each array task runs ``fit3d <command> <options> --shard i/n`` in-process; outputs
already written are skipped, so a task that is preempted or times out is requeued by
submitit (:meth:`ShardJob.checkpoint`) and resumes. NeuralAnnot trains one network on
the whole set, so it is one job of several tasks (one per GPU) that form a
``torch.distributed`` group (submitit's ``TorchDistributedEnvironment``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: Commands that ``fit3d submit`` can run.
COMMANDS = ("smplify", "eft", "neuralannot")


@dataclass
class SubmitConfig:
    """Where and how the jobs run.

    Attributes:
        jobs: array tasks (shards); 1 for NeuralAnnot.
        cluster: ``"slurm"``, ``"local"`` (processes on this machine) or None (submitit's
            guess: SLURM when ``sbatch`` exists).
        logs: submitit's folder (job scripts, pickles, stdout/stderr per task).
        partition: SLURM partition. gpus_per_job: GPUs per task's node. cpus_per_job,
            mem_gb, time_min: resources.
        ranks: NeuralAnnot's number of ``torch.distributed`` ranks (tasks of its one job;
            default: ``gpus_per_job``, at least 1).
        max_parallel: at most this many array tasks at once (None: no limit).
        slurm_args: extra ``sbatch`` options (``{"account": "abc"}``).
    Raises:
        ValueError: ``partition``, ``max_parallel`` or ``slurm_args`` with a cluster other than
            SLURM (submitit's local executor starts every task at once and has no partition:
            they were ignored in silence).
    """

    jobs: int = 1
    cluster: str | None = "slurm"
    logs: Path = Path("fit3d_jobs")
    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int | None = None
    mem_gb: int | None = None
    time_min: int = 240
    max_parallel: int | None = None
    slurm_args: dict = field(default_factory=dict)
    ranks: int | None = None

    def __post_init__(self) -> None:
        if self.cluster not in (None, "slurm"):
            self.check_slurm_only(self.cluster)

    def check_slurm_only(self, cluster: str) -> None:
        """Refuse the SLURM-only settings for ``cluster`` (see the class's Raises)."""
        given = [name for name, value in (("--slurm-partition", self.partition), ("--max-parallel", self.max_parallel),
                                          ("--slurm-arg", self.slurm_args)) if value]
        if cluster != "slurm" and given:
            raise ValueError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to SLURM only: with "
                             f"--cluster {cluster} every task starts at once on this machine (give fewer --jobs "
                             "to run fewer at a time)")


class ShardJob:
    """``fit3d <args>`` run in a submitit task; picklable.

    ``entry``: the command line's entry point, ``entry(args) -> exit code`` (``fit3d.cli.main.run``,
    given by the command line, which this layer does not import; a module-level function, so
    that the job pickles). Calling the job returns the command's exit code (see
    :mod:`fit3d.pipeline.summary`). ``distributed`` tasks export submitit's ``torch.distributed``
    environment first.
    """

    def __init__(self, args: list[str], entry: Callable[[list[str]], int], distributed: bool = False,
                 cuda_devices: str | None = None) -> None:
        self.args, self.entry, self.distributed = list(args), entry, distributed
        self.cuda_devices = cuda_devices

    def __call__(self) -> int:
        """Run the command in this task (after exporting submitit's ``torch.distributed``
        environment for a ``distributed`` job, and setting ``CUDA_VISIBLE_DEVICES`` to
        ``cuda_devices`` when given: a local task's own GPUs, :func:`local_gpu_sets`); returns its
        exit code, also said on stderr when not 0 (submitit reports the task as completed whatever
        it returns)."""
        if self.cuda_devices is not None:  # (before anything initialises CUDA in this process)
            os.environ["CUDA_VISIBLE_DEVICES"] = self.cuda_devices
            print(f"fit3d: this task's GPUs: CUDA_VISIBLE_DEVICES={self.cuda_devices}", file=sys.stderr, flush=True)
        if self.distributed:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        code = self.entry(self.args)  # errors shown as the command line shows them; Ctrl-C: 130
        if code:  # submitit's log will say "completed successfully": the task's result is this code
            print(f"fit3d: this task's fit3d command exited {code} (its result; submitit reports the task "
                  "as completed)", file=sys.stderr, flush=True)
        return code

    def __setstate__(self, state: dict) -> None:
        """A job pickled by a fit3d from before ``entry`` (a task queued, or requeued, across an
        upgrade) runs the command line it was queued for (it failed with an AttributeError)."""
        self.__dict__.update(state)
        if "entry" not in state:
            self.entry = _command_line
        self.__dict__.setdefault("cuda_devices", None)

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption or timeout: requeue the same task, which
        resumes from the outputs already written."""
        import submitit

        return submitit.helpers.DelayedSubmission(ShardJob(self.args, self.entry, self.distributed,
                                                           self.cuda_devices))


def _command_line(args: list[str]) -> int:
    """``fit3d.cli.main.run(args)``, imported by name: the entry point of jobs pickled before
    :class:`ShardJob` had one (this layer does not import the command line otherwise)."""
    import importlib

    return importlib.import_module("fit3d.cli.main").run(args)


def _given(options: list[str], name: str) -> bool:
    """Whether the option ``name`` is among ``options`` (as ``name value`` or ``name=value``)."""
    return any(o == name or o.startswith(name + "=") for o in options)


def shard_args(command: str, options: list[str], jobs: int) -> list[list[str]]:
    """The argument lists of the ``jobs`` tasks: ``[command, *options, "--shard", "i/n"]``.

    Raises:
        ValueError: unknown command, ``--shard`` already among the options, or
            NeuralAnnot with more than one job.
    """
    if command not in COMMANDS:
        raise ValueError(f"fit3d submit runs {', '.join(COMMANDS)}, not {command!r}")
    if _given(options, "--shard"):
        raise ValueError("fit3d submit sets --shard for each job: leave it out")
    if command == "neuralannot":
        if jobs != 1:
            raise ValueError("neuralannot trains one network on the whole set: use --jobs 1 and --ranks N "
                             "(or --gpus-per-job N): N ranks of one torch.distributed job")
        return [[command, *options]]
    return [[command, *options, "--shard", f"{i + 1}/{jobs}"] for i in range(jobs)]


#: ``--dry-run`` exit codes after which :func:`precheck` lets the tasks be queued: nothing wrong,
#: or input problems that a run records per input and fits the rest around (exit 3); see also
#: :func:`precheck_passes`.
PRECHECK_OK = (0, 3)


def precheck_passes(code: int | None, jobs: int) -> bool:
    """Whether :func:`precheck`'s exit ``code`` lets ``jobs`` tasks be queued: None (no pre-check),
    :data:`PRECHECK_OK`, or, for an array of several tasks, 4 (the first task's shard has nothing
    to fit; the other shards may: a review found arrays refused whole for it; the dry run's count
    line gives the whole input's)."""
    from fit3d.pipeline.summary import NOTHING_FITTED

    return code is None or code in PRECHECK_OK or (code == NOTHING_FITTED and jobs > 1)


def precheck(command: str, options: list[str], jobs: int, entry: Callable[[list[str]], int]) -> int | None:
    """The first task's command run here with ``--dry-run``, on the CPU (reads the inputs, builds
    the body model and the fitter, checks the output folder's fit settings; fits nothing), so
    that a typo in an option, a missing input or weights, or a folder fitted with other settings
    stops ``fit3d submit`` before any task is queued rather than in every task. The tasks differ
    only in ``--shard``, which matters to the check through the whole-folder rule of
    ``--overwrite`` (:func:`fit3d.pipeline.settings.check_settings`), the same for every task, and
    through what the first shard has to fit (:func:`precheck_passes`).
    ``entry``: the command line's entry point (:class:`ShardJob`).

    Returns:
        the dry run's exit code (:func:`precheck_passes` says whether the tasks may go), or None
        for ``neuralannot`` (one job, which has no dry run).
    Raises:
        ValueError: see :func:`shard_args`. Anything else the command raises outside click's
            own errors (which become exit codes) passes through.
    """
    args = shard_args(command, options, jobs)[0]
    if command == "neuralannot":
        return None
    return entry([*_on_cpu(args), "--dry-run"])  # (here, not as a task: no task line in its output)


def _on_cpu(args: list[str]) -> list[str]:
    """``args`` with ``--device X`` / ``--device=X`` set to ``cpu``: the check runs where
    ``fit3d submit`` is typed (often a login node without the tasks' GPUs), and the device
    decides no setting it checks."""
    out = list(args)
    for i, inline in _device_values(out):
        out[i] = "--device=cpu" if inline else "cpu"
    return out


def _device_values(options: list[str]) -> list[tuple[int, bool]]:
    """Where ``options`` give ``--device``'s value, in order: ``(index, inline)``, the index of the
    value itself (``--device X``) or of ``--device=X`` (``inline``)."""
    found = []
    for i, o in enumerate(options):
        if o == "--device" and i + 1 < len(options):
            found.append((i + 1, False))
        elif o.startswith("--device="):
            found.append((i, True))
    return found


class ClusterUnavailable(RuntimeError):
    """The cluster asked for cannot be reached from here (e.g. no SLURM commands)."""


def _unavailable(cluster: str, why) -> ClusterUnavailable:
    return ClusterUnavailable(f"no {cluster} cluster here ({why}); --cluster local runs the same tasks as processes "
                              "on this machine")


def check_cluster(cluster: str) -> None:
    """Whether submitit can reach ``cluster`` from here (its executors' own detection, e.g.
    ``srun`` for SLURM); creates nothing, so ``fit3d submit`` asks it before its pre-check.

    Raises:
        ClusterUnavailable: submitit finds no such cluster here.
    """
    from submitit.core import plugins

    executor = plugins.get_executors().get(cluster)
    if executor is None or executor.affinity() <= 0:
        raise _unavailable(cluster, "submitit does not detect it")


def make_executor(config: SubmitConfig, name: str):
    """A submitit executor for ``config``.

    Raises:
        ClusterUnavailable: submitit finds no such cluster here.
    """
    import submitit

    try:
        ex = submitit.AutoExecutor(folder=str(config.logs), cluster=config.cluster)
    except RuntimeError as e:
        raise _unavailable(config.cluster, e) from e
    config.check_slurm_only(ex.cluster)  # (cluster None: submitit's guess is known only now)
    params = dict(name=name, timeout_min=config.time_min, gpus_per_node=config.gpus_per_job, nodes=1)
    if config.cpus_per_job:
        params["cpus_per_task"] = config.cpus_per_job
    if config.mem_gb:
        params["mem_gb"] = config.mem_gb
    if ex.cluster == "slurm":
        if config.partition:
            params["slurm_partition"] = config.partition
        if config.max_parallel:
            params["slurm_array_parallelism"] = config.max_parallel
        if config.slurm_args:
            params["slurm_additional_parameters"] = dict(config.slurm_args)
    ex.update_parameters(**params)
    return ex


def _device(options: list[str]) -> str | None:
    """The value of ``--device`` among ``options``, the last one given as click reads it (None:
    not given)."""
    where = _device_values(options)
    if not where:
        return None
    i, inline = where[-1]
    return options[i].split("=", 1)[1] if inline else options[i]


def _slurm_gpus(slurm_args: dict) -> bool:
    """Whether ``--slurm-arg`` options ask SLURM for GPUs themselves (``gres=gpu:1``, ``gpus=2``...)."""
    return any(str(k).replace("-", "_").startswith(("gres", "gpus")) for k in slurm_args)


def check_gpus(options: list[str], config: SubmitConfig) -> None:
    """Refuse tasks that would be given no GPU, or GPUs that do not exist (before the pre-check and
    before the logs folder is made).

    Raises:
        ValueError: ``--device cuda...`` among ``options`` with ``gpus_per_job`` 0 and no GPUs asked
            for in ``slurm_args`` (SLURM allocates no GPU to such a task, and submitit's local
            executor hides this machine's from it: every task would stop with "no usable CUDA"),
            or NeuralAnnot's ``ranks`` above ``gpus_per_job`` (a rank without its GPU), ``cuda:N``
            with N beyond a task's own GPUs, and for ``cluster="local"`` a torch without CUDA or more
            GPUs per task than this machine shows (:func:`local_gpu_sets`).
    """
    device = _device(options)
    cuda = device is not None and device.startswith("cuda")
    if cuda and config.cluster == "local":  # (the tasks run here: this torch must have CUDA; the pre-check runs on the CPU)
        from fit3d.devices import check_device

        check_device("cuda")
    if config.cluster == "local" and config.gpus_per_job > 0:
        local_gpu_sets(config.jobs, config.gpus_per_job, visible_gpus())  # (refuses more GPUs than there are)
    if not cuda:
        return
    index = device.partition(":")[2]
    if index.isdigit() and config.gpus_per_job and int(index) >= config.gpus_per_job:
        raise ValueError(f"--device {device}: each task sees only its own {config.gpus_per_job} GPU"
                         f"{'s' if config.gpus_per_job != 1 else ''} (cuda:0 on), so give --device cuda")
    if config.gpus_per_job < 1 and not _slurm_gpus(config.slurm_args):
        raise ValueError(f"--device {device} needs --gpus-per-job N (N >= 1): a task is given no GPU otherwise "
                         "(SLURM allocates none, and --cluster local hides this machine's from its tasks)")
    if config.ranks and config.gpus_per_job and config.ranks > config.gpus_per_job:
        raise ValueError(f"--ranks {config.ranks} on --device {device} needs as many GPUs (--gpus-per-job "
                         f"{config.ranks}): each rank fits on cuda:<its local rank>")


def local_gpu_sets(jobs: int, per_job: int, visible: list[str]) -> list[str]:
    """Each of ``jobs`` local tasks' ``CUDA_VISIBLE_DEVICES``: ``per_job`` consecutive entries of
    ``visible`` (this machine's GPUs as this process sees them), round robin (4 tasks of 1 on 2
    GPUs: 0, 1, 0, 1), so that tasks share a card only when there are more tasks than cards
    (submitit's local executor gives every task the first ``per_job`` indices: all on GPU 0, and
    indices of the whole machine, not of the user's ``CUDA_VISIBLE_DEVICES``).

    Raises:
        ValueError: ``per_job`` above the number of GPUs (a task would be given one twice, which
            hides every GPU from it).
    """
    if per_job > len(visible):
        raise ValueError(f"--gpus-per-job {per_job} with --cluster local, but this machine shows {len(visible)} GPU"
                         f"{'s' if len(visible) != 1 else ''}" + (f" ({','.join(visible)})" if visible else ""))
    return [",".join(visible[(i * per_job + j) % len(visible)] for j in range(per_job)) for i in range(jobs)]


def visible_gpus() -> list[str]:
    """This machine's GPUs as this process sees them: the entries of ``CUDA_VISIBLE_DEVICES``
    when set (indices, ``GPU-<uuid>`` or ``MIG-...``, up to the first other entry, as CUDA reads
    it), else ``0..n-1`` of torch's device count."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:  # (CUDA reads the list up to its first invalid entry: "-1" hides every GPU)
        out = []
        for d in (d.strip() for d in given.split(",")):
            if not (d.isdigit() or d.startswith(("GPU-", "MIG-"))):
                break
            out.append(d)
        return out
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def submit(command: str, options: list[str], config: SubmitConfig, entry: Callable[[list[str]], int]) -> list:
    """Submit ``fit3d command options`` as ``config.jobs`` shards (an array job). Several local
    tasks (``cluster="local"``) fit in one process each (``--workers 1`` unless given): they
    already share this machine's cores; with ``gpus_per_job``, each is given its own GPUs where the
    machine has enough (:func:`local_gpu_sets`; a warning when tasks must share a card).
    ``entry``: the command line's entry point (:class:`ShardJob`).

    Returns:
        the submitit jobs (``job.job_id``, ``job.result()`` = the task's exit code).
    Raises:
        ValueError: see :func:`shard_args` and :func:`check_gpus`. ClusterUnavailable: see
            :func:`make_executor`.
    """
    args = shard_args(command, options, config.jobs)
    check_gpus(options, config)
    ex = make_executor(config, f"fit3d-{command}")
    if ex.cluster == "local" and config.jobs > 1 and not _given(options, "--workers"):
        args = [[*a, "--workers", "1"] for a in args]  # local tasks share the cores already
    devices = [None] * len(args)
    if ex.cluster == "local" and config.gpus_per_job > 0:  # (submitit's AutoExecutor takes no visible_gpus)
        visible = visible_gpus()
        devices = local_gpu_sets(len(args), config.gpus_per_job, visible)
        if len(args) * config.gpus_per_job > len(visible):
            log.warning("%d local tasks of %d GPU(s) on a machine of %d: tasks share cards (each fits its share "
                        "more slowly, and memory is shared)", len(args), config.gpus_per_job, len(visible))
    if command == "neuralannot":  # (its ranks share the job's GPUs, each on cuda:<its local rank>)
        ranks = config.ranks or max(config.gpus_per_job, 1)
        ex.update_parameters(tasks_per_node=ranks)
        return [ex.submit(ShardJob(args[0], entry, distributed=ranks > 1, cuda_devices=devices[0]))]
    jobs = []
    with ex.batch():  # one array job on SLURM; each task is a ShardJob, so it can be requeued
        for a, gpus in zip(args, devices):
            jobs.append(ex.submit(ShardJob(a, entry, cuda_devices=gpus)))
    return jobs


@dataclass
class TaskOutcome:
    """How one submitted task ended (:func:`wait_for`).

    Attributes:
        name: the job id (``"<id> rank <k>"`` for a task of NeuralAnnot's one job).
        code: its exit code: the command's, or for a task whose result could not be read, 128 +
            the signal that killed its process, else 1.
        why: None for exit 0; else one line saying what happened (its log's last error line).
    """

    name: str
    code: int
    why: str | None


def array_exit_code(codes: list[int]) -> int:
    """The exit code of an array of tasks (``fit3d submit --wait``):
    :func:`fit3d.pipeline.summary.combined_exit_code`."""
    from fit3d.pipeline.summary import combined_exit_code

    return combined_exit_code(codes)


def wait_for(jobs: list):
    """Wait for every task of the submitted ``jobs`` (:func:`submit`'s), yielding a
    :class:`TaskOutcome` for each as it is collected, in job order: a crashed task (killed,
    failed with a Python error, lost) is reported and the others still awaited."""
    for j in jobs:
        n = getattr(j, "num_tasks", 1)  # NeuralAnnot: one task per rank
        for k, task in enumerate([j.task(k) for k in range(n)] if n > 1 else [j]):
            name = f"{j.job_id}" + (f" rank {k}" if n > 1 else "")
            try:
                code = int(task.result() or 0)
            except Exception as e:  # noqa: BLE001 - a task that crashed: say which, keep waiting for the others
                code, why = _crash(task, e)
                yield TaskOutcome(name, code, why)
                continue
            yield TaskOutcome(name, code, f"exited {code}: {_last_error_line(task)}" if code else None)


def _crash(task, error: Exception) -> tuple[int, str]:
    """``(exit code, what happened)`` of a task whose result could not be read: its local
    submitit process killed by a signal (``128 + signal``, as a shell says it; the fit it started
    in a process of its own may still run, and the line says so), failed with a Python error (submitit's ``FailedJobError``: the error's
    last line from the task's log) or ended without a result (killed itself, out of memory, a
    node lost; the scheduler's state): 1."""
    process = getattr(task, "_process", None)  # a local job's submitit process (submitit's LocalJob)
    rc = process.poll() if process is not None else None
    if rc is not None and rc < 0:
        return 128 - rc, (f"stopped: its submitit process (pid {process.pid}) was killed by signal {-rc} "
                          f"(exit {128 - rc}), but the fit it started may still be running (a review saw one "
                          "write its shard's outputs after this): while it runs, its shard's lock refuses "
                          f"another run there; log: {getattr(task.paths, 'stderr', '?')}")
    if type(error).__name__ == "FailedJobError":
        return 1, f"failed: {_last_error_line(task)}"
    state = getattr(task, "state", "UNKNOWN")
    text = str(error).strip()
    first = text.splitlines()[0][:200] if text else type(error).__name__
    return 1, (f"ended without a result (killed? out of memory? state {state}: {first}); "
               f"log: {getattr(task.paths, 'stderr', '?')}")


def _last_error_line(job) -> str:
    """The last line a task wrote to its stderr log (its error, or the last traceback line), and the log's path."""
    try:
        path = Path(job.paths.stderr)
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        lines = [ln for ln in lines if "submitit" not in ln] or ["(nothing but submitit's own lines)"]
        errors = [ln for ln in lines if ln.startswith("Error:")]  # click's one-line errors
        return f"{(errors or lines)[-1]} (log: {path})"
    except (OSError, AttributeError) as e:
        return f"no log to read ({e})"
