import pytest

from fit3d.fitters import EFT, SMPLify
from fit3d.fitters.build import DEFAULT_PRIOR, build_eft, build_smplify


def test_build_smplify_defaults(anny_model, smpl_like_dir):
    from fit3d.body_models import build_body_model

    f = build_smplify(anny_model)
    assert isinstance(f, SMPLify) and f.prior.name == DEFAULT_PRIOR == "gmm" and f.keep == 2
    assert build_smplify(anny_model, prior="l2", hypotheses=1).keep == 1
    smpl = build_body_model("smpl", smpl_like_dir)
    assert build_smplify(smpl, prior="l2").prior.name == "l2" and build_smplify(smpl, prior="l2").prototypes is None
    with pytest.raises(FileNotFoundError, match="setup-model --model smpl.*or pass --prior-path"):
        build_smplify(smpl)  # the default prior is learned: one line says how to get it


def test_build_eft_and_its_errors(tmp_path, anny_model, smpl_like_dir):
    from fit3d.body_models import build_body_model
    from fit3d.regressors import bundled_regressor

    from fit3d.regressors.flip import FlipAveraged
    from fit3d.regressors.keypoint_regressor import KeypointRegressor

    f = build_eft(anny_model, steps=3)
    assert isinstance(f, EFT) and f.steps == 3 and f.prior is None
    assert isinstance(f.regressor, FlipAveraged)  # flip test-time augmentation by default
    assert isinstance(build_eft(anny_model, flip=False).regressor, KeypointRegressor)
    from fit3d.fitters import SMPLify
    from fit3d.fitters.fallback import Fallback

    fb = build_eft(anny_model, steps=3, fallback=True)  # EFT first, SMPLify where it reprojects much closer
    assert isinstance(fb, Fallback) and isinstance(fb.primary, EFT) and isinstance(fb.secondary, SMPLify)
    assert fb.primary.steps == 3 and fb.default_batch_size == SMPLify.default_batch_size  # the larger
    smpl = build_body_model("smpl", smpl_like_dir)
    with pytest.raises(FileNotFoundError, match="setup-model.*or pass --regressor"):
        build_eft(smpl)
    from fit3d.fitters.build import build_neuralannot

    with pytest.raises(FileNotFoundError, match="setup-model") as e:  # neuralannot has no --regressor
        build_neuralannot(smpl)
    assert "--regressor" not in str(e.value)
    with pytest.raises(ValueError, match="another body model"):
        build_eft(smpl, regressor_path=bundled_regressor("anny"))


def test_build_eft_finetune_presets(anny_model):
    from fit3d.fitters.eft import FINETUNE_PRESETS
    from fit3d.cli.fit import eft as eft_command

    every, fast = build_eft(anny_model), build_eft(anny_model, finetune="fast")
    for fitter, preset in ((every, FINETUNE_PRESETS["all"]), (fast, FINETUNE_PRESETS["fast"])):
        assert (fitter.finetune, fitter.lr, fitter.accept_ratio) == tuple(preset)
    assert every.finetune is None and fast.accept_ratio != every.accept_ratio  # each preset brings its own ratio
    assert 0 < len(fast._tuned) < len(every._tuned)
    assert build_eft(anny_model, finetune="fast", lr=1e-4).lr == 1e-4  # an explicit rate wins
    with pytest.raises(ValueError, match="unknown finetune preset"):
        build_eft(anny_model, finetune="half")
    choice = next(p for p in eft_command.params if p.name == "finetune")
    assert set(choice.type.choices) == set(FINETUNE_PRESETS)  # the command line offers every preset


def test_a_prototype_memory_that_is_not_there_is_an_error(anny_model, tmp_path):
    """Found by an audit: build_smplify(prototypes=<missing path>) fitted without prototypes, silently."""
    from fit3d.fitters.build import build_smplify, load_prototypes

    with pytest.raises(FileNotFoundError, match="no such file"):
        build_smplify(anny_model, prototypes=tmp_path / "missing.pt")
    assert load_prototypes(anny_model) is not None  # the bundled one


def test_every_fitter_follows_the_fitter_protocol(anny_model):
    """DESIGN.md's Fitter: the built fitters are Fitters, with the attributes the pipeline reads."""
    from fit3d.fitters.base import Fitter
    from fit3d.fitters.build import build_eft, build_neuralannot, build_smplify

    fitters = [build_smplify(anny_model), build_eft(anny_model), build_eft(anny_model, fallback=True),
               build_neuralannot(anny_model)]
    assert all(isinstance(f, Fitter) for f in fitters)
    for f in fitters[:3]:
        assert isinstance(f.name, str) and f.default_batch_size > 0 and isinstance(f.extra_defaults, dict)
        assert isinstance(f.settings(), dict)
    assert not isinstance(object(), Fitter)


def test_builders_and_make_batch_say_what_they_take(anny_model, sample_dir):
    """A Python user's trial: a model's name, image records or the model itself in the wrong place
    raised AttributeErrors deep inside."""
    from fit3d.data.batching import make_batch
    from fit3d.data.readers import read_coco
    from fit3d.fitters.build import build_eft, build_neuralannot, build_smplify

    for build in (build_eft, build_smplify, build_neuralannot):
        with pytest.raises(TypeError, match="build_body_model"):
            build("anny")
    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    with pytest.raises(TypeError, match="takes people"):
        make_batch(images, anny_model.keypoint_convention)
    people = [p for r in images for p in r.people]
    with pytest.raises(TypeError, match="KeypointConvention"):
        make_batch(people, anny_model)
