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


def test_smplify_and_eft_on_cuda(cuda_model, cuda_batch):
    from fit3d.fitters.build import build_eft, build_smplify

    _check(build_smplify(cuda_model, "gmm")(cuda_batch), 8)
    _check(build_eft(cuda_model, steps=3)(cuda_batch), 8)
    _check(build_eft(cuda_model, steps=3, refine=True)(cuda_batch), 8)
    _check(build_eft(cuda_model, steps=3, finetune="fast")(cuda_batch), 8)


def test_neuralannot_trains_on_cuda_with_every_recipe(cuda_model, cuda_batch):
    from fit3d.fitters.build import build_neuralannot

    annot = build_neuralannot(cuda_model, epochs=1)
    annot.config.min_steps_per_epoch, annot.config.batch_size, annot.config.synthetic_batch = 2, 8, 8
    log = annot.fit_dataset(cuda_batch, progress=False)
    assert len(log) == 1 and all(torch.isfinite(torch.tensor(v)) for v in log[0].values())
    _check(annot(cuda_batch), 8)


def test_regressor_and_prototype_training_on_cuda(cuda_model):
    from fit3d.mocap import bundled_pose_set
    from fit3d.training.priors import load_pose_set
    from fit3d.training.regressor import train_regressor

    ps = load_pose_set(bundled_pose_set())
    model, stats = train_regressor(ps, cuda_model, rounds=1, people_per_round=128, batch_size=64, progress=False,
                                   recombined=0)
    assert next(model.parameters()).is_cuda and stats["steps"] == 4
