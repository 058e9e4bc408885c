import os

import pytest
import torch

from fit3d.fitters.neuralannot import NeuralAnnot, TrainConfig, parse_recipes
from fit3d.regressors.keypoint_regressor import KeypointRegressor


def _net(model, seed=0):
    torch.manual_seed(seed)
    return KeypointRegressor(len(model.keypoint_convention), model.num_body_joints, model.num_betas, width=32, blocks=1)


@pytest.fixture(scope="module")
def pose_set():
    from fit3d.mocap import bundled_pose_set
    from fit3d.training.priors import load_pose_set

    return load_pose_set(bundled_pose_set())


def test_each_recipe_switch_changes_its_loss(anny_model, make_synthetic, pose_set):
    from fit3d.priors import build_prior
    from fit3d.training.regressor import _to_batch

    target, _, _ = make_synthetic(anny_model, 8, seed=1)
    vae = build_prior("vae", anny_model)
    cfg = TrainConfig(epochs=1, min_steps_per_epoch=2, batch_size=4, synthetic_batch=4)
    annot = NeuralAnnot(anny_model, _net(anny_model), {"depth", "prior", "pretrain"}, pose_set, vae, cfg)
    syn = _to_batch(annot._synthetic_pool(8, 0), [0, 1, 2, 3], anny_model.keypoint_convention)
    _, on = annot.losses(target, syn)
    assert {"2d", "3d", "vae", "l2", "shape"} <= set(on)
    _, no_depth = NeuralAnnot(anny_model, _net(anny_model), {"prior", "pretrain"}, None, vae, cfg).losses(target, syn)
    assert "3d" not in no_depth and "vae" in no_depth
    _, no_prior = NeuralAnnot(anny_model, _net(anny_model), {"depth", "pretrain"}, pose_set, None, cfg).losses(target, syn)
    assert "vae" not in no_prior and "l2" not in no_prior and "3d" in no_prior
    # pretrain off re-initialises the network, on keeps the given weights
    net = _net(anny_model, seed=5)
    w = net.inp.weight.clone()
    NeuralAnnot(anny_model, net, {"pretrain"}, config=cfg)
    assert torch.equal(net.inp.weight, w)
    NeuralAnnot(anny_model, net, set(), config=cfg)
    assert not torch.equal(net.inp.weight, w)
    with pytest.raises(ValueError):
        parse_recipes("depth,magic")
    assert parse_recipes("none") == frozenset()


def test_training_lowers_2d_loss_and_resumes(tmp_path, anny_model, make_synthetic, pose_set):
    target, _, _ = make_synthetic(anny_model, 16, seed=2)
    ck = tmp_path / "annotator.pt"
    cfg = TrainConfig(epochs=2, min_steps_per_epoch=15, batch_size=8, synthetic_batch=8, lr=1e-3)
    a = NeuralAnnot(anny_model, _net(anny_model), {"depth", "pretrain"}, pose_set, None, cfg, checkpoint=ck)
    log = a.fit_dataset(target, progress=False)
    assert len(log) == 2 and ck.is_file() and log[-1]["2d"] < log[0]["2d"]
    # an interrupted run (2 of 3 epochs done) resumes at epoch 3 with the saved weights
    cfg3 = TrainConfig(epochs=3, min_steps_per_epoch=15, batch_size=8, synthetic_batch=8, lr=1e-3)
    b = NeuralAnnot(anny_model, _net(anny_model, seed=9), {"depth", "pretrain"}, pose_set, None, cfg3, checkpoint=ck)
    log3 = b.fit_dataset(target, progress=False)
    assert [e["epoch"] for e in log3] == [1, 2, 3] and log3[:2] == log
    res = b(target)
    assert res.keypoints_3d.shape == (16, 23, 3) and torch.isfinite(res.transl).all()


def _ddp_worker(rank, world, init_file, out_dir, state, target):
    from datetime import timedelta

    import torch.distributed as dist

    from fit3d.body_models.anny_model import AnnyModel

    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # the two ranks talk over loopback only
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    model = AnnyModel()
    net = KeypointRegressor(len(model.keypoint_convention), model.num_body_joints, model.num_betas, width=32, blocks=1)
    net.load_state_dict(state)
    a = NeuralAnnot(model, net, {"pretrain"}, config=TrainConfig())
    a.net = torch.nn.parallel.DistributedDataParallel(a.net)
    idx = torch.arange(rank, len(target), world)
    loss, _ = a.losses(target.index(idx))
    loss.backward()
    torch.save({k: p.grad for k, p in a._module().named_parameters()}, os.path.join(out_dir, f"g{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow  # spawns 2 processes; hung once in a clean CI rehearsal: run with `pytest -m slow`
def test_ddp_two_gloo_processes_match_one_process(tmp_path, anny_model, make_synthetic):
    import torch.multiprocessing as mp

    target, _, _ = make_synthetic(anny_model, 8, seed=3)
    net = _net(anny_model)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), state, target), nprocs=2, join=True)
    single = NeuralAnnot(anny_model, net, {"pretrain"}, config=TrainConfig())
    loss, _ = single.losses(target)
    loss.backward()
    g0 = torch.load(tmp_path / "g0.pt")
    g1 = torch.load(tmp_path / "g1.pt")
    for k, p in net.named_parameters():
        assert torch.allclose(g0[k], g1[k])  # DDP all-reduced the same gradient on both ranks
        assert torch.allclose(g0[k], p.grad, atol=1e-5, rtol=1e-3), k  # = one process on all the data
