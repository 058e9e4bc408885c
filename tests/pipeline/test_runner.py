import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fit3d.data.conventions import COCO17
from fit3d.data.readers import read_coco
from fit3d.data.writers import failure_path, fit_files, incomplete_path, output_path, read_fit, write_npz
from fit3d.pipeline.merge import merge_fits
from fit3d.pipeline import RunConfig, neuralannot_target, parse_shard, run, select_images
from fit3d.pipeline.selection import shard_images
from fit3d.pipeline.interrupt import Interrupted
from tests.fixtures.layouts import two_layout_coco


def _people(out):
    recs = {}
    for f in fit_files(out):
        d = read_fit(f)
        for i, a in enumerate(d["annot_id"]):
            recs[int(a)] = {k: d[k][i] for k in ("status", "skip_reason", "valid", "body_pose", "bbox", "bbox_note",
                                                 "duplicate_id")}
    return recs


def test_run_writes_one_npz_per_image_and_a_summary(tmp_path, sample_copy, anny_model, fast_fitter):
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    s = run(images, fast_fitter, anny_model, RunConfig(out, batch_size=5, progress=False), problems)
    files = fit_files(out)
    assert [f.name for f in files] == [f"{r.image_key}.npz" for r in sorted(images, key=lambda r: r.image_key)]
    r = s["this_run"]
    people = sum(len(im.people) for im in images)  # every non-crowd annotation, with or without keypoints
    assert r["people_fitted"] == 12 and r["people_fitted"] + r["people_skipped"] == people
    assert r["images_written"] == 4 and r["exit_code"] == 0
    d = read_fit(files[0])
    P = len(d["annot_id"])
    for k, shape in dict(global_orient=(P, 3), body_pose=(P, 19, 3), betas=(P, 6), transl=(P, 3),
                         focal_length=(P, 2), principal_point=(P, 2), keypoints_2d=(P, 17, 3),
                         keypoints_3d=(P, 17, 3), keypoints_2d_fit=(P, 17, 2), joints_3d=(P, 20, 3),
                         bbox=(P, 4), reproj_error_px=(P,), valid=(P,), status=(P,), bbox_note=(P,)).items():
        assert d[k].shape == shape, k
    assert str(d["fitter"]) == "smplify" and str(d["model"]) == "anny" and str(d["image"]).endswith(".jpg")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["people_fitted"] == r["people_fitted"]
    assert "torch" in summary["versions"] and summary["schedule"][0]["name"] == "camera"


def test_bad_inputs_are_recorded_not_lost(tmp_path, sample_copy, anny_model, fast_fitter):
    """Missing image, NaN keypoints, a person with 2 visible keypoints and bad boxes: each recorded, rest fitted."""
    data = json.loads((sample_copy / "test_coco.json").read_text())
    anns = [a for a in data["annotations"] if a["num_keypoints"] >= 10]
    nan_ann, two_ann, zero_box, nan_box, away_box, point_ann, line_ann = anns[:7]
    for ann, xs in ((point_ann, [300] * 17), (line_ann, [300] * 17)):  # all on one pixel; all on one vertical line
        kp = np.asarray(ann["keypoints"], dtype=float).reshape(17, 3)
        kp[:, 0], kp[:, 1], kp[:, 2] = xs, 200 if ann is point_ann else np.linspace(100, 300, 17), 2
        ann["keypoints"] = kp.ravel().tolist()
    kp = np.asarray(nan_ann["keypoints"], dtype=float).reshape(17, 3)
    kp[:, :2] = np.nan
    n_labelled = int((kp[:, 2] > 0).sum())  # the unlabelled ones lose nothing: not counted
    nan_ann["keypoints"] = [None if np.isnan(v) else v for v in kp.ravel().tolist()]
    kp2 = np.zeros((17, 3))
    kp2[5], kp2[6] = [100, 100, 2], [150, 100, 2]
    two_ann["keypoints"] = kp2.ravel().tolist()
    del two_ann["num_keypoints"]  # a missing count is computed, not a reason to drop the person
    zero_box["bbox"] = [10, 10, 0, 0]
    nan_box["bbox"] = [float("nan")] * 4
    away_box["bbox"] = [-5000, -5000, 10, 10]
    (sample_copy / "test_coco.json").write_text(json.dumps(data).replace("NaN", "null"))
    missing = [im for im in data["images"] if im["id"] not in {a["image_id"] for a in anns[:5]}][0]
    (sample_copy / missing["file_name"]).unlink()
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    assert any(missing["file_name"] in p.source and "not found" in p.reason for p in problems)
    out = tmp_path / "fits"
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    recs = _people(out)
    assert str(recs[nan_ann["id"]]["status"]) == "skipped" and f"{n_labelled} non-finite" in str(recs[nan_ann["id"]]["skip_reason"])
    assert any(p.severity == "warning" and f"{n_labelled} labelled keypoints with non-finite" in p.reason
               and str(nan_ann["id"]) in p.source for p in problems)
    assert str(recs[two_ann["id"]]["status"]) == "skipped" and "2 < 6" in str(recs[two_ann["id"]]["skip_reason"])
    for ann in (point_ann, line_ann):
        assert str(recs[ann["id"]]["status"]) == "skipped", ann["id"]
        assert str(recs[ann["id"]]["skip_reason"]).startswith("degenerate keypoints: all on one point or line")
    for a, why in ((zero_box, "empty box"), (nan_box, "non-finite box"), (away_box, "outside the image")):
        assert why in str(recs[a["id"]]["bbox_note"]) and np.isfinite(recs[a["id"]]["bbox"]).all()
        assert recs[a["id"]]["bbox"][2] > 10  # rebuilt around the keypoints
    r = s["this_run"]
    assert r["exit_code"] == 3 and r["input_errors"] >= 1  # an image could not be read
    assert r["skipped_by_reason"]["too few usable keypoints"] >= 2
    assert r["skipped_by_reason"]["degenerate keypoints"] == 2
    every = {a["id"] for a in data["annotations"]}
    in_problems = {int(i) for p in problems for i in re.findall(r"\d+", p.reason.split("ids ")[-1])
                   if "annotations not fitted" in p.reason}
    lost = every - set(recs) - in_problems
    assert not lost  # every annotation is fitted, skipped or an input problem


def test_an_image_with_unreadable_annotations_is_fitted_again_once_they_are_fixed(tmp_path, sample_copy, anny_model,
                                                                                   fast_fitter):
    """The image is written with its readable people and marked incomplete, so a rerun on the fixed
    file fits it again with every person (before, it counted as done and they never came back)."""
    good = json.loads((sample_copy / "test_coco.json").read_text())
    bad = json.loads(json.dumps(good))
    broken = next(a for a in bad["annotations"] if sum(b["image_id"] == a["image_id"] for b in bad["annotations"]) > 1)
    broken["keypoints"] = broken["keypoints"][:-3]  # one keypoint short: unreadable
    (sample_copy / "test_coco.json").write_text(json.dumps(bad))
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    img = next(r for r in images if r.dropped)
    out = tmp_path / "fits"
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    assert s["this_run"]["exit_code"] == 3 and s["this_run"]["images_incomplete"] == 1
    assert incomplete_path(out, img.image_key).is_file() and broken["id"] not in _people(out)
    again = run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)  # still broken: retried
    assert again["this_run"]["images_already_done"] == 3 and again["this_run"]["images_written"] == 1
    (sample_copy / "test_coco.json").write_text(json.dumps(good))
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    fixed = run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    assert fixed["this_run"]["exit_code"] == 0 and fixed["this_run"]["images_written"] == 1
    assert broken["id"] in _people(out) and not incomplete_path(out, img.image_key).exists()
    done = run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    assert done["this_run"]["images_already_done"] == 4 and done["this_run"]["images_written"] == 0


def test_the_incomplete_mark_is_written_before_the_output(tmp_path, sample_copy, anny_model, fast_fitter,
                                                          monkeypatch):
    """An interruption between the two writes must not leave an unmarked incomplete .npz; an
    annotation without keypoints counts as unreadable too."""
    from fit3d.pipeline import runner as run_module  # the module, not the function it exports

    data = json.loads((sample_copy / "test_coco.json").read_text())
    shared = [a for a in data["annotations"] if sum(b["image_id"] == a["image_id"] for b in data["annotations"]) > 1]
    del shared[0]["keypoints"]
    (sample_copy / "test_coco.json").write_text(json.dumps(data))
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    assert [r.image_key for r in images if r.dropped] and any("without keypoints" in p.reason for p in problems)
    out, seen = tmp_path / "fits", {}
    real = run_module.write_npz

    def spy(path, arrays):
        key = path.name[: -len(".npz")]
        seen[key] = incomplete_path(out, key).is_file()
        real(path, arrays)

    monkeypatch.setattr(run_module, "write_npz", spy)
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    assert all(seen[r.image_key] == bool(r.dropped) for r in images if r.people)


def test_an_output_that_cannot_be_written_fails_that_image_only(tmp_path, sample_copy, anny_model, fast_fitter):
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    blocked = sorted(r.image_key for r in images if r.people)[0]
    output_path(out, blocked).mkdir(parents=True)  # a folder where the image's .npz goes
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)["this_run"]
    assert s["exit_code"] == 5 and s["images_failed"] == 1 and s["images_written"] == 3
    assert "could not write" in s["failures"][0]["reason"] and failure_path(out, blocked).is_file()
    output_path(out, blocked).rmdir()
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)["this_run"]
    assert s["exit_code"] == 0 and s["images_written"] == 1 and s["images_already_done"] == 3
    with pytest.raises(ValueError, match="cannot create the output folder"):
        run(images, fast_fitter, anny_model, RunConfig(sample_copy / "test_coco.json" / "sub", progress=False))
    with pytest.raises(ValueError, match="cannot create the output folder"):  # before NeuralAnnot trains
        from fit3d.pipeline.neuralannot import run_neuralannot

        run_neuralannot([], None, None, anny_model, sample_copy / "test_coco.json" / "sub")
    only = [r for r in images if r.image_key == blocked]  # nothing written at all: still a failure, not "nothing"
    output_path(tmp_path / "alone", blocked).mkdir(parents=True)
    s = run(only, fast_fitter, anny_model, RunConfig(tmp_path / "alone", progress=False))["this_run"]
    assert s["exit_code"] == 5 and s["images_failed"] == 1 and s["people_fitted"] == 0


class _Dying:
    """A fitter that is interrupted on its n-th call."""

    def __init__(self, inner, n, exc):
        self.inner, self.n, self.calls, self.exc = inner, n, 0, exc
        self.schedule, self.extra_defaults, self.name = inner.schedule, inner.extra_defaults, inner.name

    def __call__(self, batch):
        self.calls += 1
        if self.calls == self.n:
            raise self.exc
        return self.inner(batch)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), Interrupted(15)])
def test_an_interrupted_run_keeps_what_is_done_and_resumes_to_the_same_outputs(tmp_path, sample_copy, anny_model,
                                                                               fast_fitter, exc):
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    ref = tmp_path / "ref"
    run(images, fast_fitter, anny_model, RunConfig(ref, batch_size=3, progress=False))
    out = tmp_path / "fits"
    s = run(images, _Dying(fast_fitter, 2, exc), anny_model, RunConfig(out, batch_size=3, progress=False))
    assert s["this_run"]["interrupted"] and s["this_run"]["exit_code"] == (143 if isinstance(exc, Interrupted) else 130)
    done = fit_files(out)
    assert 1 <= len(done) < 4 and not list(out.glob(".*.tmp"))  # no half-written files
    mtimes = {p: p.stat().st_mtime_ns for p in done}
    s = run(images, fast_fitter, anny_model, RunConfig(out, batch_size=3, progress=False))
    assert s["this_run"]["images_already_done"] == len(done) and s["this_run"]["exit_code"] == 0
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # done images untouched
    a, b = _people(ref), _people(out)
    assert a.keys() == b.keys()
    for k in a:
        assert np.allclose(a[k]["body_pose"], b[k]["body_pose"], atol=1e-4, equal_nan=True)
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False))
    assert s["this_run"]["images_already_done"] == 4 and s["this_run"]["exit_code"] == 0


def test_a_signal_between_the_start_marker_and_the_first_batch_is_recorded_as_an_interruption(
        tmp_path, sample_copy, anny_model, fast_fitter, monkeypatch):
    """Found by a trial (Ctrl-C on fit3d submit --cluster local): a task caught while setting up
    left its summary as the start marker ("running"), so merge called it still running or killed."""
    from fit3d.pipeline import runner as run_module  # (the package's run is the function)
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"

    def chunks(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "_chunks", chunks)
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False))
    assert s["this_run"]["interrupted"] and s["this_run"]["exit_code"] == 130
    recorded = json.loads((out / "summary.json").read_text())
    assert "running" not in recorded and recorded["this_run"]["exit_code"] == 130

def test_a_failing_person_is_retried_alone_recorded_and_refitted_next_run(tmp_path, sample_copy, anny_model,
                                                                         fast_fitter):
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    bad_image = images[1]
    bad = bad_image.people[0]

    def fragile(batch):  # raises whenever the bad person is in the batch (e.g. a degenerate input)
        if any(np.allclose(batch.bbox[i].numpy(), bad.bbox) for i in range(len(batch))):
            raise RuntimeError("CUDA out of memory (simulated)\nsecond line")
        return fast_fitter(batch)

    fragile.extra_defaults = fast_fitter.extra_defaults
    out = tmp_path / "fits"
    s = run(images, fragile, anny_model, RunConfig(out, batch_size=12, progress=False))
    r = s["this_run"]
    assert r["people_failed"] == 1 and r["images_failed"] == 1 and r["exit_code"] == 5
    assert r["failures"][0]["reason"] == "RuntimeError: CUDA out of memory (simulated)"  # one line
    total = sum(len(im.people) for im in images)
    assert r["people_fitted"] + r["people_skipped"] == total - len(bad_image.people)  # the rest went through
    assert r["people_deferred"] == len(bad_image.people) - 1  # fitted, not written: the image is redone
    assert not output_path(out, bad_image.image_key).exists() and failure_path(out, bad_image.image_key).is_file()
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False))  # the next run refits it
    assert s["this_run"]["images_written"] == 1 and s["this_run"]["exit_code"] == 0
    assert output_path(out, bad_image.image_key).is_file() and not failure_path(out, bad_image.image_key).exists()


def test_an_overwrite_with_other_settings_that_fails_an_image_finishes_and_the_image_is_retried(
        tmp_path, sample_copy, anny_model, fast_fitter):
    """Found by a review: the failed image kept its fit of the earlier settings beside the new fits,
    and the folder stayed marked as being overwritten, so each retry had to refit the whole folder."""
    from fit3d.pipeline.settings import recorded_settings

    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    bad_image = images[1]
    bad = bad_image.people[0]

    def fragile(batch):
        if any(np.allclose(batch.bbox[i].numpy(), bad.bbox) for i in range(len(batch))):
            raise RuntimeError("simulated")
        return fast_fitter(batch)

    fragile.extra_defaults = fast_fitter.extra_defaults
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False, settings=dict(prior="gmm")))
    mtimes = {p: p.stat().st_mtime_ns for p in fit_files(out)}
    s = run(images, fragile, anny_model, RunConfig(out, batch_size=12, progress=False, overwrite=True,
                                                   settings=dict(prior="vae")))["this_run"]
    assert s["images_failed"] == 1 and s["images_written"] == 3 and s["exit_code"] == 5
    assert not output_path(out, bad_image.image_key).exists()  # no fit of the earlier settings left
    assert all(p.stat().st_mtime_ns != t for p, t in mtimes.items() if p.exists())  # the others refitted
    assert recorded_settings(out) == dict(prior="vae")  # the folder is the new settings' now
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False, settings=dict(prior="vae")))["this_run"]
    assert s["images_written"] == 1 and s["images_already_done"] == 3 and s["exit_code"] == 0  # the failed one only


def test_a_signal_while_an_image_is_written_waits_until_it_is_counted(tmp_path, sample_copy, anny_model, fast_fitter,
                                                                      monkeypatch):
    """Found by a review: SIGTERM right after an image's .npz was renamed into place stopped the run before
    it counted the image, so the summary said one file fewer than the folder held (and no run counted it)."""
    import os
    import signal

    from fit3d.pipeline import runner as run_module

    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    real, calls = run_module.write_npz, []

    def write_then_signal(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(run_module, "write_npz", write_then_signal)
    out = tmp_path / "fits"
    s = run(images, fast_fitter, anny_model, RunConfig(out, batch_size=12, progress=False))["this_run"]
    assert s["interrupted"] and s["exit_code"] == 143
    assert s["images_written"] == len(fit_files(out)) == 2  # both written files counted, no third begun


def test_a_failed_batchs_tensors_are_freed_before_its_halves_are_retried(sample_copy, anny_model, fast_fitter):
    """A CUDA audit: the halves were retried inside the ``except`` block, whose exception's traceback
    kept every tensor of the failed fit alive (a batch out of GPU memory kept that memory through its
    retries). A fitter that holds a big tensor when it fails: each retry finds the last one freed."""
    import weakref

    import torch

    from fit3d.pipeline.batches import fit_people

    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    people = [p for r in images for p in r.people if p.num_visible >= 6][:4]
    held: list = []
    alive_at_retry = []

    def fragile(batch):
        alive_at_retry.extend(ref() is not None for ref in held)
        if len(batch) > 1:
            memory = torch.zeros(1000, 1000)  # the fit's working memory, referenced from its frame
            held.append(weakref.ref(memory))
            raise RuntimeError("CUDA out of memory (simulated)")
        return fast_fitter(batch)

    results = fit_people(fragile, people, anny_model.keypoint_convention, RunConfig("unused"), "cpu")
    # 4 -> 2 -> 1 x 4 (after two batches ran out of memory the run goes on one by one: MemoryLimit)
    assert len(held) == 2 and alive_at_retry and not any(alive_at_retry)
    assert all(r is not None for r, _ in results)


def test_non_finite_fits_are_never_recorded_as_fitted(tmp_path, sample_copy, anny_model, fast_fitter):
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)

    def nan_fitter(batch):
        res = fast_fitter(batch)
        res.body_pose[0] = float("nan")
        return res

    nan_fitter.extra_defaults = fast_fitter.extra_defaults
    out = tmp_path / "fits"
    s = run(images[:1], nan_fitter, anny_model, RunConfig(out, progress=False))
    assert s["this_run"]["skipped_by_reason"].get("fit gave non-finite parameters", 0) == 1
    d = read_fit(fit_files(out)[0])
    assert not ((d["status"] == "fitted") & ~np.isfinite(d["body_pose"]).all((1, 2))).any()



def test_a_wrapper_without_extra_defaults_fits_mixed_images(tmp_path, sample_copy, anny_model, fast_fitter, caplog):
    """A plain function around a fitter (no ``extra_defaults``) in images where some people are
    skipped: written, one warning naming the extras that are not stored, and the folder merges."""
    from fit3d.pipeline.merge import merge_fits

    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    with caplog.at_level("WARNING"):
        s = run(images, lambda batch: fast_fitter(batch), anny_model, RunConfig(out, progress=False))
    assert s["this_run"]["exit_code"] == 0 and s["this_run"]["people_fitted"] == 12
    assert s["this_run"]["people_skipped"] == 2
    warned = [r.message for r in caplog.records if "are not stored" in r.message]
    assert len(warned) == 1 and "hypothesis_yaw" in warned[0]
    arrays, _ = merge_fits(out)
    assert len(arrays["annot_id"]) == 14 and "hypothesis_yaw" not in arrays

def test_a_warning_while_the_progress_bar_is_drawn_is_written_on_a_line_of_its_own(tmp_path, sample_copy, anny_model,
                                                                                   fast_fitter, capsys):
    """It was written onto the bar's line: ``fit3d smplify:  50%|####  | 6/12 [00:01<00:01]warning: ...``
    (the command line's handler, :class:`fit3d.cli.main.ConsoleHandler`, writes through ``tqdm.write``)."""
    import logging
    import sys

    from fit3d.cli.main import ConsoleHandler

    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    console = ConsoleHandler(sys.stderr)  # as the command line sets it up
    logging.root.addHandler(console)

    def fitter(batch):
        logging.getLogger("fit3d.test").warning("a warning while fitting")
        return fast_fitter(batch)

    try:
        s = run(images, fitter, anny_model, RunConfig(tmp_path / "fits", progress=True, batch_size=4))
    finally:
        logging.root.removeHandler(console)
    assert s["this_run"]["people_fitted"] == 12
    err = capsys.readouterr().err
    lines = [line for line in err.split("\n") if "a warning while fitting" in line]
    assert len(lines) >= 2 and "person/s" in err, err  # the bar was drawn, between the warnings
    assert all(line.split("\r")[-1].strip() == "a warning while fitting" for line in lines), lines


def test_nothing_to_fit_is_not_success(tmp_path, sample_copy, anny_model, fast_fitter):
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    for r in images:
        for p in r.people:
            p.keypoints_2d[:, 2] = 0
    s = run(images, fast_fitter, anny_model, RunConfig(tmp_path / "f", progress=False), problems)
    assert s["this_run"]["people_fitted"] == 0 and s["this_run"]["exit_code"] == 4


def test_subfolders_and_extensions_never_collide(tmp_path, sample_dir, anny_model, fast_fitter):
    src = json.loads((sample_dir / "test_coco.json").read_text())
    im = src["images"][0]
    imgs = tmp_path / "images"
    (imgs / "a").mkdir(parents=True)
    (imgs / "b").mkdir()
    for sub in ("a/x.jpg", "b/x.jpg", "a/x.png"):
        shutil.copy(sample_dir / im["file_name"], imgs / sub)
    anns = [a for a in src["annotations"] if a["image_id"] == im["id"]]
    data = dict(src, images=[], annotations=[])
    for n, sub in enumerate(("a/x.jpg", "b/x.jpg", "a/x.png")):
        data["images"].append(dict(im, id=n + 1, file_name=sub))
        data["annotations"] += [dict(a, id=100 * (n + 1) + j, image_id=n + 1) for j, a in enumerate(anns)]
    (imgs / "ann.json").write_text(json.dumps(data))
    images, _ = read_coco(imgs / "ann.json", imgs)
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False))
    assert sorted(f.relative_to(out).as_posix() for f in fit_files(out)) == ["a/x.jpg.npz", "a/x.png.npz",
                                                                              "b/x.jpg.npz"]
    assert str(read_fit(out / "b" / "x.jpg.npz")["image"]) == "b/x.jpg"


def test_shards_partition_the_images(tmp_path, sample_copy):
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    parts = [select_images(images, RunConfig(tmp_path, shard=parse_shard(f"{i}/3")))[0] for i in (1, 2, 3)]
    keys = [r.image_key for p in parts for r in p]
    assert sorted(keys) == sorted(r.image_key for r in images) and len(set(keys)) == 4
    with pytest.raises(ValueError):
        parse_shard("0/3")
    with pytest.raises(ValueError):
        parse_shard("abc")
    assert output_path(tmp_path, "x/000000000785.jpg") == tmp_path / "x" / "000000000785.jpg.npz"


def test_an_image_s_shard_does_not_depend_on_the_other_images():
    """Found by a scale trial: shards took every n-th image of the sorted list, so one image
    missing from one task's inputs (unreadable for a moment, a corrected annotation file) moved
    5,990 of 5,999 others to another shard: fitted twice or by no shard in that pass."""
    from fit3d.data.records import ImageRecord

    records = [ImageRecord(image_key=f"{k:012d}.jpg", image_path=Path(f"{k:012d}.jpg"), image_size=(640, 480),
                           people=[]) for k in range(3000)]
    n = 16
    before = {r.image_key: i for i in range(n) for r in shard_images(records, (i, n))}
    assert len(before) == 3000  # a partition
    sizes = np.bincount(list(before.values()), minlength=n)
    assert sizes.min() > 3000 / n - 4 * np.sqrt(3000 / n) and sizes.max() < 3000 / n + 4 * np.sqrt(3000 / n)
    rest = records[:1000] + records[1001:]  # one image gone
    after = {r.image_key: i for i in range(n) for r in shard_images(rest, (i, n))}
    assert all(after[k] == before[k] for k in after)
    assert [r.image_key for r in shard_images(records, (0, 1))] == sorted(r.image_key for r in records)


def test_neuralannot_target_keeps_people_with_enough_keypoints(sample_dir, anny_model):
    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    target = neuralannot_target(images, anny_model)
    assert len(target) == 12 and target.convention == anny_model.keypoint_convention
    with pytest.raises(ValueError, match="enough keypoints"):
        neuralannot_target(images, anny_model, min_visible=100)


def test_neuralannot_outputs_resume_only_from_the_same_annotator(tmp_path, sample_copy, anny_model, fast_fitter):
    """Another annotator's outputs are deleted before annotating, and the new state recorded
    first: an interrupted re-annotation resumes without keeping the old annotator's images."""
    from fit3d.pipeline.neuralannot import forget_other_annotators

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "na"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    old, new = dict(epoch=1, phase="final", refine_steps=0), dict(epoch=2, phase="final", refine_steps=0)
    assert forget_other_annotators(out, images, (0, 1), old) == 4  # no record: unknown annotator
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    assert forget_other_annotators(out, images, (0, 1), old) == 0  # the same one: resumes
    assert forget_other_annotators(out, images, (0, 1), new) == 4  # trained further: annotated again
    assert not fit_files(out)
    # interrupted after one image: the rest are fitted by the rerun, none of the old ones is kept
    run(images[:1], fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    assert forget_other_annotators(out, images, (0, 1), new) == 0
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)["this_run"]
    assert s["images_already_done"] == 1 and s["images_written"] == 3
    # under shards, each rank forgets only its own images
    n0, n1 = (len(shard_images(images, (i, 2))) for i in range(2))
    assert forget_other_annotators(out, images, (0, 2), old) == n0 and len(fit_files(out)) == n1
    # a folder annotated under torchrun (each rank's mark) is resumed by one process of the same
    # annotator (a trial: it annotated everything again); not when a rank's mark is missing or other
    fresh = tmp_path / "ranks"
    run(images, fast_fitter, anny_model, RunConfig(fresh, progress=False), problems)
    assert forget_other_annotators(fresh, images, (0, 2), new) == n0  # (unknown before: its images redone)
    assert forget_other_annotators(fresh, images, (1, 2), new) == n1
    run(images, fast_fitter, anny_model, RunConfig(fresh, progress=False), problems)
    (fresh / "annotator_state.json").unlink(missing_ok=True)
    assert forget_other_annotators(fresh, images, (0, 1), new) == 0 and len(fit_files(fresh)) == 4
    (fresh / "annotator_state.json").unlink()
    (fresh / "annotator_state.shard-2-of-2.json").unlink()
    assert forget_other_annotators(fresh, images, (0, 1), new) == 4  # half the split unknown: all redone


def test_run_config_whole_folder_means_no_limit_and_one_shard(tmp_path):
    assert RunConfig(tmp_path).whole_folder
    assert not RunConfig(tmp_path, limit=3).whole_folder
    assert not RunConfig(tmp_path, shard=(0, 2)).whole_folder


def test_check_output_dir_creates_nothing_and_refuses_what_cannot_be_made(tmp_path, monkeypatch):
    import os

    from fit3d.pipeline.runner import check_output_dir

    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b" and not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is not a folder"):
        check_output_dir(tmp_path / "f" / "fits")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # (the tests may run as root)
    with pytest.raises(ValueError, match="no permission to write in"):
        check_output_dir(tmp_path / "new")


def test_people_of_two_keypoint_layouts_in_one_image_are_stored_in_the_union_of_the_layouts(
        tmp_path, sample_copy, anny_model, fast_fitter):
    images, problems = read_coco(two_layout_coco(sample_copy, tmp_path / "two.json"), sample_copy)
    s = run(images, fast_fitter, anny_model, RunConfig(tmp_path / "fits", progress=False), problems)
    r = s["this_run"]
    assert r["exit_code"] == 0 and r["images_written"] == 2 and r["people_fitted"] == 3
    d = read_fit(output_path(tmp_path / "fits", "000000040083.jpg"))
    names = list(d["keypoint_names"])
    assert names == list(COCO17.names) + ["neck"]  # the first person's layout first, then what the others add
    row = {int(a): i for i, a in enumerate(d["annot_id"])}
    src = {p.annot_id: p for img in images for p in img.people}
    for aid, i in row.items():
        p = src[aid]
        for k, name in enumerate(names):
            want = p.keypoints_2d[p.convention.names.index(name)] if name in p.convention.names else np.zeros(3)
            np.testing.assert_allclose(d["keypoints_2d"][i, k], want, atol=1e-4, err_msg=f"{aid} {name}")
            if name not in p.convention.names:
                assert np.isnan(d["keypoints_3d"][i, k]).all() and np.isnan(d["keypoints_2d_fit"][i, k]).all()
    eight = row[230195]
    assert np.isfinite(d["keypoints_3d"][eight, names.index("left_knee")]).all()
    assert np.isnan(d["keypoints_3d"][eight, names.index("left_wrist")]).all()  # not in its layout


def test_the_inputs_intrinsics_are_what_the_fit_uses_and_records(tmp_path, sample_copy, anny_model, fast_fitter,
                                                                 caplog):
    """An image entry's cam_param (Moon et al.'s COCO-format 3DPW / Human3.6M files) reaches the fit:
    the .npz records it and its fitted keypoints are the 3D keypoints projected with it."""
    data = json.loads((sample_copy / "test_coco.json").read_text())
    info = data["images"][0]
    info["cam_param"] = {"focal": [1900.0, 1880.0], "princpt": [300.0, 230.0]}
    (sample_copy / "test_coco.json").write_text(json.dumps(data))
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, batch_size=8, progress=False), problems)
    d = read_fit(output_path(out, info["file_name"]))
    fitted = d["status"] == "fitted"
    assert fitted.any()
    np.testing.assert_array_equal(d["focal_length"][fitted], [[1900.0, 1880.0]] * fitted.sum())
    np.testing.assert_array_equal(d["principal_point"][fitted], [[300.0, 230.0]] * fitted.sum())
    k3 = d["keypoints_3d"][fitted]
    projected = k3[..., :2] / k3[..., 2:] * [1900.0, 1880.0] + [300.0, 230.0]
    np.testing.assert_allclose(d["keypoints_2d_fit"][fitted], projected, rtol=1e-4, atol=1e-2)
    assert d["valid"][fitted].all()
    other = read_fit(output_path(out, data["images"][1]["file_name"]))  # no cam_param: the image diagonal
    w, h = other["image_size"]
    np.testing.assert_allclose(other["focal_length"][0], [np.hypot(w, h)] * 2, rtol=1e-6)
    # a focal length given for the run replaces the input's, keeps its principal point, and says so
    # (a trial: calibrated focal lengths were replaced in silence)
    import logging

    with caplog.at_level(logging.WARNING, logger="fit3d"):
        run(images, fast_fitter, anny_model, RunConfig(tmp_path / "f1000", focal_length=1000.0, progress=False),
            problems)
    n = sum(p.camera is not None for r in images for p in r.people)
    said = f"replaces the focal length of the input's own intrinsics ({n} {'person' if n == 1 else 'people'} of this job"
    assert n and any(said in m for m in caplog.messages), caplog.messages
    d = read_fit(output_path(tmp_path / "f1000", info["file_name"]))
    np.testing.assert_array_equal(d["focal_length"][0], [1000.0, 1000.0])
    np.testing.assert_array_equal(d["principal_point"][0], [300.0, 230.0])


def test_a_shard_that_gets_no_image_has_nothing_to_do_and_exits_0(tmp_path, sample_copy, anny_model, fast_fitter):
    """fit3d submit --jobs 5 on 4 images: the fifth task exited 4 ('nothing was fitted'), so the
    submit, and a SLURM array, reported a failure although everything was fitted (a helper)."""
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    empty = next(i for i in range(5) if not shard_images(images, (i, 5)))
    s = run(images, fast_fitter, anny_model, RunConfig(tmp_path / "fits", shard=(empty, 5), progress=False),
            problems)["this_run"]
    assert s["images"] == 0 and s["shard_empty"] and s["exit_code"] == 0
    s = run([], fast_fitter, anny_model, RunConfig(tmp_path / "none", shard=(0, 5), progress=False))["this_run"]
    assert not s["shard_empty"] and s["exit_code"] == 4  # no input at all: still nothing fitted


def test_a_shard_whose_images_could_not_be_opened_did_not_get_no_image(tmp_path, sample_copy, anny_model, fast_fitter):
    """Found by a review: a shard whose only images were unreadable said it got no image (shard_empty,
    which merge reads as nothing to fit there)."""
    from fit3d.pipeline.selection import shard_of

    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    lost = images[0].image_key
    (sample_copy / lost).write_bytes(b"")  # unreadable now
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    assert any(p.image == lost for p in problems)
    n = next(n for n in range(2, 50) if sum(shard_of(r.image_key, n) == shard_of(lost, n) for r in images) == 0)
    s = run(images, fast_fitter, anny_model, RunConfig(tmp_path / "fits", shard=(shard_of(lost, n), n),
                                                       progress=False), problems)["this_run"]
    assert s["images"] == 0 and not s["shard_empty"] and s["shard_unreadable"]
    assert s["exit_code"] == 3  # not 4, which an array's combined code leaves out (a review of the first mend)
    from fit3d.pipeline.summary import combined_exit_code

    assert combined_exit_code([0, s["exit_code"], 0]) == 3


def test_keypoints_far_beyond_any_image_are_unusable_not_a_fit_that_always_raises(tmp_path, sample_copy, anny_model,
                                                                                   fast_fitter):
    """Keypoints scaled by 1e30 made the person's fit raise alone on every run, so its image was
    never written and the folder never finished (a helper); they are now unusable keypoints."""
    data = json.loads((sample_copy / "test_coco.json").read_text())
    far, part = [a for a in data["annotations"] if a["num_keypoints"] >= 10][:2]
    far["keypoints"] = [v * 1e30 if i % 3 != 2 else v for i, v in enumerate(far["keypoints"])]
    kp = np.asarray(part["keypoints"], dtype=float).reshape(17, 3)
    kp[:4, :2] *= 1e30  # four far-off points of an otherwise usable person
    part["keypoints"] = kp.ravel().tolist()
    (sample_copy / "test_coco.json").write_text(json.dumps(data))
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    s = run(images, fast_fitter, anny_model, RunConfig(tmp_path / "fits", progress=False), problems)["this_run"]
    assert s["people_failed"] == 0 and s["images_failed"] == 0 and s["images_written"] == 4
    people = _people(tmp_path / "fits")
    assert people[far["id"]]["status"] == "skipped" and "far-off" in str(people[far["id"]]["skip_reason"])
    assert people[part["id"]]["status"] == "fitted"


def test_damaged_outputs_are_fitted_again_with_one_warning(tmp_path, sample_copy, anny_model, fast_fitter, caplog):
    """Found by a helper: an empty or cut-short output counted as done, so no rerun repaired it."""
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False))
    first, second, *rest = fit_files(out)
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    second.write_bytes(b"")
    mtimes = {p: p.stat().st_mtime_ns for p in rest}
    with caplog.at_level("WARNING", logger="fit3d.pipeline.run"):
        s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False))["this_run"]
    assert s["images_written"] == 2 and s["images_already_done"] == len(rest) and s["exit_code"] == 0
    assert any("2 outputs" in r.getMessage() and "cannot be read" in r.getMessage() for r in caplog.records)
    assert all(read_fit(p)["annot_id"] is not None for p in (first, second))
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())


def test_a_rerun_from_other_inputs_warns_that_done_images_keep_their_fits(tmp_path, sample_copy, anny_model,
                                                                          fast_fitter, caplog):
    """Found by a helper: images are resumed by name, and the inputs were recorded nowhere, so an
    edited annotation file or another image folder resumed silently."""
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    inputs = dict(images="/data/a", annotations="/data/a.json", annotations_digest="1234")
    s = run(images[:2], fast_fitter, anny_model, RunConfig(out, progress=False, inputs=inputs))
    assert s["inputs"] == inputs
    with caplog.at_level("WARNING", logger="fit3d.pipeline.run"):
        run(images, fast_fitter, anny_model, RunConfig(out, progress=False, inputs=inputs))
    assert not caplog.records  # the same inputs: resumed without a word
    edited = dict(inputs, annotations_digest="5678")
    with caplog.at_level("WARNING", logger="fit3d.pipeline.run"):
        run(images, fast_fitter, anny_model, RunConfig(out, progress=False, inputs=edited))
    (record,) = caplog.records
    assert "annotations_digest: 1234 -> 5678" in record.getMessage()
    assert "(annotations_digest: 1234 -> 5678): the 4 images already done keep their fits" in record.getMessage()
    assert "whose people changed" not in record.getMessage()  # (a trial: "0 images ... fitted again" said nothing)
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False, inputs=edited))
    assert "inputs_changed" not in s  # every done output was compared: the folder is not mixed
    # an output written before fit3d stored its input digest cannot be compared: kept, said, and
    # the folder stays marked as possibly mixed
    old = fit_files(out)[0]
    write_npz(old, {k: v for k, v in read_fit(old).items() if k != "input_digest"})
    caplog.clear()
    with caplog.at_level("WARNING", logger="fit3d.pipeline.run"):
        s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False, inputs=inputs))
    assert "1 of them written before fit3d recorded what each output is fitted from" in caplog.records[0].getMessage()
    assert s["inputs_changed"] == "annotations_digest: 5678 -> 1234"
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False, inputs=inputs))
    assert s["inputs_changed"] == "annotations_digest: 5678 -> 1234"  # (until a whole-folder --overwrite)


def test_a_rerun_from_corrected_annotations_fits_again_exactly_the_images_whose_people_changed(
        tmp_path, sample_copy, anny_model, fast_fitter, caplog):
    """Images were resumed by name: a corrected keypoint or an added annotation in a done image was
    never fitted without refitting everything (--overwrite). Each output now stores a digest of
    what it was fitted from, and a rerun from changed inputs compares them."""
    import copy

    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    inputs = dict(images="/data/a", annotations="/data/a.json", annotations_digest="1234")
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False, inputs=inputs))
    mtimes = {p.name: p.stat().st_mtime_ns for p in fit_files(out)}
    corrected = copy.deepcopy(images)
    corrected[1].people[0].keypoints_2d[0, :2] += 5.0  # a keypoint moved in the second image
    corrected[2].people.append(copy.deepcopy(corrected[2].people[0]))  # an annotation added to the third
    corrected[2].people[-1].annot_id = 999
    with caplog.at_level("WARNING", logger="fit3d.pipeline.run"):
        s = run(corrected, fast_fitter, anny_model,
                RunConfig(out, progress=False, inputs=dict(inputs, annotations_digest="5678")))
    assert "2 images whose people changed are fitted again; the 2 other images" in caplog.records[0].getMessage()
    assert s["this_run"]["images_written"] == 2 and s["this_run"]["images_already_done"] == 2
    again = {p.name for p in fit_files(out) if p.stat().st_mtime_ns != mtimes[p.name]}
    assert again == {f"{corrected[1].image_key}.npz", f"{corrected[2].image_key}.npz"}
    assert 999 in read_fit(out / f"{corrected[2].image_key}.npz")["annot_id"].tolist()
    # the merged dataset holds no per-image bookkeeping
    arrays, _ = merge_fits(out)
    assert "input_digest" not in arrays
    # every annotation of the last image removed: its stale output goes (an image without people has none)
    corrected[3] = copy.deepcopy(corrected[3])
    gone = {p.annot_id for p in corrected[3].people}
    corrected[3].people = []
    caplog.clear()
    with caplog.at_level("WARNING", logger="fit3d.pipeline.run"):
        s = run(corrected, fast_fitter, anny_model,
                RunConfig(out, progress=False, inputs=dict(inputs, annotations_digest="9999")))
    assert any("no longer annotated with people" in m and "its output removed" in m for m in caplog.messages)
    assert not (out / f"{corrected[3].image_key}.npz").exists() and s["this_run"]["outputs_removed"] == 1
    arrays, _ = merge_fits(out)
    assert not gone & set(arrays["annot_id"].tolist()) and len(arrays["annot_id"]) > 0
    # an image whose annotations could not be read this time keeps its output (not a removal)
    corrected[0] = copy.deepcopy(corrected[0])
    corrected[0].people, corrected[0].dropped = [], ["a.json#annotations[0]"]
    s = run(corrected, fast_fitter, anny_model,
            RunConfig(out, progress=False, inputs=dict(inputs, annotations_digest="0000")))
    assert (out / f"{corrected[0].image_key}.npz").is_file() and s["this_run"]["outputs_removed"] == 0
    # an image no longer in the input at all (dropped from the file, a deleted OpenPose keypoint file):
    # its fits are kept, and the run says so (a video trial found them merged and exported in silence)
    dropped = corrected.pop(1)
    caplog.clear()
    with caplog.at_level("WARNING", logger="fit3d.pipeline.run"):
        s = run(corrected, fast_fitter, anny_model, RunConfig(out, progress=False))
    assert any(f"1 fit file in the output folder is of an image not among this run's readable inputs (e.g. "
               f"{dropped.image_key}" in m for m in caplog.messages), caplog.messages
    assert s["fits_not_in_input"] == 1 and (out / f"{dropped.image_key}.npz").is_file()
    # a split: its first shard looks at the whole folder (the input lists every shard's images), the others not
    found = [run(corrected, fast_fitter, anny_model, RunConfig(out, shard=(i, 2), progress=False)).get(
        "fits_not_in_input", 0) for i in range(2)]
    assert found == [1, 0]
    from fit3d.pipeline.plan import dry_run  # a dry run says what each shard's run says (a trial: every shard did)

    said = [any("not among this run's readable inputs" in line for line in dry_run(
        corrected, [], anny_model.keypoint_convention, RunConfig(out, shard=(i, 2))).lines) for i in range(2)]
    assert said == [True, False]


def test_a_run_records_its_inputs_with_the_annotation_files_digest(tmp_path, sample_dir):
    from fit3d.pipeline.summary import input_record

    r = input_record(sample_dir, sample_dir / "test_coco.json")
    assert r["images"] == str(sample_dir.resolve()) and r["annotations"].endswith("test_coco.json")
    copy = tmp_path / "a.json"
    copy.write_text((sample_dir / "test_coco.json").read_text().replace('"id": 785', '"id": 786', 1))
    other = input_record(sample_dir, copy)
    assert len(other["annotations_digest"]) == 16 and other["annotations_digest"] != r["annotations_digest"]


def test_a_rerun_with_another_openpose_model_says_so(tmp_path):
    """The OpenPose model is part of what a run read (the same folder read as BODY_25B is other
    people); a record written before this field (none) reads as BODY_25, the only model then."""
    from fit3d.pipeline.summary import input_changes, input_record

    (tmp_path / "op").mkdir()
    plain = input_record(tmp_path, keypoints_dir=tmp_path / "op")
    b = input_record(tmp_path, keypoints_dir=tmp_path / "op", openpose_model="body_25b")
    assert plain["openpose_model"] == "body_25" and b["openpose_model"] == "body_25b"
    assert input_changes(dict(inputs=plain), b) == "openpose_model: body_25 -> body_25b"
    assert input_changes(dict(inputs=b), plain) == "openpose_model: body_25b -> body_25"
    earlier = {k: v for k, v in plain.items() if k != "openpose_model"}
    assert input_changes(dict(inputs=earlier), plain) == ""
    assert input_changes(dict(inputs=earlier), b) == "openpose_model: body_25 -> body_25b"
    assert "openpose_model" not in input_record(tmp_path, annotations=tmp_path / "a.json")


def test_people_whose_camera_is_unusable_are_skipped_with_the_reason(tmp_path, sample_copy, anny_model, fast_fitter):
    """An image record of size 0 (no focal length can be made for it): its people are skipped with
    the reason and the rest of the run is fitted (the camera check raised in the run's bookkeeping
    once; then its people failed, so the image was retried by every run and never written)."""
    from dataclasses import replace

    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    images[0] = replace(images[0], image_size=(0, 0), people=[replace(p, image_size=(0, 0)) for p in images[0].people])
    s = run(images, fast_fitter, anny_model, RunConfig(tmp_path / "fits", progress=False))["this_run"]
    assert s["images_failed"] == 0 and s["exit_code"] == 0 and s["images_written"] == 4
    fit = read_fit(output_path(tmp_path / "fits", images[0].image_key))
    assert all(str(r).startswith("unusable camera") and "focal length must be" in str(r) for r in fit["skip_reason"])


def test_a_corrected_rerun_cut_short_still_refits_the_rest_when_resumed(tmp_path, sample_copy, anny_model,
                                                                        fast_fitter, caplog):
    """A review: the digests were compared only when the inputs differed from the last summary's, so
    a corrected run cut by --limit (or interrupted) and then resumed kept the stale fits of the images
    it had not reached. Every resume now compares each output's digest."""
    import copy

    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    inputs = dict(images="/data/a", annotations="/data/a.json", annotations_digest="1234")
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False, inputs=inputs))
    corrected = copy.deepcopy(images)
    for r in corrected[1:3]:
        r.people[0].keypoints_2d[0, :2] += 5.0
    fixed = dict(inputs, annotations_digest="5678")
    first = run(corrected, fast_fitter, anny_model, RunConfig(out, progress=False, inputs=fixed, limit=2))
    assert first["this_run"]["images_written"] == 1  # the first changed image; the second lies beyond --limit
    caplog.clear()
    with caplog.at_level("WARNING", logger="fit3d.pipeline.run"):
        s = run(corrected, fast_fitter, anny_model, RunConfig(out, progress=False, inputs=fixed))
    assert s["this_run"]["images_written"] == 1 and s["this_run"]["images_already_done"] == 3
    assert ("1 image already done is fitted again: its people (keypoints, boxes or camera) changed since it was "
            "fitted") in caplog.messages[0]
    # a sharded resume of an unsharded folder compares them too (no earlier summary of that shard)
    again = copy.deepcopy(corrected)
    again[0].people[0].keypoints_2d[0, :2] += 5.0
    done = sum(run(again, fast_fitter, anny_model, RunConfig(out, progress=False, shard=(i, 2)))["this_run"]
               ["images_written"] for i in range(2))
    assert done == 1


def test_an_image_with_a_failure_record_is_fitted_again_even_with_an_output(tmp_path, sample_copy, anny_model,
                                                                             fast_fitter):
    """A review: a refit that failed left the old output and its .failed.json; the output counted as
    done, so the failure was never retried while merge listed it as pending."""
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False))
    failure_path(out, images[0].image_key).write_text("{}")
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False))["this_run"]
    assert s["images_written"] == 1 and not failure_path(out, images[0].image_key).exists()
    assert RunConfig(out, focal_length=np.float32(1000.0)).focal_length == 1000.0  # numpy numbers too (a review)


def test_an_interrupted_training_of_neuralannot_marks_the_folders_summary(tmp_path, sample_copy, anny_model,
                                                                          fast_fitter):
    """A trial: Ctrl-C while training the annotator further left the earlier run's summary (exit
    0), so merge took a folder whose checkpoint had moved on as finished."""
    from fit3d.pipeline.merge import merge_fits
    from fit3d.pipeline.neuralannot import run_neuralannot

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "na"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)  # the earlier annotation

    class Stopped:
        def fit_dataset(self, target, progress=True):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_neuralannot([(sample_copy, images, problems)], Stopped(), None, anny_model, out, progress=False)
    s = json.loads((out / "summary.json").read_text())["this_run"]
    assert s["interrupted"] == 2 and s["exit_code"] == 130 and "training the annotator" in s["exit_meaning"]
    _, merged = merge_fits(out)
    assert [u["shard"] for u in merged["unfinished_shards"]] == ["1/1"]


def test_a_summary_that_cannot_be_written_is_said_with_exit_5(tmp_path, sample_copy, anny_model, fast_fitter,
                                                              monkeypatch, capsys):
    """A full disk at the end of a run (found by a crash trial): the run stopped with exit 1 and
    one line, and the failures the summary held were never shown; now the run returns its
    summary marked ``unwritten``, exit 5, and the command's closing lines say what was not
    written and what failed."""
    from fit3d.cli.fit import report_run
    from fit3d.pipeline import runner as run_module

    real = run_module.write_summary

    def full_disk(out_dir, shard, summary):
        if summary.get("running"):  # the start marker is written: the disk fills during the run
            return real(out_dir, shard, summary)
        raise ValueError("cannot write the run's summary x/summary.json: [Errno 28] No space left on device")

    monkeypatch.setattr(run_module, "write_summary", full_disk)
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    blocked = sorted(r.image_key for r in images if r.people)[0]
    output_path(out, blocked).mkdir(parents=True)  # and one image's output cannot be written either
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    assert s["this_run"]["exit_code"] == 5 and "No space left" in s["unwritten"][0]
    assert report_run(s, out) == 5
    err = capsys.readouterr().err
    assert "No space left on device" in err and f"failed {blocked}" in err and "run the same command again" in err
    assert json.loads((out / "summary.json").read_text())["running"]  # the marker stays: the run is unfinished
    monkeypatch.setattr(run_module, "write_summary", real)  # space again: the rerun finishes it
    os.rmdir(output_path(out, blocked))
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    assert s["this_run"]["exit_code"] == 0 and "unwritten" not in s and s["this_run"]["images_written"] == 1
    assert json.loads((out / "summary.json").read_text())["this_run"]["exit_code"] == 0


def test_an_interrupted_run_keeps_its_exit_code_when_its_summary_cannot_be_written():
    from fit3d.pipeline.summary import mark_unwritten

    s = dict(this_run=dict(interrupted=True, exit_code=130, exit_meaning="interrupted by SIGINT (rerun to resume)"))
    mark_unwritten(s, ["a"])
    mark_unwritten(s, ["a", "b"])
    assert s["this_run"]["exit_code"] == 130 and s["unwritten"] == ["a", "b"]
    s = dict(this_run=dict(interrupted=False, exit_code=3, exit_meaning="x"))
    mark_unwritten(s, ["a"])
    assert s["this_run"]["exit_code"] == 5 and "written" in s["this_run"]["exit_meaning"]


def test_planning_counts_done_images_without_opening_their_outputs(tmp_path, sample_copy, anny_model, fast_fitter,
                                                                   monkeypatch):
    """A scale trial: every run read each done output twice (planning the worker processes, then
    selecting its images): 60,000 archive reads for 30,000 outputs."""
    import fit3d.pipeline.selection as selection

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(images[:2], fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    opened = []
    monkeypatch.setattr(selection, "stored_input_digest", lambda path: opened.append(path) or _real_digest(path))
    quick = select_images(images, RunConfig(out), verify=False)
    assert not opened and quick.already == 2 and len(quick.todo) == len(images) - 2
    full = select_images(images, RunConfig(out))
    assert len(opened) == 2 and full.already == quick.already and full.todo == quick.todo


def _real_digest(path):
    from fit3d.pipeline.selection import _read_output

    return _read_output(path, lambda z: str(z["input_digest"]) if "input_digest" in z.files else None)


def test_settings_that_cannot_be_written_after_an_overwrite_are_in_the_summary_file(tmp_path, sample_copy, anny_model,
                                                                                    fast_fitter, monkeypatch):
    """A review: the summary file said exit 0 while the command exited 5 (merge took the shard as fine)."""
    from fit3d.pipeline import runner as run_module
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(images[:1], fast_fitter, anny_model, RunConfig(out, progress=False, settings=dict(fitter="smplify", x=1)))

    def full(*a, **k):
        raise ValueError("cannot write fit_settings.json: [Errno 28] No space left on device")

    monkeypatch.setattr(run_module, "finish_overwrite", full)
    s = run(images[:1], fast_fitter, anny_model, RunConfig(out, progress=False, overwrite=True,
                                                           settings=dict(fitter="smplify", x=2)))
    disk = json.loads((out / "summary.json").read_text())
    assert s["this_run"]["exit_code"] == disk["this_run"]["exit_code"] == 5 and "No space" in disk["unwritten"][0]


def test_a_run_removes_temporary_files_a_killed_writer_left(tmp_path, sample_copy, anny_model, fast_fitter):
    import time

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    out.mkdir()
    left = out / f".{images[0].image_key}.npz.fit3d-k1ll3d_x.tmp"
    left.write_bytes(b"half an archive")
    os.utime(left, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    s = run(images[:1], fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    assert s["stale_temporaries_removed"] == 1 and not left.exists()
    assert "stale_temporaries_removed" not in run(images[:1], fast_fitter, anny_model, RunConfig(out, progress=False))
    left.write_bytes(b"half an archive")
    os.utime(left, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    run(images, fast_fitter, anny_model, RunConfig(out, shard=(1, 2), progress=False))
    assert left.exists()  # only a split's first shard looks (each walking the folder costs shards x files)


def test_a_notebooks_wrong_arguments_are_named(tmp_path, sample_dir, anny_model):
    """A trial: run() given read_coco's tuple, people instead of images, the fitter and the model
    swapped or a string as the config failed with AttributeErrors from inside; nothing is written."""
    from fit3d.fitters import SMPLify

    fitter = SMPLify(anny_model)
    read = read_coco(sample_dir / "test_coco.json", sample_dir)
    images = read[0]
    config = RunConfig(tmp_path / "o")
    for args, said in (((read, fitter, anny_model, config), "unpack the reader's result"),
                       (([p for r in images for p in r.people], fitter, anny_model, config), "found Person"),
                       ((images, anny_model, fitter, config), "are the fitter and the model swapped"),
                       ((images, fitter, anny_model, str(tmp_path / "o")), "not a RunConfig")):
        with pytest.raises(TypeError, match=said):
            run(*args)
    assert not (tmp_path / "o").exists()


class _Sized:
    """A fitter with its own batch sizes (as SMPLify's and EFT's), recording each call's people."""

    def __init__(self, fitter, cpu, cuda):
        self.fitter, self.default_batch_size, self.cuda_batch_size, self.calls = fitter, cpu, cuda, []

    def __call__(self, batch):
        self.calls.append(len(batch))
        return self.fitter(batch)


def test_without_a_batch_size_the_run_takes_the_fitters_own_for_its_device(tmp_path, sample_copy, anny_model,
                                                                          fast_fitter):
    """``RunConfig.batch_size`` None: the fitter's size on the model's device (a notebook's run on a
    GPU used the CPU's 64, a review found); a fitter without sizes gets 64."""
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    sized = _Sized(fast_fitter, 5, 4096)
    s = run(images, sized, anny_model, RunConfig(tmp_path / "a", progress=False), problems)
    assert s["batch_size"] == 5 and max(sized.calls) <= 5 and sum(sized.calls) == 12
    s = run(images, lambda batch: fast_fitter(batch), anny_model, RunConfig(tmp_path / "b", progress=False), problems)
    assert s["batch_size"] == 64
    with pytest.raises(ValueError, match="batch_size"):
        RunConfig(tmp_path / "c", batch_size=0)
