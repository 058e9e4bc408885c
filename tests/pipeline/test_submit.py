import pytest

from fit3d.cli.main import run
from fit3d.pipeline.submit import precheck, shard_args


def test_shard_args_count_from_one_and_refuse_what_submit_sets():
    assert shard_args("eft", ["--out", "o"], 3) == [["eft", "--out", "o", "--shard", f"{i}/3"] for i in (1, 2, 3)]
    with pytest.raises(ValueError, match="leave it out"):
        shard_args("eft", ["--shard=1/2"], 2)
    with pytest.raises(ValueError, match="not 'train'"):
        shard_args("train", [], 1)


def test_precheck_runs_the_first_task_as_a_dry_run():
    seen = []

    def entry(args):
        seen.append(args)
        return 4

    assert precheck("smplify", ["--images", "x", "--out", "o"], 2, entry) == 4
    assert seen == [["smplify", "--images", "x", "--out", "o", "--shard", "1/2", "--dry-run"]]
    # the check runs where submit is typed (a login node, often without the tasks' GPUs): on the CPU
    precheck("eft", ["--device", "cuda", "--out", "o"], 1, entry)
    precheck("eft", ["--device=cuda:1"], 1, entry)
    assert seen[1:] == [["eft", "--device", "cpu", "--out", "o", "--shard", "1/1", "--dry-run"],
                        ["eft", "--device=cpu", "--shard", "1/1", "--dry-run"]]
    del seen[1:]
    assert precheck("neuralannot", ["--images", "x"], 1, entry) is None  # one job, no dry run
    assert len(seen) == 1
    with pytest.raises(ValueError):
        precheck("neuralannot", [], 2, entry)


def test_a_task_interrupted_by_ctrl_c_exits_130(monkeypatch, tmp_path):
    from fit3d.pipeline.submit import ShardJob

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("fit3d.cli.fit.load_inputs", interrupted)
    assert ShardJob(["eft", "--images", str(tmp_path), "--out", str(tmp_path / "o"), "--dry-run"], run)() == 130
    # (a pre-check stopped this way makes 'fit3d submit' exit 130, "nothing submitted")


class _FakeExecutor:
    def __init__(self, cluster):
        self.cluster, self.args = cluster, []

    def batch(self):
        import contextlib

        return contextlib.nullcontext()

    def submit(self, job):
        self.args.append(job.args)
        return job


def test_several_local_tasks_fit_in_one_process_each(monkeypatch):
    import fit3d.pipeline.submit as submit_module
    from fit3d.pipeline.submit import SubmitConfig, submit

    for cluster, jobs, options, workers in (("local", 2, [], ["1", "1"]), ("local", 2, ["--workers", "2"], ["2", "2"]),
                                            ("local", 1, [], []), ("slurm", 2, [], [])):
        ex = _FakeExecutor(cluster)
        monkeypatch.setattr(submit_module, "make_executor", lambda config, name, ex=ex: ex)
        submit("eft", ["--out", "o", *options], SubmitConfig(jobs=jobs, cluster=cluster), run)
        assert [a[a.index("--workers") + 1] for a in ex.args if "--workers" in a] == workers, (cluster, jobs, options)


def test_wait_for_reports_each_task_as_it_ended(tmp_path):
    from fit3d.pipeline.submit import TaskOutcome, wait_for

    log = tmp_path / "err.log"
    log.write_text("submitit INFO starting\nError: no such file: x.json\n")

    class Task:
        def __init__(self, job_id, result):
            self.job_id, self._result = job_id, result
            self.paths = type("P", (), {"stderr": log})()

        def result(self):
            if isinstance(self._result, Exception):
                raise self._result
            return self._result

    class Ranks(Task):  # one job of two tasks (NeuralAnnot's ranks)
        num_tasks = 2

        def task(self, k):
            return Task(self.job_id, [0, 3][k])

    out = list(wait_for([Task("1", 0), Task("2", 4), Task("3", RuntimeError("node lost")), Ranks("4", None)]))
    assert [(o.name, o.code) for o in out] == [("1", 0), ("2", 4), ("3", 1), ("4 rank 0", 0), ("4 rank 1", 3)]
    assert out[0] == TaskOutcome("1", 0, None)
    assert out[1].why == f"exited 4: Error: no such file: x.json (log: {log})"
    assert out[2].why.startswith("ended without a result (killed? out of memory? state UNKNOWN: node lost)")


def test_a_job_pickled_before_it_had_an_entry_point_still_runs(monkeypatch):
    """Tasks queued (or requeued) across an upgrade unpickle an older ShardJob, without ``entry``."""
    import pickle

    from fit3d.pipeline.submit import ShardJob

    job = ShardJob(["eft", "--help"], run)
    state = dict(job.__dict__)
    del state["entry"]
    old = ShardJob.__new__(ShardJob)
    old.__setstate__(state)
    assert old() == 0  # the command line's help, through fit3d.cli.main.run
    assert pickle.loads(pickle.dumps(job)).entry is run


def test_an_arrays_exit_code_is_nothing_fitted_only_when_no_task_fitted_anyone():
    """A video trial: one task fitted people, the other's frames were empty: submit said 4."""
    from fit3d.pipeline.submit import array_exit_code

    assert [array_exit_code(c) for c in ([0, 4], [4, 4], [3, 4], [5, 3, 0], [4, 130], [])] == [0, 4, 3, 5, 130, 0]


def _record_gpus(args):
    """A task's entry point (picklable, by name): writes the GPUs this task sees to OUT/<shard>.txt."""
    import os
    from pathlib import Path

    out = Path(args[args.index("--out") + 1])
    (out / (args[args.index("--shard") + 1].replace("/", "-") + ".txt")).write_text(os.environ["CUDA_VISIBLE_DEVICES"])
    return 0


def test_local_tasks_on_gpus_get_their_own_cards_and_cuda_needs_gpus(monkeypatch, tmp_path):
    """submitit's local executor gave every task the first GPU(s) of the whole machine (4 tasks on one
    card of four, and not those of the user's CUDA_VISIBLE_DEVICES). Now each task, run by submitit's
    real local executor, sees its own, round robin over what this process sees; ``--device cuda``
    without ``--gpus-per-job`` (a task given no GPU) and more GPUs per task than the machine has (a
    repeated index hides every GPU) are refused before anything is queued."""
    import pytest

    from fit3d.pipeline.submit import SubmitConfig, local_gpu_sets, submit, wait_for

    assert local_gpu_sets(4, 1, ["0", "1", "2", "3"]) == ["0", "1", "2", "3"]
    assert local_gpu_sets(3, 2, ["0", "1", "2", "3"]) == ["0,1", "2,3", "0,1"]
    assert local_gpu_sets(3, 1, ["GPU-a", "GPU-b"]) == ["GPU-a", "GPU-b", "GPU-a"]
    with pytest.raises(ValueError, match="shows 1 GPU"):
        local_gpu_sets(2, 2, ["0"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")  # the user's cards
    monkeypatch.setattr("fit3d.devices.check_device", lambda device: None)  # (as if this torch had CUDA)
    out = tmp_path / "o"
    out.mkdir()
    config = SubmitConfig(jobs=3, cluster="local", gpus_per_job=1, logs=tmp_path / "logs")
    jobs = submit("eft", ["--out", str(out), "--device", "cuda"], config, _record_gpus)
    assert [t.code for t in wait_for(jobs)] == [0, 0, 0]
    assert [(out / f"{i}-3.txt").read_text() for i in (1, 2, 3)] == ["4", "5", "4"]
    for device in (["--device", "cuda"], ["--device=cuda:1"], ["--device", "cpu", "--device", "cuda"]):
        with pytest.raises(ValueError, match="--gpus-per-job"):
            submit("eft", ["--out", "o", *device], SubmitConfig(jobs=2, cluster="local"), run)
    with pytest.raises(ValueError, match="shows 2 GPUs"):
        submit("eft", ["--out", "o", "--device", "cuda"], SubmitConfig(jobs=2, cluster="local", gpus_per_job=3), run)


def test_gpus_asked_of_slurm_by_hand_pass_and_ranks_need_their_gpus():
    import pytest

    from fit3d.pipeline.submit import SubmitConfig, check_gpus

    check_gpus(["--device", "cuda"], SubmitConfig(cluster="slurm", slurm_args={"gres": "gpu:a100:1"}))
    check_gpus(["--device", "cuda"], SubmitConfig(cluster="slurm", gpus_per_job=4, ranks=4))
    check_gpus(["--device", "cuda", "--device", "cpu"], SubmitConfig(cluster="local"))  # click reads the last
    with pytest.raises(ValueError, match="--ranks 4 .* needs as many GPUs"):
        check_gpus(["--device", "cuda"], SubmitConfig(cluster="slurm", gpus_per_job=2, ranks=4))


def test_local_neuralannot_ranks_share_the_gpus_this_shell_sees(monkeypatch):
    """NeuralAnnot's one local job of N ranks: its GPUs are the first N this shell sees (submitit's
    local executor gave the whole machine's 0..N-1, whatever CUDA_VISIBLE_DEVICES said)."""
    import fit3d.pipeline.submit as submit_module
    from fit3d.pipeline.submit import SubmitConfig, submit

    class _Job(_FakeExecutor):
        def update_parameters(self, **kwargs):
            self.parameters = kwargs

        def submit(self, job):
            self.job = job
            return job

    ex = _Job("local")
    monkeypatch.setattr(submit_module, "make_executor", lambda config, name: ex)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-b,GPU-c,GPU-d")
    monkeypatch.setattr("fit3d.devices.check_device", lambda device: None)
    submit("neuralannot", ["--out", "o", "--device", "cuda"], SubmitConfig(cluster="local", gpus_per_job=2), run)
    assert ex.job.cuda_devices == "GPU-b,GPU-c" and ex.job.distributed and ex.parameters == {"tasks_per_node": 2}


def test_what_a_local_gpu_submit_cannot_run_is_refused_before_the_pre_check(monkeypatch):
    """A new-user trial: local tasks with a torch without CUDA were all queued and all failed; "-1"
    (CUDA's way to hide every GPU) counted as one GPU; cuda:1 on a task's one GPU passed."""
    import pytest
    import torch

    from fit3d.pipeline.submit import SubmitConfig, check_gpus, visible_gpus

    for given, seen in (("-1", []), ("0,1,-1,2", ["0", "1"]), ("", []), ("GPU-a,MIG-b", ["GPU-a", "MIG-b"])):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", given)
        assert visible_gpus() == seen, given
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no usable CUDA"):
            check_gpus(["--device", "cuda"], SubmitConfig(cluster="local", gpus_per_job=1))
    monkeypatch.setattr("fit3d.devices.check_device", lambda device: None)
    with pytest.raises(ValueError, match="each task sees only its own 1 GPU"):
        check_gpus(["--device", "cuda:1"], SubmitConfig(cluster="slurm", gpus_per_job=1))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    with pytest.raises(ValueError, match="shows 0 GPUs"):
        check_gpus(["--device", "cuda"], SubmitConfig(cluster="local", gpus_per_job=1))
