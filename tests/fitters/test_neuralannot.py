import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

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
    from fit3d.mocap.pose_set import load_pose_set

    return load_pose_set(bundled_pose_set())


def test_each_recipe_switch_changes_its_loss(anny_model, make_synthetic, pose_set):
    from fit3d.priors import build_prior
    from fit3d.training.regressor import to_batch

    target, _, _ = make_synthetic(anny_model, 8, seed=1)
    vae = build_prior("vae", anny_model)
    cfg = TrainConfig(epochs=1, min_steps_per_epoch=2, batch_size=4, synthetic_batch=4)
    annot = NeuralAnnot(anny_model, _net(anny_model), {"depth", "prior", "pretrain"}, pose_set, vae, cfg)
    syn = to_batch(annot._synthetic_pool(8, 0), [0, 1, 2, 3], anny_model.keypoint_convention)
    _, on = annot.losses(target, syn)
    assert {"2d", "3d", "vae", "l2", "shape"} <= set(on)
    _, no_depth = NeuralAnnot(anny_model, _net(anny_model), {"prior", "pretrain"}, None, vae, cfg).losses(target, syn)
    assert "3d" not in no_depth and "vae" in no_depth
    _, no_prior = NeuralAnnot(anny_model, _net(anny_model), {"depth", "pretrain"}, pose_set, None, cfg).losses(target, syn)
    assert "vae" not in no_prior and "l2" not in no_prior and "3d" in no_prior
    # pretrain on keeps the given weights; off starts from a new network of the same sizes (found by a
    # review: only the linear layers were reset, the LayerNorm gains and the zero output layer were not);
    # the caller's network is never changed (a copy is trained)
    net = _net(anny_model, seed=5)
    with torch.no_grad():
        net.trunk[0].net[0].weight.fill_(7.0)  # a LayerNorm gain
        net.ief[-1].weight.fill_(0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    kept = NeuralAnnot(anny_model, net, {"pretrain"}, config=cfg)
    assert all(torch.equal(kept.net.state_dict()[k], v) for k, v in before.items())
    scratch = NeuralAnnot(anny_model, net, set(), config=cfg).net
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())  # the caller's: untouched
    assert not torch.equal(scratch.inp.weight, before["inp.weight"])
    assert torch.equal(scratch.trunk[0].net[0].weight, torch.ones(32)) and not scratch.ief[-1].weight.any()
    again = NeuralAnnot(anny_model, _net(anny_model, seed=6), set(), config=cfg).net  # drawn from config.seed
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in scratch.state_dict().items())
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
    # ... and ends where an uninterrupted 3-epoch run ends, bit for bit
    c = NeuralAnnot(anny_model, _net(anny_model), {"depth", "pretrain"}, pose_set, None, cfg3)
    c.fit_dataset(target, progress=False)
    for k, v in c.net.state_dict().items():
        assert torch.equal(v, b.net.state_dict()[k]), k



def test_a_checkpoint_of_something_else_is_a_clear_error(tmp_path, anny_model, make_synthetic, pose_set):
    from fit3d.data.writers import write_torch

    target, _, _ = make_synthetic(anny_model, 8, seed=2)
    ck = tmp_path / "annotator.pt"
    write_torch(ck, {"kind": "gmm"})  # a weights file given as the checkpoint
    cfg = TrainConfig(epochs=1, min_steps_per_epoch=2, batch_size=8, synthetic_batch=8, lr=1e-3)
    a = NeuralAnnot(anny_model, _net(anny_model), {"depth", "pretrain"}, pose_set, None, cfg, checkpoint=ck)
    with pytest.raises(ValueError, match="not a checkpoint of this annotator.*delete it"):
        a.fit_dataset(target, progress=False)
    ck.write_text("text")
    with pytest.raises(ValueError, match="is not a torch file"):
        a.fit_dataset(target, progress=False)


def test_epoch_streams_are_distinct_and_take_any_seed():
    from fit3d.fitters.neuralannot import _epoch_generator

    draws = {tuple(torch.randint(0, 2**30, (4,), generator=_epoch_generator(seed, phase, epoch, rank)).tolist())
             for seed in (0, 12345, 2**40) for phase in ("select", "final") for epoch in (0, 1) for rank in (0, 1, 101)}
    assert len(draws) == 3 * 2 * 2 * 3
    with pytest.raises(ValueError):
        _epoch_generator(-1, "final", 0, 0)
    # the depth recipe's synthetic pools: one per (phase, epoch, rank), none shared with another
    # phase or with the order stream (they were (seed * 7919 + epoch) * 101 + rank: the final
    # phase repeated the selection's pools, and rank 101 of one epoch was rank 0 of the next)
    from fit3d.fitters.neuralannot import _epoch_seed

    pools = {_epoch_seed(0, phase, epoch, rank, stream=1) for phase in ("select", "final") for epoch in (0, 1)
             for rank in (0, 101)}
    orders = {_epoch_seed(0, phase, epoch, rank) for phase in ("select", "final") for epoch in (0, 1)
              for rank in (0, 101)}
    assert len(pools) == len(orders) == 8 and not pools & orders



def test_a_finished_checkpoint_says_there_is_nothing_to_train(tmp_path, anny_model, make_synthetic, pose_set,
                                                              caplog):
    target, _, _ = make_synthetic(anny_model, 8, seed=3)
    ck = tmp_path / "annotator.pt"
    cfg = TrainConfig(epochs=1, min_steps_per_epoch=2, batch_size=8, synthetic_batch=8)
    NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, None, None, cfg, checkpoint=ck).fit_dataset(
        target, progress=False)
    with caplog.at_level("INFO", logger="fit3d.fitters.neuralannot"):
        log = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, None, None, cfg,
                          checkpoint=ck).fit_dataset(target, progress=False)
    assert [e["epoch"] for e in log] == [1] and "already trained (epoch 1 of 1): nothing to train" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # a finished run rerun is no warning


def test_a_checkpoint_of_other_training_settings_is_not_resumed(tmp_path, anny_model, make_synthetic):
    """Resuming with other recipes or TrainConfig settings went on silently: epochs of two
    trainings mixed in one network (found by a new-user helper). Only ``epochs`` may change."""
    target, _, _ = make_synthetic(anny_model, 8, seed=3)
    ck = tmp_path / "annotator.pt"
    cfg = TrainConfig(epochs=1, min_steps_per_epoch=2, batch_size=8, synthetic_batch=8, holdout=0)
    NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, None, None, cfg, checkpoint=ck).fit_dataset(
        target, progress=False)
    for recipes, other in (({"pretrain"}, replace(cfg, lr=1e-3)), (set(), cfg)):
        with pytest.raises(ValueError, match="trained with other settings") as e:
            NeuralAnnot(anny_model, _net(anny_model), recipes, None, None, other, checkpoint=ck).fit_dataset(
                target, progress=False)
        assert ("lr: 0.0003 there, 0.001 now" if other is not cfg else "recipes: ['pretrain'] there, [] now") in str(e.value)
    log = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, None, None, replace(cfg, epochs=2),
                      checkpoint=ck).fit_dataset(target, progress=False)
    assert [e["epoch"] for e in log] == [1, 2]  # more epochs: resumed and trained on


def test_a_checkpoint_trained_on_another_set_of_people_is_not_resumed(tmp_path, anny_model, make_synthetic):
    """A trial: a folder's annotator, trained on one image set, annotated another set (and an image
    corrected after the run) without retraining: 37 of 56 people valid instead of 56."""
    import dataclasses

    target, _, _ = make_synthetic(anny_model, 8, seed=3)
    ck = tmp_path / "annotator.pt"
    cfg = TrainConfig(epochs=1, min_steps_per_epoch=2, batch_size=8, synthetic_batch=8, holdout=0)
    NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, None, None, cfg, checkpoint=ck).fit_dataset(
        target, progress=False)
    other, _, _ = make_synthetic(anny_model, 6, seed=4)
    moved = target.keypoints_2d.clone()
    moved[2, 5, :2] += 4.0  # one keypoint corrected
    for changed, people in ((other, "8 there, 6 now"), (dataclasses.replace(target, keypoints_2d=moved), "8 there, 8 now")):
        with pytest.raises(ValueError, match=rf"trained on another set of people \({people}"):
            NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, None, None, cfg, checkpoint=ck).fit_dataset(
                changed, progress=False)
    log = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, None, None, replace(cfg, epochs=2),
                      checkpoint=ck).fit_dataset(target, progress=False)
    assert [e["epoch"] for e in log] == [1, 2]  # the same set: resumed

def _select_cfg(**kw):
    base = dict(epochs=4, min_steps_per_epoch=2, batch_size=8, synthetic_batch=8, lr=1e-3, holdout=0.2,
                holdout_min_people=5, stop_tolerance=0.1)
    return TrainConfig(**{**base, **kw})


def test_holdout_split_is_fixed_disjoint_and_off_for_small_sets(anny_model):
    a = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=_select_cfg())
    train, held = a.holdout_split(30)
    assert len(held) == 6 and len(train) == 24
    assert sorted(torch.cat([train, held]).tolist()) == list(range(30))
    again = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=_select_cfg()).holdout_split(30)
    assert torch.equal(again[1], held)  # the same on every rank and every resume
    assert a.holdout_split(20) is None  # 4 held-out people: too few to judge
    assert NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=_select_cfg(holdout=0)).holdout_split(99) is None
    assert len(NeuralAnnot(anny_model, _net(anny_model), {"pretrain"},
                           config=_select_cfg(holdout_max_people=7)).holdout_split(1000)[1]) == 7


def _scripted(losses, fail_at=None):
    """A held_out_loss that returns ``losses`` in turn (and raises at call ``fail_at``)."""
    calls = []

    def held_out_loss(self, target, held, shard=(0, 1)):
        assert len(held) == 6
        calls.append(len(calls))
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        return losses[len(calls) - 1]

    return held_out_loss


def test_selection_stops_at_the_first_rise_then_retrains_that_length_on_everyone(anny_model, make_synthetic,
                                                                                  monkeypatch):
    target, _, _ = make_synthetic(anny_model, 30, seed=4)
    # start 1.0; epoch 1: 0.9 (best); epoch 2: 0.95 (within 10 % of 0.9); epoch 3: 1.0 (> 0.99): stop, 2 epochs
    monkeypatch.setattr(NeuralAnnot, "held_out_loss", _scripted([1.0, 0.9, 0.95, 1.0, 0.5]))
    a = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=_select_cfg())
    log = a.fit_dataset(target, progress=False)
    assert a.selected_epochs == 2 and a.held_out == [1.0, 0.9, 0.95, 1.0]
    assert [(e["phase"], e["epoch"]) for e in log] == [("select", 1), ("select", 2), ("select", 3),
                                                       ("final", 1), ("final", 2)]
    assert all(e["steps"] == 3 for e in log[:3]) and all(e["steps"] == 4 for e in log[3:])  # 24 vs 30 people
    # the final phase restarts from the starting weights: it equals plain training of 2 epochs on everyone
    b = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=_select_cfg(epochs=2, holdout=0))
    b.fit_dataset(target, progress=False)
    for k, v in b.net.state_dict().items():
        assert torch.equal(v, a.net.state_dict()[k]), k


def test_no_improvement_keeps_the_starting_network(anny_model, make_synthetic, monkeypatch):
    target, _, _ = make_synthetic(anny_model, 30, seed=5)
    monkeypatch.setattr(NeuralAnnot, "held_out_loss", _scripted([1.0, 1.2]))
    net = _net(anny_model)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    a = NeuralAnnot(anny_model, net, {"pretrain"}, config=_select_cfg())
    log = a.fit_dataset(target, progress=False)
    assert a.selected_epochs == 0 and [e["phase"] for e in log] == ["select"]
    for k, v in a.net.state_dict().items():
        assert torch.equal(v, start[k]), k


def test_an_interrupted_selection_resumes_and_finishes(tmp_path, anny_model, make_synthetic, monkeypatch):
    target, _, _ = make_synthetic(anny_model, 30, seed=6)
    ck = tmp_path / "annotator.pt"
    monkeypatch.setattr(NeuralAnnot, "held_out_loss", _scripted([1.0, 0.9, 0.8], fail_at=3))
    with pytest.raises(KeyboardInterrupt):  # killed while judging epoch 2
        NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=_select_cfg(), checkpoint=ck).fit_dataset(
            target, progress=False)
    saved = torch.load(ck, weights_only=False)
    assert saved["phase"] == "select" and saved["epoch"] == 1 and saved["held_out"] == [1.0, 0.9]
    monkeypatch.setattr(NeuralAnnot, "held_out_loss", _scripted([0.85, 0.7, 2.0]))
    b = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=_select_cfg(), checkpoint=ck)
    log = b.fit_dataset(target, progress=False)
    assert b.held_out == [1.0, 0.9, 0.85, 0.7, 2.0] and b.selected_epochs == 3
    assert [(e["phase"], e["epoch"]) for e in log] == [("select", i) for i in range(1, 5)] + [
        ("final", i) for i in range(1, 4)]
    assert torch.load(ck, weights_only=False)["phase"] == "final"


def _torchrun(*args, timeout=300):
    """``torchrun --standalone --nproc-per-node 2 ARGS``; a hang fails the test after ``timeout`` s."""
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_ddp_two_gloo_processes_train_in_step_and_annotate_each_image_once(tmp_path, sample_dir):
    """2 ranks, depth recipe, uneven shares: same steps, same weights, each image written once."""
    _torchrun(Path(__file__).with_name("ddp_neuralannot_worker.py"), sample_dir, tmp_path)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0["world"] == r1["world"] == 2
    assert [e["steps"] for e in r0["log"]] == [e["steps"] for e in r1["log"]] == [2, 2]  # from the larger share
    assert r0["log"][0]["3d"] != r1["log"][0]["3d"]  # rank-seeded synthetic batches
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k  # DDP kept the ranks' weights identical
    assert not all(torch.equal(v, r1["initial"][k]) for k, v in r0["initial"].items())  # (they began apart)
    for k, v in r0["initial"].items():  # what an annotation must beat: rank 0's starting network, on every rank
        assert torch.equal(v, r0["pretrained"][k]) and torch.equal(v, r1["pretrained"][k]), k
    ck = torch.load(tmp_path / "annotator.pt", weights_only=False)
    assert ck["epoch"] == 2
    fits = tmp_path / "fits"
    summaries = sorted(fits.glob("summary.shard-*-of-2.json"))
    assert [p.name for p in summaries] == ["summary.shard-1-of-2.json", "summary.shard-2-of-2.json"]
    runs = [json.loads(p.read_text())["this_run"] for p in summaries]
    assert sum(r["images_written"] for r in runs) == len(list(fits.glob("*.npz"))) == 4  # each image by one rank
    from fit3d.data.readers import read_coco
    from fit3d.pipeline.selection import shard_images

    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    assert [r["images_written"] for r in runs] == [len(shard_images(images, (i, 2))) for i in range(2)]
    assert sum(r["people_fitted"] for r in runs) == 12


def test_neuralannot_command_under_torchrun(tmp_path, sample_dir):
    out = tmp_path / "na"
    r = _torchrun("-m", "fit3d.cli.main", "neuralannot", "--images", sample_dir, "--annotations",
                  sample_dir / "test_coco.json", "--out", out, "--epochs", "2", "--recipes", "pretrain",
                  "--holdout", "0.5", "--no-progress")
    assert r.stderr.count("annotator trained on 12 people") == 1  # rank 0 speaks
    # the length was chosen on 6 held-out people (3 per rank, loss all-reduced) and then trained
    assert r.stderr.count("training length chosen on held-out people") == 1
    ck = torch.load(out / "annotator.pt", weights_only=False)
    assert ck["phase"] == "final" and ck["epoch"] == ck["selected_epochs"] and len(ck["held_out"]) >= 2
    assert len(list(out.glob("*.npz"))) == 4 and len(list(out.glob("summary.shard-*-of-2.json"))) == 2


def test_annotation_kept_only_where_it_reprojects_much_better_than_the_pretrained_prediction(anny_model,
                                                                                               make_synthetic):
    from fit3d.fitters.neuralannot import ACCEPT_RATIO, predict
    from fit3d.regressors import bundled_regressor
    from fit3d.regressors.io import load_regressor

    batch, _, _ = make_synthetic(anny_model, 8, seed=5, noise_px=2.0)
    _scramble(batch, 0)  # nobody explains person 0: the prediction is not valid there
    a = NeuralAnnot(anny_model, load_regressor(bundled_regressor()), {"pretrain"}, config=TrainConfig(epochs=0))
    assert a.accept_ratio == ACCEPT_RATIO and a.extra_defaults == {"annotator_kept": False}
    torch.manual_seed(0)
    with torch.no_grad():  # "training" moves the annotator away from the pretrained copy it keeps
        for p in a.net.parameters():
            p.add_(torch.randn_like(p) * 0.003)
    ann, pre = predict(anny_model, a.net, batch), predict(anny_model, a.pretrained, batch)
    ratio = pre.reproj_error_px / ann.reproj_error_px
    assert pre.valid.sum() >= 4 and not pre.valid[0] and not torch.allclose(ann.body_pose, pre.body_pose)
    both = ratio[pre.valid & ann.valid].sort().values  # a mixed batch among the people both fit validly
    assert len(both) >= 2
    a.accept_ratio = float(both[:2].mean())
    keep = ((ratio > a.accept_ratio) | ~pre.valid) & (ann.valid | ~pre.valid)
    assert keep[0] and not keep[pre.valid].all() and keep[pre.valid].any()
    res = a(batch)
    assert torch.equal(res.extras["annotator_kept"], keep)
    for name in ("global_orient", "body_pose", "betas", "transl", "joints_3d", "keypoints_3d", "keypoints_2d_fit",
                 "reproj_error_px", "valid"):
        want = torch.where(keep.view(-1, *[1] * (getattr(ann, name).dim() - 1)), getattr(ann, name),
                           getattr(pre, name))
        assert torch.equal(getattr(res, name), want), name
    # the paper's NeuralAnnot (accept_ratio=None), and no pretrained network without the recipe: always the annotation
    plain = NeuralAnnot(anny_model, a.net, {"pretrain"}, config=TrainConfig(epochs=0), accept_ratio=None)
    assert plain.pretrained is None and plain.extra_defaults == {}
    assert "annotator_kept" not in plain(batch).extras and torch.equal(plain(batch).body_pose, ann.body_pose)
    assert NeuralAnnot(anny_model, _net(anny_model), set(), config=TrainConfig(epochs=0)).pretrained is None


def test_refined_annotation_reports_eft_extras_and_the_choice(anny_model, make_synthetic):
    from fit3d.regressors import bundled_regressor
    from fit3d.regressors.io import load_regressor

    batch, _, _ = make_synthetic(anny_model, 4, seed=6, noise_px=2.0)
    a = NeuralAnnot(anny_model, load_regressor(bundled_regressor()), {"pretrain"}, config=TrainConfig(epochs=0),
                    refine_steps=2, accept_ratio=float("inf"))
    assert set(a.extra_defaults) == {"prototype", "finetuned", "annotator_kept"}
    from fit3d.fitters.neuralannot import predict

    from fit3d.fitters.eft import EFT

    _scramble(batch, 1)
    res, pre = a(batch), predict(anny_model, a.pretrained, batch)
    refined = EFT(anny_model, a.net, steps=2)(batch)
    kept = res.extras["annotator_kept"]
    # an infinite ratio keeps the annotation only where the prediction is not valid: there the
    # refined annotation with EFT's extras and steps, elsewhere the prediction, not fine-tuned, no steps
    assert torch.equal(kept, ~pre.valid) and kept[1] and pre.valid.any()
    assert torch.equal(res.body_pose[~kept], pre.body_pose[~kept])
    assert not res.extras["finetuned"][~kept].any() and (res.iterations[~kept] == 0).all()
    assert torch.allclose(res.body_pose[kept], refined.body_pose[kept], atol=1e-6)
    assert torch.equal(res.extras["finetuned"][kept], refined.extras["finetuned"][kept])
    assert (res.iterations[kept] == 2).all()


def _scramble(batch, i: int) -> None:
    """Person ``i``'s keypoint positions shuffled among its keypoints (in place): no body explains them."""
    g = torch.Generator().manual_seed(i)
    xy = batch.keypoints_2d[i, :, :2]
    batch.keypoints_2d[i, :, :2] = xy[torch.randperm(len(xy), generator=g)]


def test_annotation_state_names_what_decides_the_outputs(anny_model):
    net = _net(anny_model)
    a = NeuralAnnot(anny_model, net, {"pretrain"}, config=TrainConfig(epochs=0))
    s = a.annotation_state()
    assert s == NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=TrainConfig(epochs=0)).annotation_state()
    assert set(s) == {"epoch", "phase", "refine_steps", "accept_ratio", "weights"}
    assert NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=TrainConfig(epochs=0),
                       accept_ratio=2.0).annotation_state() != s
    assert NeuralAnnot(anny_model, _net(anny_model, seed=1), {"pretrain"},
                       config=TrainConfig(epochs=0)).annotation_state()["weights"] != s["weights"]
    with torch.no_grad():  # the annotator trained on (its pretrained copy unchanged): another annotator
        a.net.inp.bias.add_(1.0)
    assert a.annotation_state()["weights"] != s["weights"]


def test_more_epochs_after_a_held_out_choice_keep_the_chosen_length_and_say_so(tmp_path, anny_model, make_synthetic,
                                                                              caplog):
    target, _, _ = make_synthetic(anny_model, 30, seed=4)
    ck = tmp_path / "annotator.pt"
    first = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=_select_cfg(epochs=2), checkpoint=ck)
    first.fit_dataset(target, progress=False)
    assert first.selected_epochs is not None
    with caplog.at_level("WARNING", logger="fit3d.fitters.neuralannot"):
        again = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=_select_cfg(epochs=3), checkpoint=ck)
        again.fit_dataset(target, progress=False)
    assert again.epoch == first.epoch == first.selected_epochs  # the chosen length stands
    assert "was chosen on held-out people" in caplog.text and "epochs=3 does not change it" in caplog.text


def test_building_the_annotator_leaves_the_callers_random_state_alone(anny_model):
    """Building NeuralAnnot draws nothing from the caller's random stream: without ``pretrain`` the
    network is re-initialised from ``config.seed`` (the same weights whatever the caller's seed)."""
    nets = [_net(anny_model, seed=s) for s in (1, 2, 3, 4)]
    weights = []
    for net, recipes in zip(nets, ({"pretrain"}, set(), set())):
        torch.manual_seed(123)
        a = NeuralAnnot(anny_model, net, recipes, config=TrainConfig(epochs=0, seed=5))
        assert torch.equal(torch.rand(3), torch.manual_seed(123) and torch.rand(3))
        weights.append(a.net.inp.weight.detach().clone())
    assert torch.equal(weights[0], nets[0].inp.weight) and not torch.equal(weights[0], weights[1])
    assert torch.equal(weights[1], weights[2])  # from config.seed, not from the network given
    other = NeuralAnnot(anny_model, nets[3], set(), config=TrainConfig(epochs=0, seed=6))
    assert not torch.equal(other.net.inp.weight, weights[1])
    with pytest.raises(ValueError, match="synthetic"):
        NeuralAnnot(anny_model, nets[3], {"synthetic"})


def test_fit_dataset_cleans_its_target_as_fitting_does(anny_model, make_synthetic):
    """Found by a review: a labelled keypoint with NaN coordinates (the Python API; the command line
    cleans its batches) made the loss, then every weight, NaN, and the held-out choice never stopped."""
    target, _, _ = make_synthetic(anny_model, 12, seed=3)
    target.keypoints_2d[0, 3, :2] = float("nan")
    target.keypoints_2d[1, :, 2] = 2.0  # COCO's visibility 2 read as a confidence
    cfg = TrainConfig(epochs=1, min_steps_per_epoch=2, batch_size=4, holdout=0)
    a = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=cfg)
    log = a.fit_dataset(target, progress=False)
    assert all(torch.isfinite(w).all() for w in a.net.parameters()) and all(
        v == v for v in log[-1].values() if isinstance(v, float))


def test_a_second_call_trains_on_as_one_call_would(anny_model, make_synthetic):
    """Found by a review: without a checkpoint, calling fit_dataset again with more epochs restarted Adam."""
    target, _, _ = make_synthetic(anny_model, 12, seed=3)
    cfg = TrainConfig(epochs=1, min_steps_per_epoch=2, batch_size=4, holdout=0)
    a = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=cfg)
    a.fit_dataset(target, progress=False)
    a.config.epochs = 2
    a.fit_dataset(target, progress=False)
    b = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=replace(cfg, epochs=2))
    b.fit_dataset(target, progress=False)
    assert a.epoch == b.epoch == 2
    for x, y in zip(a.net.parameters(), b.net.parameters()):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


def test_the_prior_is_a_loss_not_trained_and_an_untrainable_head_is_frozen(anny_model, make_synthetic):
    from fit3d.priors import build_prior

    target, _, _ = make_synthetic(anny_model, 8, seed=2)
    vae = build_prior("vae", anny_model)
    cfg = TrainConfig(epochs=1, min_steps_per_epoch=2, batch_size=4, holdout=0)
    NeuralAnnot(anny_model, _net(anny_model), {"pretrain", "prior"}, prior=vae, config=cfg).fit_dataset(
        target, progress=False)
    assert all(p.grad is None for p in vae.parameters())  # (18 of 20 got gradients before)
    protos = torch.zeros(3, anny_model.num_body_joints, 3)
    net = KeypointRegressor(len(anny_model.keypoint_convention), anny_model.num_body_joints, anny_model.num_betas,
                            width=32, blocks=1, prototypes=protos)
    # without the depth recipe nothing trains the prototype choice: frozen (DDP failed on its missing gradient)
    assert not any(p.requires_grad for p in NeuralAnnot(anny_model, net, {"pretrain"}, config=cfg).net.select.parameters())
    assert all(p.requires_grad for p in NeuralAnnot(anny_model, net, {"pretrain", "depth"}, pose_set={},
                                                    config=cfg).net.select.parameters())


def test_a_resume_with_another_world_size_says_it_will_not_match(tmp_path, anny_model, make_synthetic, caplog):
    target, _, _ = make_synthetic(anny_model, 8, seed=2)
    ck = tmp_path / "annotator.pt"
    cfg = TrainConfig(epochs=1, min_steps_per_epoch=2, batch_size=4, holdout=0)
    NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=cfg, checkpoint=ck).fit_dataset(target,
                                                                                                   progress=False)
    state = torch.load(ck, weights_only=False)
    assert state["world"] == 1
    state["world"] = 4  # as if trained by 4 ranks
    torch.save(state, ck)
    with caplog.at_level("WARNING", logger="fit3d.fitters.neuralannot"):
        NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, config=replace(cfg, epochs=2),
                    checkpoint=ck).fit_dataset(target, progress=False)
    assert "trained by 4 process(es), this run has 1" in caplog.text


def test_diverged_training_stops_with_a_reason_and_saves_nothing(tmp_path, anny_model, make_synthetic):
    target, _, _ = make_synthetic(anny_model, 8, seed=2)
    ck = tmp_path / "annotator.pt"
    a = NeuralAnnot(anny_model, _net(anny_model), {"pretrain"}, checkpoint=ck,
                    config=TrainConfig(epochs=1, min_steps_per_epoch=1, batch_size=4, holdout=0))
    with torch.no_grad():
        a.net.inp.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"\(epoch 1\) diverged"):
        a.fit_dataset(target, progress=False)
    assert not ck.exists()


def test_a_checkpoint_needs_a_network_that_can_be_saved(tmp_path, anny_model):
    from fit3d.regressors.flip import FlipAveraged

    with pytest.raises(TypeError, match="FlipAveraged"):
        NeuralAnnot(anny_model, FlipAveraged(_net(anny_model), anny_model), {"pretrain"},
                    checkpoint=tmp_path / "a.pt")
