import json
import re

import numpy as np
import pytest

from fit3d.pipeline import RunConfig, run
from fit3d.pipeline.settings import SETTINGS_FILE, check_settings, finish_overwrite


def _recorded(out):
    return json.loads((out / SETTINGS_FILE).read_text())


def test_a_folder_fitted_with_other_settings_is_not_resumed_into(tmp_path):
    out = tmp_path / "fits"
    out.mkdir()
    assert not check_settings(out, dict(fitter="eft", flip=True, regressor="/w/r.pt"))
    assert _recorded(out) == dict(fitter="eft", flip=True, regressor="/w/r.pt")
    with pytest.raises(ValueError, match=r"started with other settings \(flip: True there, False now\) and holds no "
                       "fit yet.*--overwrite"):  # another run may be fitting into it
        check_settings(out, dict(fitter="eft", flip=False))
    assert not check_settings(out, dict(fitter="eft", flip=False), overwrite=True, whole_folder=False)  # taken over
    (out / "sub").mkdir()
    (out / "sub" / "a.jpg.npz").write_bytes(b"")  # a fit in a subfolder counts
    check_settings(out, dict(fitter="eft", flip=False))  # the same: resumes
    check_settings(out, dict(fitter="eft", flip=False, fallback=False))  # an option added later: not compared
    with pytest.raises(ValueError, match=r"other settings \(flip: False there, True now\).*--overwrite"):
        check_settings(out, dict(fitter="eft", flip=True))
    with pytest.raises(ValueError, match="--limit or --shard would leave it mixed"):
        check_settings(out, dict(fitter="eft", flip=True), overwrite=True, whole_folder=False)
    # a shard's job is not told to pass --overwrite, which it would refuse (found by a trial of submit)
    with pytest.raises(ValueError, match=r"refit it whole with --overwrite in one job \(no --limit, one shard"):
        check_settings(out, dict(fitter="eft", flip=True), whole_folder=False)
    with pytest.raises(ValueError, match="other settings"):  # --dry-run: the same answer, nothing written
        check_settings(out, dict(fitter="eft", flip=True), record=False)
    assert _recorded(out)["flip"] is False


def test_a_setting_added_later_compares_as_its_old_value_and_is_then_recorded(tmp_path):
    out = tmp_path / "fits"
    out.mkdir()
    check_settings(out, dict(fitter="eft", flip=True))  # recorded before --follow existed
    (out / "a.jpg.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"follow: False there, True now"):  # those fits were not followed
        check_settings(out, dict(fitter="eft", flip=True, follow=True))
    assert "follow" not in _recorded(out)
    check_settings(out, dict(fitter="eft", flip=True, follow=False), record=False)  # a dry run records nothing
    assert "follow" not in _recorded(out)
    assert not check_settings(out, dict(fitter="eft", flip=True, follow=False))  # resumes, and the record learns it
    assert _recorded(out) == dict(fitter="eft", flip=True, follow=False)
    with pytest.raises(ValueError, match=r"follow: False there, True now"):
        check_settings(out, dict(fitter="eft", flip=True, follow=True))


def test_an_overwrite_is_recorded_once_it_finishes(tmp_path):
    out = tmp_path / "fits"
    out.mkdir()
    check_settings(out, dict(flip=True))
    (out / "a.jpg.npz").write_bytes(b"")
    assert check_settings(out, dict(flip=False), overwrite=True)  # refits the whole folder
    # until it finishes, no run without --overwrite resumes into the folder, with either settings
    for flip in (True, False):
        with pytest.raises(ValueError, match="--overwrite"):
            check_settings(out, dict(flip=flip))
    finish_overwrite(out, dict(flip=False))
    assert _recorded(out) == dict(flip=False) and not check_settings(out, dict(flip=False))


def test_a_damaged_record_is_not_taken_for_none(tmp_path):
    """Found by a review: a cut-short fit_settings.json read as no record, so a run with other settings
    resumed into the folder (its fitter and model alone compared) and recorded its own for all of it."""
    out = tmp_path / "fits"
    out.mkdir()
    check_settings(out, dict(fitter="eft", flip=True, steps=30))
    (out / "a.jpg.npz").write_bytes(b"")
    (out / SETTINGS_FILE).write_text('{"fitter": "eft", "fl')
    for same in (True, False):
        with pytest.raises(ValueError, match="cannot be read as a settings record.*--overwrite"):
            check_settings(out, dict(fitter="eft", flip=same, steps=30))
    with pytest.raises(ValueError, match="cannot be read as a settings record"):  # a shard may not refit it all
        check_settings(out, dict(fitter="eft", flip=False), overwrite=True, whole_folder=False)
    assert (out / SETTINGS_FILE).read_text() == '{"fitter": "eft", "fl'  # left as it was
    assert check_settings(out, dict(fitter="eft", flip=False), overwrite=True)  # a whole refit, marked until done
    assert _recorded(out)["overwriting"]
    with pytest.raises(ValueError, match="did not finish"):
        check_settings(out, dict(fitter="eft", flip=False))
    (out / SETTINGS_FILE).unlink()
    (out / SETTINGS_FILE).mkdir()  # not a file: --overwrite could not write it either
    with pytest.raises(ValueError, match="is not a file: remove it"):
        check_settings(out, dict(fitter="eft", flip=False), overwrite=True)


def test_a_folder_from_before_the_record_resumes_unrecorded(tmp_path):
    out = tmp_path / "fits"
    out.mkdir()
    (out / "a.jpg.npz").write_bytes(b"")
    check_settings(out, dict(flip=False))
    assert not (out / SETTINGS_FILE).exists()  # what its fits were made with is unknown


def test_a_folder_without_the_record_still_refuses_another_fitter_or_model(tmp_path, sample_copy, anny_model,
                                                                          fast_fitter):
    from fit3d.data.readers import read_coco

    out = tmp_path / "fits"
    records, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    run(records, fast_fitter, anny_model, RunConfig(out, progress=False, limit=1, fitter_name="eft"))
    (out / SETTINGS_FILE).unlink()  # a folder from before the record (or written by hand)
    with pytest.raises(ValueError, match="fitter: 'eft' there, 'smplify' now"):
        check_settings(out, dict(fitter="smplify", model="anny", flip=True))
    assert not check_settings(out, dict(fitter="eft", model="anny", flip=True))  # the rest is unknown: resumes
    # the Python API without settings records the fitter and model: a command line run of another fitter stops
    out2 = tmp_path / "py"
    run(records, fast_fitter, anny_model, RunConfig(out2, progress=False, limit=1, fitter_name="eft"))
    with pytest.raises(ValueError, match="fitter: 'eft' there, 'smplify' now"):
        run(records, fast_fitter, anny_model, RunConfig(out2, progress=False, settings=dict(fitter="smplify",
                                                                                         model="anny", prior="l2")))


def test_run_records_its_settings_and_refuses_to_mix_fits(tmp_path, sample_copy, anny_model, fast_fitter):
    from fit3d.data.readers import read_coco

    out = tmp_path / "fits"
    records, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    s = run(records, fast_fitter, anny_model, RunConfig(out, progress=False, limit=1, settings=dict(prior="gmm")))
    assert s["settings"] == dict(prior="gmm") and len(list(out.glob("*.npz"))) == 1
    for cfg in (dict(), dict(overwrite=True, limit=1), dict(overwrite=True, shard=(0, 2))):
        with pytest.raises(ValueError, match="other settings"):
            run(records, fast_fitter, anny_model, RunConfig(out, progress=False, settings=dict(prior="vae"), **cfg))
    assert len(list(out.glob("*.npz"))) == 1 and _recorded(out) == dict(prior="gmm")  # nothing written
    run(records, fast_fitter, anny_model, RunConfig(out, progress=False, overwrite=True, settings=dict(prior="vae")))
    assert len(list(out.glob("*.npz"))) == 4 and _recorded(out) == dict(prior="vae")


def test_older_folders_are_judged_on_a_readable_per_image_fit(tmp_path, sample_copy, anny_model, fast_fitter):
    from fit3d.data.readers import read_coco

    records, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    s = run(records, fast_fitter, anny_model, RunConfig(out, progress=False, limit=1))  # fitter_name: the fitter's
    assert s["fitter"] == "smplify" and s["settings"]["fitter"] == "smplify" and s["settings"]["model"] == "anny"
    (out / SETTINGS_FILE).unlink()
    (out / "0.jpg.npz").write_bytes(b"PK\x03\x04 cut short")  # a half-written file
    np.savez(out / "dataset.v2.npz", fitter=np.array(["eft", "eft"]), model=np.array(["anny", "anny"]))  # merged
    with pytest.raises(ValueError, match="fitter: 'smplify' there, 'eft' now"):
        check_settings(out, dict(fitter="eft", model="anny"))
    assert not check_settings(out, dict(fitter="smplify", model="anny"))


def test_a_caller_with_its_own_record_is_not_checked(tmp_path, sample_copy, anny_model, fast_fitter):
    from fit3d.data.readers import read_coco

    records, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(records, fast_fitter, anny_model, RunConfig(out, progress=False, limit=1, fitter_name="eft"))
    # NeuralAnnot (annotator_state.json) annotating a folder that still holds other fits, e.g. another rank's
    s = run(records, fast_fitter, anny_model, RunConfig(out, progress=False, fitter_name="neuralannot",
                                                        check_settings=False))
    assert s["this_run"]["exit_code"] == 0 and "settings" not in s
    assert json.loads((out / SETTINGS_FILE).read_text())["fitter"] == "eft"  # not rewritten


def test_the_python_api_records_what_the_fitter_says_of_itself(tmp_path, sample_copy, anny_model, fast_fitter):
    """Without ``settings``, ``run`` records the fitter's own description (``fitter.settings()``:
    options and a fingerprint of its learned weights) and the model's gender, so a rerun with
    another prior, schedule or weights stops instead of mixing fits; the same fitter resumes."""
    from dataclasses import replace

    from fit3d.data.readers import read_coco
    from fit3d.fitters import SMPLify
    from fit3d.priors import GMMPrior

    records, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(records, fast_fitter, anny_model, RunConfig(out, progress=False, limit=1))
    rec = _recorded(out)
    assert rec["gender"] == "neutral" and rec["fitter.prior"]["kind"] == "l2" and len(rec["fitter.schedule"]) == 2
    same = SMPLify(anny_model, schedule=fast_fitter.schedule, depth_flips=False)  # built again: resumes
    again = run(records, same, anny_model, RunConfig(out, progress=False, limit=2))
    assert again["this_run"]["images_already_done"] == 1
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    poses = torch.randn(200, anny_model.num_body_joints, 3, generator=gen).numpy() * 0.2
    gmm = GMMPrior.fit(poses, n_components=2)
    others = [SMPLify(anny_model, prior=gmm, schedule=fast_fitter.schedule, depth_flips=False),
              SMPLify(anny_model, schedule=[replace(st, iterations=st.iterations + 1) for st in fast_fitter.schedule],
                      depth_flips=False)]
    for other, key in zip(others, ("fitter.prior.kind: 'l2' there, 'gmm' now",
                                   "fitter.schedule[0].iterations: 10 there, 11 now")):
        with pytest.raises(ValueError, match=re.escape(key)):
            run(records, other, anny_model, RunConfig(out, progress=False))
    # another GMM file (other values, the same kind): another fingerprint
    gmm2 = GMMPrior.fit(poses[:100], n_components=2)
    first = SMPLify(anny_model, prior=gmm, schedule=fast_fitter.schedule, depth_flips=False).settings()["prior"]
    second = SMPLify(anny_model, prior=gmm2, schedule=fast_fitter.schedule, depth_flips=False).settings()["prior"]
    assert first["kind"] == second["kind"] == "gmm" and first["weights"] != second["weights"]


def _start_together(barrier, out, flip, results):
    barrier.wait()
    try:
        check_settings(out, dict(fitter="eft", flip=flip))
        results.put((flip, "ok"))
    except ValueError as e:
        results.put((flip, str(e)))


def test_two_runs_started_together_with_other_settings_do_not_both_pass(tmp_path):
    """Both used to pass (each saw a folder without fits and wrote its own record); found by a helper
    starting 'fit3d eft' and 'fit3d eft --no-flip' into one new folder at once."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for i in range(4):
        out = tmp_path / f"fits{i}"
        out.mkdir()
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_start_together, args=(barrier, out, flip, results)) for flip in (True, False)]
        for p in procs:
            p.start()
        got = dict(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        passed = [flip for flip, msg in got.items() if msg == "ok"]
        assert len(passed) == 1, got
        assert "holds no fit yet" in got[not passed[0]]
        assert _recorded(out)["flip"] is passed[0]


def test_a_model_file_given_by_its_folder_or_itself_is_one_setting(tmp_path):
    """The same SMPL file given as --model-path DIR and as the file was 'other settings' (a
    new-user helper): where both records name the model file, that is compared instead."""
    out = tmp_path / "fits"
    out.mkdir()
    check_settings(out, dict(fitter="eft", model_path="/m", model_file="/m/smpl/SMPL_NEUTRAL.pkl"))
    (out / "a.jpg.npz").write_bytes(b"")  # (recorded, then fitted)
    check_settings(out, dict(fitter="eft", model_path="/m/smpl/SMPL_NEUTRAL.pkl", model_file="/m/smpl/SMPL_NEUTRAL.pkl"))
    with pytest.raises(ValueError, match=r"model_file: '/m/smpl/SMPL_NEUTRAL.pkl' there, '/n/SMPL_NEUTRAL.pkl' now"):
        check_settings(out, dict(fitter="eft", model_path="/m", model_file="/n/SMPL_NEUTRAL.pkl"))
    old = tmp_path / "old"  # a folder recorded before model_file: the path as given still decides
    old.mkdir()
    check_settings(old, dict(fitter="eft", model_path="/m"))
    (old / "a.jpg.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="model_path"):
        check_settings(old, dict(fitter="eft", model_path="/m/smpl/SMPL_NEUTRAL.pkl", model_file="/m/smpl/SMPL_NEUTRAL.pkl"))


def test_an_overwrite_that_leaves_earlier_fits_keeps_the_folder_marked(tmp_path, sample_copy, anny_model,
                                                                       fast_fitter):
    """Found by a review: an image whose annotations could not be read during an overwrite kept its fit of
    the earlier settings while the folder was recorded as fitted with the new ones (mixed for good)."""
    from fit3d.data.readers import read_coco

    out = tmp_path / "fits"
    records, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    run(records, fast_fitter, anny_model, RunConfig(out, progress=False, settings=dict(prior="gmm")), problems)
    data = json.loads((sample_copy / "test_coco.json").read_text())
    one = next(a for a in data["annotations"] if a["image_id"] == 785)
    one["keypoints"] = one["keypoints"][:48]  # the image's only annotation: unreadable now
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    records, problems = read_coco(broken, sample_copy)
    kept = out / "000000000785.jpg.npz"
    before = kept.stat().st_mtime_ns
    s = run(records, fast_fitter, anny_model, RunConfig(out, progress=False, overwrite=True,
                                                        settings=dict(prior="vae")), problems)
    assert kept.stat().st_mtime_ns == before and s["outputs_not_overwritten"] == ["000000000785.jpg"]
    assert _recorded(out)["overwriting"]  # not recorded as fitted with the new settings
    with pytest.raises(ValueError, match="did not finish"):  # a plain rerun is told to refit every image
        run(records, fast_fitter, anny_model, RunConfig(out, progress=False, settings=dict(prior="vae")), problems)


def test_differing_settings_names_each_key_that_differs_once():
    """For merge's warning, which said only how many settings the runs recorded."""
    from fit3d.pipeline.settings import differing_settings

    a = dict(prior="gmm", fitter=dict(schedule=[dict(iterations=15), dict(iterations=60)], steps=30))
    b = dict(prior="l2", fitter=dict(schedule=[dict(iterations=15), dict(iterations=61)], steps=30))
    c = dict(prior="gmm", fitter=dict(schedule=[dict(iterations=15), dict(iterations=60)], steps=30), follow=False)
    assert differing_settings([a, b, b]) == ["fitter.schedule[1].iterations", "prior"]
    assert differing_settings([a, c]) == []  # a setting one predates, at its default (follow), is the same
    assert differing_settings([a]) == []


def test_the_state_of_the_models_setup_is_recorded_but_not_compared(tmp_path):
    """A review: a folder fitted with one's own weights before 'fit3d setup-model' refused to resume
    after it (model_setup: None there, {...} now), though no weight it used had changed."""
    from fit3d.pipeline.settings import differing_settings, same_settings

    before = dict(fitter="eft", model="smpl", model_setup=None)
    after = dict(fitter="eft", model="smpl", model_setup={"full": True, "retargeting": "rest-relative"})
    assert check_settings(tmp_path, before) is False  # (nothing overwritten)
    assert check_settings(tmp_path, after) is False  # resumes (raised: "fits made with other settings")
    assert same_settings(before, after) and differing_settings([before, after]) == []
