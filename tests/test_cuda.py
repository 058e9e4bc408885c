"""CUDA smoke tests: every fitter and training command on the GPU. They run where CUDA
is available (skipped on CPU-only machines such as CI); GPU speed lives in benchmarks/."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def cuda_model():
    from fit3d.body_models.anny_model import AnnyModel

    return AnnyModel(device="cuda")


@pytest.fixture(scope="module")
def cuda_batch(anny_model, make_synthetic):
    batch, _, _ = make_synthetic(anny_model, 8, seed=0)  # made on the CPU, fitted on the GPU
    return batch.to("cuda")


def _check(res, n):
    assert res.body_pose.shape[0] == n and torch.isfinite(res.body_pose).all() and torch.isfinite(res.transl).all()


def test_the_gpu_body_equals_the_cpu_body(cuda_model, anny_model):
    """On CUDA the tiny products take ``broadcast_matmul``: the same joints and keypoints as the CPU's."""
    g = torch.Generator().manual_seed(0)
    p = dict(global_orient=torch.randn(16, 3, generator=g),
             body_pose=torch.randn(16, anny_model.num_body_joints, 3, generator=g) * 0.5,
             betas=torch.randn(16, anny_model.num_betas, generator=g),
             transl=torch.tensor([0.0, 0.0, 3.0]).repeat(16, 1))
    with torch.no_grad():
        cpu = anny_model(**p)
        gpu = cuda_model(**{k: v.cuda() for k, v in p.items()})
    torch.testing.assert_close(gpu.keypoints_3d.cpu(), cpu.keypoints_3d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gpu.joints_3d.cpu(), cpu.joints_3d, atol=1e-5, rtol=1e-5)


def test_smplify_and_eft_on_cuda(cuda_model, cuda_batch):
    from fit3d.fitters.build import build_eft, build_smplify

    _check(build_smplify(cuda_model, "gmm")(cuda_batch), 8)
    _check(build_eft(cuda_model, steps=3)(cuda_batch), 8)
    _check(build_eft(cuda_model, steps=3, refine=True)(cuda_batch), 8)
    _check(build_eft(cuda_model, steps=3, finetune="fast")(cuda_batch), 8)
    _check(build_eft(cuda_model, steps=3, flip=False)(cuda_batch), 8)
    res = build_eft(cuda_model, steps=3, follow=True)(cuda_batch)  # follow the keypoints where it pays
    _check(res, 8)
    assert res.extras["followed"].device.type == "cuda"
    res = build_eft(cuda_model, steps=3, fallback=True)(cuda_batch)  # EFT (flip-averaged), SMPLify where it pays
    _check(res, 8)
    assert res.extras["fallback"].device.type == "cuda" and res.body_pose.device.type == "cuda"


def test_neuralannot_trains_on_cuda_with_every_recipe(cuda_model, cuda_batch):
    from fit3d.fitters.build import build_neuralannot

    annot = build_neuralannot(cuda_model, epochs=1)
    annot.config.min_steps_per_epoch, annot.config.batch_size, annot.config.synthetic_batch = 2, 8, 8
    log = annot.fit_dataset(cuda_batch, progress=False)
    assert len(log) == 1 and all(torch.isfinite(torch.tensor(v)) for v in log[0].values()
                                 if not isinstance(v, str))  # the phase is a name
    _check(annot(cuda_batch), 8)


def test_regressor_and_prototype_training_on_cuda(cuda_model):
    from fit3d.mocap import bundled_pose_set
    from fit3d.mocap.pose_set import load_pose_set
    from fit3d.training.regressor import train_regressor

    ps = load_pose_set(bundled_pose_set())
    model, stats = train_regressor(ps, cuda_model, rounds=1, people_per_round=128, batch_size=64, progress=False,
                                   recombined=0)
    assert next(model.parameters()).is_cuda and stats["steps"] == 4


@pytest.mark.parametrize("kind, length", [("vae", dict(epochs=1)), ("articulation", dict(steps=20))])
def test_prior_training_on_cuda(tmp_path, cuda_model, kind, length):
    """train_prior trains the VAE and the articulation prior on the body model's device (they trained on the
    CPU whatever --device said) and saves weights that load on the CPU."""
    from fit3d.mocap import bundled_pose_set
    from fit3d.priors.io import load_prior
    from fit3d.training.priors import train_prior

    out = tmp_path / f"{kind}.pt"
    train_prior(kind, bundled_pose_set(), out, progress=False, recombined=0, body_model=cuda_model, **length)
    prior = load_prior(out)
    assert all(p.device.type == "cpu" for p in prior.parameters()) and prior(torch.zeros(2, cuda_model.num_body_joints, 3)).isfinite().all()


@pytest.mark.parametrize("prior", ["l2", "vae", "articulation"])
def test_smplify_with_every_prior_on_cuda(cuda_model, cuda_batch, prior):
    """SMPLify's default schedule with each learned or plain pose prior, on the GPU."""
    from fit3d.fitters.build import build_smplify

    _check(build_smplify(cuda_model, prior)(cuda_batch), 8)


def test_fitting_commands_on_cuda(tmp_path, sample_dir):
    """``fit3d eft|smplify|neuralannot --device cuda`` on the bundled sample: every person fitted."""
    import json

    from click.testing import CliRunner

    from fit3d.cli.main import cli

    common = ["--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"), "--device", "cuda",
              "--no-progress"]
    commands = (["eft"], ["smplify", "--limit", "2"], ["neuralannot", "--epochs", "1", "--recipes", "pretrain,depth"])
    for command in commands:
        out = tmp_path / command[0]
        r = CliRunner().invoke(cli, [command[0], *common, "--out", str(out), *command[1:]])
        assert r.exit_code == 0, (command, r.output)
        summary = json.loads((out / "summary.json").read_text())["this_run"]
        assert summary["people_fitted"] > 0 and summary.get("people_failed", 0) == 0, (command, summary)


def test_smpl_family_setup_and_fitters_on_cuda(tmp_path, smpl_like_dir, make_synthetic):
    """setup-model (retargeting, priors, prototypes, regressor) and every fitter with a SMPL-family
    stand-in model on the GPU."""
    from click.testing import CliRunner

    from fit3d.body_models import build_body_model
    from fit3d.cli.main import cli
    from fit3d.fitters.build import build_eft, build_neuralannot, build_smplify

    r = CliRunner().invoke(cli, ["setup-model", "--model", "smpl", "--model-path", str(smpl_like_dir), "--quick",
                                 "--no-progress", "--device", "cuda"])
    assert r.exit_code == 0, r.output
    smpl = build_body_model("smpl", smpl_like_dir, device="cuda")
    batch, _, _ = make_synthetic(build_body_model("smpl", smpl_like_dir), 4, seed=1)
    batch = batch.to("cuda")
    _check(build_smplify(smpl)(batch), 4)
    _check(build_eft(smpl, steps=3)(batch), 4)
    _check(build_eft(smpl, steps=3, follow=True)(batch), 4)
    annot = build_neuralannot(smpl, epochs=1)
    annot.config.min_steps_per_epoch, annot.config.batch_size, annot.config.synthetic_batch = 2, 4, 4
    annot.fit_dataset(batch, progress=False)
    _check(annot(batch), 4)


def test_an_interrupted_vae_training_on_the_gpu_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """The VAE's dropout draws on the GPU: its checkpoint keeps that generator (found by a review)."""
    import numpy as np

    import fit3d.training.priors as tp
    from fit3d.training.checkpoint import save_checkpoint

    poses = np.random.default_rng(0).normal(0, 0.3, (300, 5, 3)).astype(np.float32)
    whole = tp.train_vae(poses, epochs=4, batch_size=64, progress=False, device="cuda").state_dict()
    ck = tmp_path / "vae.pt.partial"

    def stop_after_two(*args, **kwargs):
        save_checkpoint(*args, **kwargs)
        if args[2] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(tp, "save_checkpoint", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        tp.train_vae(poses, epochs=4, batch_size=64, progress=False, device="cuda", checkpoint=ck)
    monkeypatch.setattr(tp, "save_checkpoint", save_checkpoint)
    resumed = tp.train_vae(poses, epochs=4, batch_size=64, progress=False, device="cuda", checkpoint=ck).state_dict()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
