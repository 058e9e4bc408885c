import pytest
import torch

from fit3d.fitters import EFT
from fit3d.fitters import losses as L
from fit3d.regressors.plain import PlainRegressor
from fit3d.regressors.keypoint_regressor import KeypointRegressor


@pytest.fixture(scope="module")
def regressor(anny_model):
    torch.manual_seed(0)
    m = KeypointRegressor(len(anny_model.keypoint_convention), anny_model.num_body_joints, anny_model.num_betas,
                          width=64, blocks=1)
    for p in m.parameters():  # a random but non-trivial network
        torch.nn.init.normal_(p, std=0.02)
    return m.eval()


def test_batched_equals_one_by_one(anny_model, make_synthetic, regressor):
    batch, _, _ = make_synthetic(anny_model, 4, seed=2, noise_px=1.0)
    eft = EFT(anny_model, regressor, steps=5, lr=1e-3)
    together = eft(batch)
    for i in range(4):
        alone = eft(batch.index(slice(i, i + 1)))
        for k in ("global_orient", "body_pose", "betas", "transl", "keypoints_2d_fit"):
            a, b = getattr(together, k)[i], getattr(alone, k)[0]
            assert torch.allclose(a, b, atol=2e-4, rtol=1e-4), (k, (a - b).abs().max())


def test_weights_reset_between_samples(anny_model, make_synthetic, regressor):
    batch, _, _ = make_synthetic(anny_model, 2, seed=4)
    before = {k: v.clone() for k, v in regressor.state_dict().items()}
    eft = EFT(anny_model, regressor, steps=5, lr=1e-3)
    first = eft(batch.index(slice(0, 1)))
    eft(batch.index(slice(1, 2)))  # fine-tune on someone else
    again = eft(batch.index(slice(0, 1)))
    assert torch.allclose(first.body_pose, again.body_pose, atol=1e-6)
    for k, v in regressor.state_dict().items():
        assert torch.equal(v, before[k]), k  # the pretrained weights are never touched


def test_fine_tuning_reduces_2d_error(anny_model, make_synthetic, regressor):
    batch, _, _ = make_synthetic(anny_model, 3, seed=6)
    zero = EFT(anny_model, regressor, steps=0)(batch)
    tuned = EFT(anny_model, regressor, steps=40, lr=3e-3)(batch)
    assert tuned.reproj_error_px.mean() < zero.reproj_error_px.mean()
    assert (tuned.iterations == 40).all()
    refined = EFT(anny_model, regressor, steps=5, lr=3e-3, refine=True)(batch)
    assert torch.isfinite(refined.transl).all() and (refined.iterations >= 5).all()
    clean = ~refined.extras["noisy_keypoints"]  # clean keypoints: refined further; noisy: the EFT output kept
    assert (refined.iterations[clean] > 5).all() and (refined.iterations[~clean] == 5).all()


def test_pose_anchor_holds_the_pose_near_the_prediction(anny_model, make_synthetic, regressor):
    batch, _, _ = make_synthetic(anny_model, 3, seed=6, noise_px=2.0)
    start = EFT(anny_model, regressor, steps=0)(batch).body_pose
    free = EFT(anny_model, regressor, steps=40, lr=3e-3, anchor_weight=0.0)(batch)
    held = EFT(anny_model, regressor, steps=40, lr=3e-3, anchor_weight=1e3)(batch)
    moved = lambda r: (r.body_pose - start).norm(dim=-1).mean()  # noqa: E731
    assert moved(held) < 0.5 * moved(free)
    assert held.reproj_error_px.mean() >= free.reproj_error_px.mean()  # the fit gives up some reprojection


def test_per_person_layers_equal_the_generic_path(anny_model, make_synthetic, regressor):
    batch, _, _ = make_synthetic(anny_model, 3, seed=3, noise_px=1.0)
    fast = EFT(anny_model, regressor, steps=5, lr=1e-3)(batch)
    generic = EFT(anny_model, PlainRegressor(regressor), steps=5, lr=1e-3)(batch)
    for k in ("body_pose", "betas", "transl"):
        assert torch.allclose(getattr(fast, k), getattr(generic, k), atol=2e-4, rtol=1e-4), k
    subset = dict(finetune=("inp", "ief.4"))
    fast = EFT(anny_model, regressor, steps=5, lr=1e-3, **subset)(batch)
    generic = EFT(anny_model, PlainRegressor(regressor), steps=5, lr=1e-3, finetune=("inner.inp", "inner.ief.4"))(batch)
    assert torch.allclose(fast.body_pose, generic.body_pose, atol=2e-4, rtol=1e-4)


def test_finetune_subset(anny_model, make_synthetic, regressor):
    batch, _, _ = make_synthetic(anny_model, 3, seed=6)
    zero = EFT(anny_model, regressor, steps=0)(batch)
    every = EFT(anny_model, regressor, steps=20, lr=3e-3)(batch)
    some = EFT(anny_model, regressor, steps=20, lr=3e-3, finetune=("inp", "ief.4"))(batch)
    assert some.reproj_error_px.mean() < zero.reproj_error_px.mean()
    assert not torch.allclose(some.body_pose, every.body_pose, atol=1e-4)  # the subset really is a subset
    together = EFT(anny_model, regressor, steps=5, lr=1e-3, finetune=("ief",))(batch)
    alone = EFT(anny_model, regressor, steps=5, lr=1e-3, finetune=("ief",))(batch.index(slice(1, 2)))
    assert torch.allclose(together.body_pose[1], alone.body_pose[0], atol=2e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="matches none"):
        EFT(anny_model, regressor, finetune=("backbone",))


def test_per_person_layers_with_prototypes(anny_model, make_synthetic):
    torch.manual_seed(1)
    J = anny_model.num_body_joints
    m = KeypointRegressor(len(anny_model.keypoint_convention), J, anny_model.num_betas, width=64, blocks=1,
                          prototypes=torch.randn(3, J, 3) * 0.3)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.02)
    m.eval()
    batch, _, _ = make_synthetic(anny_model, 3, seed=8, noise_px=1.0)
    fast = EFT(anny_model, m, steps=4, lr=1e-3)(batch)
    generic = EFT(anny_model, PlainRegressor(m), steps=4, lr=1e-3)(batch)
    assert torch.equal(fast.extras["prototype"], generic.extras["prototype"])
    assert torch.allclose(fast.body_pose, generic.body_pose, atol=2e-4, rtol=1e-4)


def test_finetune_names(anny_model, regressor):
    assert EFT(anny_model, regressor, finetune="ief.2")._tuned == ["ief.2.weight", "ief.2.bias"]  # a string is one name
    assert set(EFT(anny_model, regressor, finetune=("ief.0",))._tuned) == {"ief.0.weight.h", "ief.0.weight.p",
                                                                          "ief.0.bias"}
    with pytest.raises(ValueError, match="matches none"):
        EFT(anny_model, regressor, finetune=("ief.",))  # prefixes end at a dot boundary


def test_fine_tuned_output_kept_only_where_it_reprojects_much_better(anny_model, make_synthetic, regressor):
    batch, _, _ = make_synthetic(anny_model, 4, seed=5, noise_px=2.0)
    # the random network's predictions reproject badly: a loose validity rule makes them count as fits
    kw = dict(steps=10, lr=3e-3, valid_fraction=10.0)
    tuned = EFT(anny_model, regressor, accept_ratio=None, **kw)(batch)  # the paper's EFT: always fine-tuned
    start = EFT(anny_model, regressor, steps=0, valid_fraction=10.0)(batch)
    assert tuned.extras["finetuned"].all() and not start.extras["finetuned"].any()
    never = EFT(anny_model, regressor, accept_ratio=float("inf"), **kw)(batch)
    assert not never.extras["finetuned"].any() and (never.iterations == 10).all()
    assert torch.allclose(never.body_pose, start.body_pose, atol=1e-6)
    assert torch.allclose(never.transl, start.transl, atol=1e-6)
    ratio = start.reproj_error_px / tuned.reproj_error_px
    assert ratio.max() > ratio.min()
    k = float(ratio.sort().values[1:3].mean())  # between the 2nd and 3rd person's ratio: a mixed batch
    mixed = EFT(anny_model, regressor, accept_ratio=k, **kw)(batch)
    keep = ratio > k
    assert torch.equal(mixed.extras["finetuned"], keep) and 0 < int(keep.sum()) < 4
    for name in ("global_orient", "body_pose", "betas", "transl", "joints_3d", "keypoints_3d", "keypoints_2d_fit",
                 "reproj_error_px", "loss"):
        want = torch.where(keep.view(-1, *[1] * (getattr(tuned, name).dim() - 1)), getattr(tuned, name),
                           getattr(start, name))
        assert torch.allclose(getattr(mixed, name), want, atol=1e-5), name


def test_an_invalid_prediction_is_always_fine_tuned(anny_model, make_synthetic, regressor):
    batch, _, _ = make_synthetic(anny_model, 4, seed=5, noise_px=2.0)
    # a validity threshold between the 2nd and 3rd person's error: some predictions valid, some not
    fraction = (L.person_scale(batch.keypoints_2d, batch.bbox).reciprocal()
                * EFT(anny_model, regressor, steps=0)(batch).reproj_error_px).sort().values[1:3].mean().item()
    start = EFT(anny_model, regressor, steps=0, valid_fraction=fraction)(batch)
    assert start.valid.any() and not start.valid.all()
    res = EFT(anny_model, regressor, steps=10, lr=3e-3, accept_ratio=float("inf"), valid_fraction=fraction)(batch)
    assert torch.equal(res.extras["finetuned"], ~start.valid)  # only the invalid ones, despite the infinite ratio


def test_follow_refines_where_it_pays_and_leaves_the_others_as_eft_fitted(anny_model, make_synthetic, regressor):
    from fit3d.fitters.follow import FollowConfig

    batch, _, _ = make_synthetic(anny_model, 4, seed=6)  # exact keypoints, a random network: far off
    batch.keypoints_2d[2:, :10, 2] = 0  # two people with 13 labelled keypoints: below min_keypoints, not followed
    plain = EFT(anny_model, regressor, steps=5, lr=1e-3)(batch)
    cfg = FollowConfig(anchor=0.01, ratio=1.5, min_keypoints=14)
    fol = EFT(anny_model, regressor, steps=5, lr=1e-3, follow=cfg)(batch)
    kept = fol.extras["followed"]
    assert kept.tolist() == [True, True, False, False]
    assert (fol.loss[kept] < plain.loss[kept]).all()  # the refinement's objective, not EFT's stale one
    assert (fol.reproj_error_px[kept] < plain.reproj_error_px[kept]).all()
    assert (fol.iterations[kept] == 5 + cfg.iterations).all() and (fol.iterations[~kept] == 5).all()
    for k in ("global_orient", "body_pose", "betas", "transl", "keypoints_2d_fit", "reproj_error_px", "loss"):
        a, b = getattr(fol, k), getattr(plain, k)
        assert torch.equal(a[~kept], b[~kept]), k  # the others: EFT's output as it was
    assert torch.equal(fol.betas, plain.betas)
    assert EFT(anny_model, regressor, follow=cfg).extra_defaults["followed"] == False  # noqa: E712 (numpy bool)


def test_a_missing_regressor_or_a_prior_by_name_says_how_to_build_one(anny_model):
    with pytest.raises(TypeError, match="load_body_regressor"):
        EFT(anny_model, None)
    K, J, S = len(anny_model.keypoint_convention), anny_model.num_body_joints, anny_model.num_betas
    with pytest.raises(TypeError, match="build_prior"):
        EFT(anny_model, KeypointRegressor(K, J, S, width=8, blocks=1), prior="gmm")


def test_steps_and_rate_are_checked(anny_model, regressor):
    """Found by a researcher's trial: steps=-1 was accepted and reported iterations -1."""
    for bad in dict(steps=-1), dict(steps=2.5), dict(steps=True), dict(lr=0.0), dict(lr=-1e-3):
        with pytest.raises(ValueError, match="steps must be|lr must be"):
            EFT(anny_model, regressor, **bad)
    import numpy as np

    assert EFT(anny_model, regressor, steps=np.int64(3)).steps == 3


def test_eft_from_a_notebook_no_grad_float64_and_a_prior_it_does_not_train(anny_model, make_synthetic, regressor):
    """Found by a review of EFT: under torch.no_grad() (as inference often runs) EFT raised; a float64 body
    model met the float32 regressor; a caller's VAE prior accumulated gradients at every step (and in its
    training mode mixed people through its BatchNorm)."""
    from fit3d.body_models.anny_model import AnnyModel
    from fit3d.priors.vae import VAEPrior

    batch, _, _ = make_synthetic(anny_model, 3, seed=4, noise_px=1.0)
    torch.manual_seed(1)
    vae = VAEPrior(anny_model.num_body_joints).train()
    eft = EFT(anny_model, regressor, steps=3, lr=1e-3, prior=vae, prior_weight=0.1)
    with torch.no_grad():
        r = eft(batch)
    assert torch.isfinite(r.body_pose).all() and (r.iterations == 3).all()
    assert not vae.training and all(p.grad is None for p in vae.parameters())
    alone = eft(batch.index(slice(1, 2)))  # a person's fit does not depend on who else is in the batch
    torch.testing.assert_close(alone.body_pose[0], r.body_pose[1], atol=2e-4, rtol=1e-4)
    m64 = AnnyModel().double()
    r64 = EFT(m64, regressor, steps=2, lr=1e-3)(batch)
    assert r64.body_pose.dtype == torch.float64 and torch.isfinite(r64.body_pose).all()
    assert all(p.dtype == torch.float32 for p in regressor.parameters())  # the caller's network: a copy was cast
