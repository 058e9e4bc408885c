from pathlib import Path

import torch

from fit3d.priors import ArticulationPrior
from fit3d.priors.io import load_prior, save_prior


def test_articulation_round_trip(tmp_path):
    m = ArticulationPrior(num_joints=5, layers=3)
    f = tmp_path / "a.pt"
    save_prior(m, f)
    m2 = load_prior(f)
    x = torch.randn(2, 5, 3)
    assert torch.allclose(m(x), m2(x))


def test_the_articulation_cost_is_the_nll_beyond_each_joints_range_and_the_plain_nll_before_one():
    torch.manual_seed(0)
    m = ArticulationPrior(num_joints=5, layers=3)
    x = torch.randn(4, 5, 3) * 0.5
    nll = -m.log_prob_joints(x)
    assert torch.equal(m(x), nll.sum(-1))  # no range yet
    m.set_range(torch.randn(200, 5, 3) * 0.3)
    assert torch.isfinite(m.threshold).all()
    assert torch.equal(m(x), torch.nn.functional.softplus(nll - m.threshold).sum(-1))
    m.threshold[0] = float("inf")  # a joint without a range keeps its plain NLL (chosen per joint)
    expected = nll[:, 0] + torch.nn.functional.softplus(nll[:, 1:] - m.threshold[1:]).sum(-1)
    assert torch.allclose(m(x), expected)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(m(x).sum(), x)
    assert torch.isfinite(grad).all()


def test_a_vae_trains_on_fewer_poses_than_a_batch():
    """Fewer poses than ``batch_size``: one batch of them all (it used to train nothing)."""
    import numpy as np
    import pytest

    from fit3d.priors import VAEPrior
    from fit3d.training.priors import train_vae

    poses = np.random.default_rng(0).normal(0, 0.3, (40, 5, 3)).astype(np.float32)
    torch.manual_seed(0)
    untrained = VAEPrior(num_joints=5)  # the same initial weights as train_vae's (seed 0)
    m = train_vae(poses, epochs=30, batch_size=256, progress=False)
    x = torch.as_tensor(poses)
    assert m(x).mean() < untrained(x).mean()  # the training poses cost less than before training
    with pytest.raises(ValueError, match="no poses"):
        train_vae(poses[:0], progress=False)


def _pose_set(path, n: int, model: str = "anny", joints: int = 19):
    """A pose set of ``n`` training poses (joint names of anny's sides, so mirroring works)."""
    import numpy as np

    names = ["root"] + [f"{side}_joint{j}" for j in range((joints - 1) // 2) for side in ("left", "right")] + ["neck"]
    rng = np.random.default_rng(0)
    np.savez(path, body_pose=rng.normal(0, 0.2, (n, joints, 3)).astype(np.float32),
             global_orient=np.zeros((n, 3), np.float32), split=np.full(n, "train"), joint_names=np.asarray(names),
             model=np.str_(model))
    return path


def test_load_pose_set_refuses_what_is_not_a_pose_set_with_a_value_error(tmp_path):
    import json

    import numpy as np
    import pytest

    from fit3d.mocap.pose_set import load_pose_set

    files = {"poses.json": lambda p: p.write_text(json.dumps({"body_pose": []})),  # numpy: "pickled data"
             "one.npy": lambda p: np.save(p, np.zeros(3)), "empty.npz": lambda p: p.write_bytes(b""),
             "fit.npz": lambda p: np.savez(p, body_pose=np.zeros((1, 19, 3)), betas=np.zeros((1, 10)))}
    for name, write in files.items():
        write(tmp_path / name)
        with pytest.raises(ValueError, match=rf"{name} is not a pose set"):
            load_pose_set(tmp_path / name)
    with pytest.raises(ValueError, match="no 'global_orient', 'split', 'joint_names'"):
        load_pose_set(tmp_path / "fit.npz")
    with pytest.raises(FileNotFoundError, match="no such pose set"):
        load_pose_set(tmp_path / "missing.npz")
    assert len(load_pose_set(_pose_set(tmp_path / "ps.npz", 3))["body_pose"]) == 3


def test_a_gmm_of_more_components_than_poses_is_a_value_error(tmp_path):
    """scikit-learn's own error (n_samples >= n_components) named neither the poses nor the prior."""
    import pytest

    from fit3d.training.priors import train_prior

    ps = _pose_set(tmp_path / "ps.npz", 3)  # 6 poses with their mirror images, no recombinations
    with pytest.raises(ValueError, match="6 poses cannot train a GMM of 8 components: it needs at least 8"):
        train_prior("gmm", ps, tmp_path / "gmm.pt", recombined=0)
    assert train_prior("gmm", _pose_set(tmp_path / "ps8.npz", 4), tmp_path / "gmm.pt", recombined=0)["poses"] == 8


def test_prototypes_of_a_smpl_pose_set_need_its_body_model(tmp_path, anny_model):
    import pytest

    from fit3d.training.priors import train_prior

    ps = _pose_set(tmp_path / "ps.npz", 40, model="smpl", joints=23)
    with pytest.raises(ValueError, match="is a smpl pose set: its prototypes need the smpl model"):
        train_prior("prototypes", ps, tmp_path / "p.pt", recombined=0)  # was a FileNotFoundError about --model-path
    with pytest.raises(ValueError, match="is a smpl pose set, not anny's"):
        train_prior("prototypes", ps, tmp_path / "p.pt", recombined=0, body_model=anny_model)
    with pytest.raises(ValueError, match="unknown prior kind 'gmmm'"):  # before reading the pose set
        train_prior("gmmm", tmp_path / "missing.npz", tmp_path / "p.pt")


def test_training_inputs_are_checked_before_training(tmp_path):
    """A review: a NaN pose, a pose set without training poses or of another model's joints, a
    prototype file that is a GMM, a seed numpy refuses and an output folder that cannot be made ended
    in tracebacks, wrong hints ('diverged... lower the learning rate') or after the training."""
    import numpy as np
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    run = lambda *args: CliRunner().invoke(cli, list(map(str, args)))  # noqa: E731
    good = _pose_set(tmp_path / "good.npz", 40)
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    bad = dict(arrays, global_orient=arrays["global_orient"].copy())
    bad["global_orient"][5, 1] = np.nan
    np.savez(tmp_path / "nan.npz", **bad)
    r = run("train-prior", "--kind", "gmm", "--poses", tmp_path / "nan.npz", "--out", tmp_path / "g.pt")
    assert r.exit_code == 1 and "1 of 40 poses are not finite (the first is pose 5)" in r.output
    np.savez(tmp_path / "test_only.npz", **dict(arrays, split=np.full(40, "TRAIN")))
    r = run("train-prior", "--kind", "gmm", "--poses", tmp_path / "test_only.npz", "--out", tmp_path / "g.pt")
    assert r.exit_code == 1 and "no training poses" in r.output and "'TRAIN'" in r.output
    _pose_set(tmp_path / "other.npz", 40, joints=21)  # anny's name, another model's joints
    r = run("train-prior", "--kind", "gmm", "--poses", tmp_path / "other.npz", "--out", tmp_path / "g.pt")
    assert r.exit_code == 1 and "21 joints" in r.output and not (tmp_path / "g.pt").exists()
    r = run("train-regressor", "--poses", good, "--out", tmp_path / "r.pt", "--rounds", 1, "--people", 256,
            "--members", 1, "--prototypes", Path(__file__).parents[2] / "fit3d/priors/weights/anny_gmm.pt")
    assert r.exit_code == 1 and "not a prototype memory" in r.output
    for args in (("--seed", -1), ("--seed", 2**32 - 1, "--members", 2)):
        r = run("train-regressor", "--poses", good, "--out", tmp_path / "r.pt", *args)
        assert r.exit_code == 2 and "seed" in r.output.lower(), args
    from filelock import FileLock

    with FileLock(f"{tmp_path / 'r.pt'}.lock"):  # another training into the same file, its checkpoint shared
        r = run("train-regressor", "--poses", good, "--out", tmp_path / "r.pt", "--rounds", 1, "--people", 256)
    assert r.exit_code == 1 and "another training into" in r.output
    (tmp_path / "file").write_text("x")
    r = run("train-prior", "--kind", "gmm", "--poses", good, "--out", tmp_path / "file" / "g.pt")
    assert r.exit_code == 2 and "cannot be made" in r.output
    assert not list(tmp_path.glob("*.pt"))


def test_an_interrupted_vae_or_articulation_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """``train-prior`` had no checkpoint: an interrupted VAE (5 min) or articulation prior (8 min)
    trained again from the start. Now a rerun resumes from ``OUT.partial`` and ends with the weights
    an uninterrupted run gives."""
    import numpy as np
    import pytest

    import fit3d.training.priors as tp
    from fit3d.training.checkpoint import save_checkpoint

    poses = np.random.default_rng(0).normal(0, 0.3, (300, 5, 3)).astype(np.float32)
    monkeypatch.setattr(tp, "ARTICULATION_CHECKPOINT_STEPS", 3)
    cases = {"vae": lambda ck: tp.train_vae(poses, epochs=5, batch_size=64, progress=False, checkpoint=ck),
             "articulation": lambda ck: tp.train_articulation(poses, steps=10, batch_size=64, progress=False,
                                                              checkpoint=ck)}
    for kind, train in cases.items():
        whole = train(None).state_dict()
        ck = tmp_path / f"{kind}.pt.partial"
        saved = []

        def stop_after_two(*args, **kwargs):
            save_checkpoint(*args, **kwargs)
            saved.append(args[2])
            if len(saved) == 2:
                raise KeyboardInterrupt  # (Ctrl-C, a killed job)

        monkeypatch.setattr(tp, "save_checkpoint", stop_after_two)
        with pytest.raises(KeyboardInterrupt):
            train(ck)
        monkeypatch.setattr(tp, "save_checkpoint", save_checkpoint)
        assert ck.is_file() and saved[-1] in (2, 6)  # (the VAE's second epoch, the articulation's sixth step)
        resumed = train(ck).state_dict()
        assert resumed.keys() == whole.keys(), kind
        for k in whole:
            assert torch.equal(resumed[k], whole[k]), (kind, k)
        other = tp.train_vae(poses[:200], epochs=5, batch_size=64, progress=False, checkpoint=ck) \
            if kind == "vae" else None  # another pose set: the checkpoint is not used (trains from the start)
        if other is not None:
            again = tp.train_vae(poses[:200], epochs=5, batch_size=64, progress=False).state_dict()
            assert all(torch.equal(other.state_dict()[k], again[k]) for k in again)


def test_a_checkpoint_of_another_thread_count_is_not_resumed(tmp_path, caplog):
    """Another thread count sums in another order: a resumed run would mix two (the trial's finding)."""
    import logging

    import numpy as np

    from fit3d.training.priors import train_vae

    poses = np.random.default_rng(0).normal(0, 0.3, (300, 5, 3)).astype(np.float32)
    ck = tmp_path / "vae.pt.partial"
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2 if before == 1 else 1)
        train_vae(poses, epochs=2, batch_size=64, progress=False, checkpoint=ck)
        torch.set_num_threads(before)
        with caplog.at_level(logging.WARNING, logger="fit3d.training.checkpoint"):
            train_vae(poses, epochs=2, batch_size=64, progress=False, checkpoint=ck)
    finally:
        torch.set_num_threads(before)
    assert "checkpoint of other settings (threads" in caplog.text and "training from the start" in caplog.text


def test_train_prior_removes_its_checkpoint_and_frees_its_lock_when_done(tmp_path):
    from click.testing import CliRunner
    from filelock import FileLock

    from fit3d.cli.main import cli

    good = _pose_set(tmp_path / "good.npz", 40)
    out = tmp_path / "vae.pt"
    with FileLock(f"{out}.lock"):  # another training into the same file
        r = CliRunner().invoke(cli, ["train-prior", "--kind", "vae", "--poses", str(good), "--out", str(out)])
    assert r.exit_code == 1 and "another training into" in r.output
    import fit3d.training.priors as tp

    real = tp.train_vae
    tp.train_vae = lambda *a, **k: real(*a, **dict(k, epochs=2))
    try:
        r = CliRunner().invoke(cli, ["train-prior", "--kind", "vae", "--poses", str(good), "--out", str(out)])
    finally:
        tp.train_vae = real
    assert r.exit_code == 0, r.output
    assert out.is_file() and not (tmp_path / "vae.pt.partial").exists()
    FileLock(f"{out}.lock", timeout=0).acquire()  # free (the file stays: removing it while held was a race)
    import fit3d.training.checkpoint as tc

    real = tp.train_vae

    def interrupted(*a, checkpoint=None, **k):  # a training stopped by Ctrl-C after its first checkpoint
        opt = torch.optim.SGD([torch.zeros(1)], 0.1)
        tc.save_checkpoint(checkpoint, {}, 1, torch.nn.Linear(1, 1), opt, torch.optim.lr_scheduler.StepLR(opt, 1),
                           torch.Generator())
        raise KeyboardInterrupt

    tp.train_vae = interrupted
    try:
        r = CliRunner().invoke(cli, ["train-prior", "--kind", "vae", "--poses", str(good), "--out", str(out)])
    finally:
        tp.train_vae = real
    assert "kept in" in r.output and "vae.pt.partial: run the same command again to resume" in r.output
    FileLock(f"{out}.lock", timeout=0).acquire()


def test_a_checkpoint_of_another_architecture_starts_over_instead_of_crashing(tmp_path, monkeypatch, caplog):
    """A review: a checkpoint of a VAE whose layers changed since made every rerun crash in
    load_state_dict (after loading the tensors that matched)."""
    import logging

    import numpy as np

    import fit3d.training.priors as tp
    from fit3d.priors.vae import VAEPrior

    poses = np.random.default_rng(0).normal(0, 0.3, (300, 5, 3)).astype(np.float32)
    ck = tmp_path / "vae.pt.partial"
    tp.train_vae(poses, epochs=1, batch_size=64, progress=False, checkpoint=ck)
    monkeypatch.setattr(tp, "VAEPrior", lambda num_joints: VAEPrior(num_joints=num_joints, hidden=64))
    with caplog.at_level(logging.WARNING, logger="fit3d.training.checkpoint"):
        m = tp.train_vae(poses, epochs=1, batch_size=64, progress=False, checkpoint=ck)
    assert "checkpoint of other settings (shapes" in caplog.text and "training from the start" in caplog.text
    assert m.state_dict()["encoder_net.2.weight"].shape[0] == 64


def test_quick_priors_leave_another_trainings_checkpoint_alone(tmp_path):
    """``--kind gmm`` or ``prototypes`` (seconds, no checkpoint) into an OUT with a VAE's OUT.partial."""
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    good = _pose_set(tmp_path / "good.npz", 40)
    partial = tmp_path / "p.pt.partial"
    partial.write_bytes(b"a VAE's checkpoint")
    r = CliRunner().invoke(cli, ["train-prior", "--kind", "gmm", "--poses", str(good), "--out", str(tmp_path / "p.pt")])
    assert r.exit_code == 0, r.output
    assert partial.read_bytes() == b"a VAE's checkpoint"


def test_learned_priors_train_on_the_body_models_device(tmp_path, anny_model, monkeypatch):
    """--device (the body model's) was used by the prototypes only: the VAE and the articulation prior trained
    on the CPU under 'fit3d setup-model --device cuda'. Here the device is recorded, not used (no GPU)."""
    import fit3d.training.priors as priors
    from fit3d.mocap import bundled_pose_set

    seen = {}

    def recording(name, real, short):
        def train(x, **kw):  # records the device, trains briefly
            seen[name] = kw["device"]
            return real(x[:64], **dict(kw, **short))
        return train

    monkeypatch.setattr(priors, "train_vae", recording("train_vae", priors.train_vae, dict(epochs=1)))
    monkeypatch.setattr(priors, "train_articulation", recording("train_articulation", priors.train_articulation,
                                                                dict(steps=2)))
    for kind in ("vae", "articulation"):
        priors.train_prior(kind, bundled_pose_set(), tmp_path / f"{kind}.pt", progress=False, recombined=0,
                           body_model=anny_model)
    assert seen == {"train_vae": anny_model.device, "train_articulation": anny_model.device}


def test_a_checkpoint_records_a_device_other_than_the_cpu():
    """Found by a review: a GPU training's checkpoint would have resumed on the CPU (another arithmetic)."""
    from fit3d.training.checkpoint import _complete

    cpu = torch.nn.Linear(2, 2)
    meta = torch.nn.Linear(2, 2).to("meta")
    a = _complete({"kind": "vae"}, cpu, torch.optim.Adam(cpu.parameters()))
    b = _complete({"kind": "vae"}, meta, torch.optim.Adam(meta.parameters()))
    assert "device" not in a and b["device"] == "meta" and a != b  # CPU checkpoints as before; others told apart


def test_a_gpu_trainings_checkpoint_keeps_and_restores_that_gpus_generator(tmp_path, monkeypatch):
    """Found by a review of the CUDA paths: the VAE's dropout draws from the GPU's own generator, which
    the checkpoint did not keep, so a resumed GPU training replayed other masks (not the weights of an
    uninterrupted run). Shown here with the GPU's generator faked (tests/test_cuda.py runs it on one)."""
    import fit3d.training.checkpoint as ckm

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
    path = tmp_path / "x.partial"
    restored = []
    monkeypatch.setattr(ckm, "_device", lambda m: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.tensor([7, 8], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state.tolist(), device)))
    ckm.save_checkpoint(path, {"kind": "vae"}, 3, model, opt, sched, torch.Generator())
    assert ckm.resume(path, {"kind": "vae"}, model, opt, sched, torch.Generator(), "train_vae", 5) == 3
    assert restored == [([7, 8], torch.device("cuda", 0))]
    monkeypatch.undo()  # a CPU training's checkpoint holds no GPU generator and restores none
    ckm.save_checkpoint(path, {"kind": "vae"}, 3, model, opt, sched, torch.Generator())
    assert "cuda_rng" not in torch.load(path, weights_only=False)
    # a CUDA training's settings say its checkpoint keeps the generator, so one written before (without
    # it) is of other settings and starts over rather than resume into other dropout masks (a review)
    from types import SimpleNamespace

    class OnCuda(torch.nn.Module):
        def state_dict(self, *a, **k):
            return {"w": SimpleNamespace(device=torch.device("cuda", 0), shape=(2,))}

    settings = ckm._complete({"kind": "vae"}, OnCuda(), opt)
    assert settings["device"] == "cuda" and settings["cuda_rng"] is True
    assert "cuda_rng" not in ckm._complete({"kind": "vae"}, torch.nn.Linear(2, 2).to("meta"), opt)
