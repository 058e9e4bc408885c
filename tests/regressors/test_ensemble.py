"""Deep ensembles of regressors: the mean of the members, fine-tuned through member 0 by EFT."""

import copy
import pickle

import pytest
import torch

from fit3d.fitters.eft import EFT
from fit3d.regressors.ensemble import EnsembleRegressor
from fit3d.regressors.flip import FlipAveraged
from fit3d.regressors.keypoint_regressor import KeypointRegressor
from fit3d.regressors.io import load_regressor, save_regressor
from tests.conftest import synthetic_people


def _regressor(model, seed=0, width=32):
    torch.manual_seed(seed)
    reg = KeypointRegressor(len(model.keypoint_convention), model.num_body_joints, model.num_betas, width=width)
    with torch.no_grad():  # IEF's last layer starts at zero: give each member its own prediction
        reg.ief[-1].weight.normal_(0, 0.05)
    return reg.eval()


def test_prediction_is_the_mean_of_the_members_raw_outputs(anny_model):
    a, b = _regressor(anny_model, 0), _regressor(anny_model, 1)
    ens = EnsembleRegressor([a, b])
    batch, _, _ = synthetic_people(anny_model, 3, seed=2)
    f = ens.features(batch)
    with torch.no_grad():
        raw = 0.5 * (a.regress_with(a.fine_tuning_params(), f)[0] + b.regress_with(b.fine_tuning_params(), f)[0])
        expected, got = a.decode(raw), ens(f)
        single = a(f)
    for k in ("global_orient", "body_pose", "betas", "cam"):
        assert torch.allclose(got[k], expected[k], atol=1e-5), k
    assert not torch.allclose(got["body_pose"], single["body_pose"], atol=1e-3)  # the members differ
    with torch.no_grad():  # the correction kept for these features is not reused once a member changed
        b.ief[-1].bias.add_(0.1)
        assert not torch.allclose(ens(f)["betas"], got["betas"], atol=1e-3)
        f.mul_(1.01)  # nor for changed features
        assert not torch.allclose(ens.correction(f), ens.correction(f * (1 / 1.01)), atol=1e-6)


def test_flip_averaged_ensemble_is_the_mean_of_the_flip_averaged_members(anny_model):
    """Through :class:`FlipAveraged` the correction is per row (the person and its mirror image)."""
    a, b = _regressor(anny_model, 0), _regressor(anny_model, 1)
    batch, _, _ = synthetic_people(anny_model, 3, seed=7)
    fa, fb, fe = FlipAveraged(a, anny_model), FlipAveraged(b, anny_model), FlipAveraged(EnsembleRegressor([a, b]), anny_model)
    f = fe.features(batch)

    def raw(flip, reg):
        p, _ = reg.regress_with(reg.fine_tuning_params(), f)
        return 0.5 * (p[:, 0] + p[:, 1, flip.mirror_index] * flip.mirror_sign)

    with torch.no_grad():
        expected = a.decode(0.5 * (raw(fa, a) + raw(fb, b)))
        got = fe(f)
        with torch.inference_mode():  # inference tensors have no version counter: computed afresh
            inf = fe(fe.features(batch))
    for k in ("global_orient", "body_pose", "betas", "cam"):
        assert torch.allclose(got[k], expected[k], atol=1e-5), k
        assert torch.allclose(inf[k], expected[k], atol=1e-5), k


def test_eft_through_an_ensemble_of_one_network_twice_is_eft_of_that_network(anny_model):
    """Member 0 is fine-tuned at its own rate: with identical members the correction is zero and
    EFT gives what it gives on the single network (flip-averaged, as the main job runs)."""
    batch, _, _ = synthetic_people(anny_model, 4, seed=3)
    reg = _regressor(anny_model, 0)
    single = EFT(anny_model, FlipAveraged(reg, anny_model), steps=5, lr=1e-3)(batch)
    ens = EnsembleRegressor([copy.deepcopy(reg), copy.deepcopy(reg)])
    both = EFT(anny_model, FlipAveraged(ens, anny_model), steps=5, lr=1e-3)(batch)
    assert torch.allclose(single.body_pose, both.body_pose, atol=1e-5)
    assert torch.allclose(single.transl, both.transl, atol=1e-5)


def test_eft_starts_at_the_mean_and_fine_tunes_only_member_0(anny_model):
    batch, _, _ = synthetic_people(anny_model, 3, seed=4)
    a, b = _regressor(anny_model, 0), _regressor(anny_model, 1)
    ens = EnsembleRegressor([a, b])
    before = {k: v.clone() for k, v in ens.state_dict().items()}
    zero = EFT(anny_model, ens, steps=0, accept_ratio=None)(batch)
    with torch.no_grad():
        mean = ens.predict(batch)
    assert torch.allclose(zero.body_pose, mean["body_pose"], atol=1e-5)
    tuned = EFT(anny_model, ens, steps=5, lr=1e-3, accept_ratio=None)(batch)
    assert not torch.allclose(tuned.body_pose, zero.body_pose, atol=1e-4)  # it moved
    assert all(torch.equal(v, before[k]) for k, v in ens.state_dict().items())  # per-person copies only


def test_saved_and_loaded_ensemble_predicts_the_same(anny_model, tmp_path):
    ens = EnsembleRegressor([_regressor(anny_model, 0), _regressor(anny_model, 1), _regressor(anny_model, 2)])
    save_regressor(ens, tmp_path / "ens.pt")
    back = load_regressor(tmp_path / "ens.pt")
    assert isinstance(back, EnsembleRegressor) and len(back.members) == 3
    batch0, _, _ = synthetic_people(anny_model, 2, seed=4)
    ens.correction(ens.features(batch0))  # a correction kept from a call does not stop pickling or copying
    assert ens._last is not None
    assert pickle.loads(pickle.dumps(ens))._last is None and copy.deepcopy(ens)._last is None
    batch, _, _ = synthetic_people(anny_model, 2, seed=5)
    with torch.no_grad():
        assert torch.equal(back.predict(batch)["body_pose"], ens.predict(batch)["body_pose"])


def test_members_must_agree(anny_model):
    from fit3d.regressors.plain import PlainRegressor

    with pytest.raises(TypeError, match="KeypointRegressor"):
        EnsembleRegressor([_regressor(anny_model), PlainRegressor(_regressor(anny_model))])
    with pytest.raises(TypeError, match="functional_call"):
        PlainRegressor(EnsembleRegressor([_regressor(anny_model, 0), _regressor(anny_model, 1)]))
    with pytest.raises(ValueError, match="two or more"):
        EnsembleRegressor([_regressor(anny_model)])
    with pytest.raises(ValueError, match="differ in size"):
        EnsembleRegressor([_regressor(anny_model, width=32), _regressor(anny_model, width=48)])
    protos = torch.zeros(2, anny_model.num_body_joints, 3)
    pm = KeypointRegressor(len(anny_model.keypoint_convention), anny_model.num_body_joints, anny_model.num_betas,
                           width=32, prototypes=protos)
    with pytest.raises(ValueError, match="prototype"):
        EnsembleRegressor([pm, copy.deepcopy(pm)])


def test_neuralannot_trains_the_first_member(anny_model):
    from fit3d.fitters.neuralannot import NeuralAnnot, TrainConfig

    a, b = _regressor(anny_model, 0), _regressor(anny_model, 1)
    annot = NeuralAnnot(anny_model, EnsembleRegressor([a, b]), {"pretrain"}, config=TrainConfig(epochs=0))
    assert type(annot.net) is type(a) and annot.net is not a  # a copy of the first member is trained
    assert all(torch.equal(x, y) for x, y in zip(annot.net.state_dict().values(), a.state_dict().values()))
    assert all(torch.equal(x, y) for x, y in zip(annot.pretrained.state_dict().values(), a.state_dict().values()))
