import json
import shutil

import numpy as np
import pytest

from fit3d.data.conventions import COCO17
from fit3d.data.readers import InputProblem, read_coco
from fit3d.data.writers import fit_files, read_fit
from fit3d.pipeline import RunConfig, parse_shard, run
from fit3d.pipeline.selection import shard_images
from fit3d.pipeline.merge import complete_splits, merge_fits, write_merged
from tests.fixtures.layouts import two_layout_coco


def _by_person(arrays):
    return {(str(i), int(a)): k for k, (i, a) in enumerate(zip(arrays["image"], arrays["annot_id"]))}


def test_merging_shards_gives_the_people_and_parameters_of_one_run(tmp_path, sample_copy, anny_model, fast_fitter):
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    problems = problems + [InputProblem("test_coco.json", "a warning about the whole file", "warning")]
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    run(images, fast_fitter, anny_model, RunConfig(one, progress=False), problems)
    for i in range(3):
        run(images, fast_fitter, anny_model, RunConfig(sharded, shard=(i, 3), progress=False,
                                                       settings=dict(prior="gmm")), problems)
    a, sa = merge_fits(one)
    b, sb = merge_fits(sharded)
    assert len(a["annot_id"]) == len(b["annot_id"]) == 14 and sa["people_fitted"] == sb["people_fitted"] == 12
    assert sorted(set(b["shard"])) == ["1/3", "2/3", "3/3"] and set(a["shard"]) == {"1/1"}
    assert sb["latest_runs_total"]["images"] == 4 and sb["latest_runs_total"]["people_fitted"] == 12
    # every shard reports the whole input's problems: counted once, as one run does (was once per shard)
    assert sb["latest_runs_total"]["input_warnings"] == sa["latest_runs_total"]["input_warnings"] == 1
    assert len(sb["runs"]) == 3 and sb["settings"] == [dict(prior="gmm")]
    # without settings: the fitter, the model and what the fitter says of itself
    (recorded,) = sa["settings"]
    assert recorded["fitter"] == "smplify" and recorded["model"] == "anny" and recorded["fitter.prior"]["kind"] == "l2"
    ia, ib = _by_person(a), _by_person(b)
    assert ia.keys() == ib.keys()
    for key in ia:
        for f in ("global_orient", "body_pose", "betas", "transl", "keypoints_2d", "bbox", "focal_length"):
            np.testing.assert_allclose(a[f][ia[key]], b[f][ib[key]], atol=1e-4, equal_nan=True, err_msg=f)
        assert a["status"][ia[key]] == b["status"][ib[key]]
    assert list(a["keypoint_names"]) == list(COCO17.names)  # the input's layout, stored once


def test_write_merged_keeps_run_summaries_and_is_not_read_as_an_image(tmp_path, sample_copy, anny_model, fast_fitter):
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    path, s = write_merged(out)
    assert path == out / "dataset.npz" and s["people"] == 14
    summary = json.loads((out / "summary.json").read_text())
    assert "this_run" in summary and summary["merged"]["people_fitted"] == 12  # the run's own summary stays
    _, again = merge_fits(out)  # dataset.npz is not taken for an image's output
    assert again["people"] == 14 and again["latest_runs_total"]["people_fitted"] == 12
    with pytest.raises(ValueError, match="no per-image"):
        merge_fits(tmp_path / "images")


def test_shard_auto_reads_the_slurm_array():
    env = dict(SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_TASK_COUNT="8")
    assert parse_shard("auto", env) == (0, 8)
    assert parse_shard("auto", dict(SLURM_ARRAY_TASK_ID="7", SLURM_ARRAY_TASK_MIN="0", SLURM_ARRAY_TASK_MAX="7")) \
        == (7, 8)
    assert parse_shard("auto", dict(SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_MIN="1", SLURM_ARRAY_TASK_MAX="4")) \
        == (2, 4)
    with pytest.raises(ValueError, match="SLURM"):
        parse_shard("auto", {})
    with pytest.raises(ValueError, match="array's size"):  # was a KeyError (found by a helper)
        parse_shard("auto", dict(SLURM_ARRAY_TASK_ID="0"))
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_COUNT='x' is not a number"):
        parse_shard("auto", dict(SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_TASK_COUNT="x"))


def test_shard_auto_steps_through_a_stepped_array_and_refuses_splits_it_cannot_tell():
    """Found by a helper: --array=0-8:2 mapped its ids 0, 2, 4 to shards 1, 3, 5 of 5 (2 and 4
    never fitted) and failed on 6 and 8; a task resubmitted alone fitted the whole folder."""
    stepped = dict(SLURM_ARRAY_TASK_MIN="0", SLURM_ARRAY_TASK_MAX="8", SLURM_ARRAY_TASK_STEP="2",
                   SLURM_ARRAY_TASK_COUNT="5")
    assert [parse_shard("auto", dict(stepped, SLURM_ARRAY_TASK_ID=str(t))) for t in (0, 2, 4, 6, 8)] == \
        [(i, 5) for i in range(5)]
    with pytest.raises(ValueError, match=r"task 3 is not on its array's step of 5 tasks \(ids 0-8:2\)"):
        parse_shard("auto", dict(stepped, SLURM_ARRAY_TASK_ID="3"))
    for task in ("9", "10"):  # (9 read as "not on its step": a review)
        with pytest.raises(ValueError, match=rf"task {task} is outside its array of 5 tasks \(ids 0-8:2\)"):
            parse_shard("auto", dict(stepped, SLURM_ARRAY_TASK_ID=task))
    with pytest.raises(ValueError, match="not one range"):  # --array=1,3,7
        parse_shard("auto", dict(SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_MIN="1", SLURM_ARRAY_TASK_MAX="7",
                                 SLURM_ARRAY_TASK_COUNT="3"))
    with pytest.raises(ValueError, match="resubmitted alone"):  # --array=1, task 1 of a 0-based array alone
        parse_shard("auto", dict(SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_MIN="1", SLURM_ARRAY_TASK_MAX="1",
                                 SLURM_ARRAY_TASK_COUNT="1"))
    with pytest.raises(ValueError, match="resubmitted alone"):  # --array=17
        parse_shard("auto", dict(SLURM_ARRAY_TASK_ID="17", SLURM_ARRAY_TASK_MIN="17", SLURM_ARRAY_TASK_MAX="17",
                                 SLURM_ARRAY_TASK_COUNT="1"))
    assert parse_shard("auto", dict(SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_TASK_MIN="0", SLURM_ARRAY_TASK_MAX="0",
                                    SLURM_ARRAY_TASK_COUNT="1")) == (0, 1)


class _Killed(BaseException):
    """A process killed outright (SIGKILL, a lost node): nothing after it runs."""


class _DiesAfter:
    """A fitter whose n-th call is the process being killed."""

    def __init__(self, inner, n):
        self.inner, self.n, self.calls = inner, n, 0
        self.schedule, self.extra_defaults, self.name = inner.schedule, inner.extra_defaults, inner.name

    def __call__(self, batch):
        self.calls += 1
        if self.calls == self.n:
            raise _Killed()
        return self.inner(batch)


def test_merge_says_which_shards_did_not_finish(tmp_path, sample_copy, anny_model, fast_fitter):
    """Found by a helper: shards interrupted, killed or cut short by --limit were merged as complete,
    without a word."""
    from click.testing import CliRunner

    from fit3d.cli.main import cli
    from fit3d.pipeline.interrupt import Interrupted

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"

    class Interrupting(_DiesAfter):
        def __call__(self, batch):
            self.calls += 1
            if self.calls == self.n:
                raise Interrupted(15)
            return self.inner(batch)

    run(images, Interrupting(fast_fitter, 1), anny_model, RunConfig(out, shard=(0, 3), batch_size=1, progress=False))
    with pytest.raises(_Killed):
        run(images, _DiesAfter(fast_fitter, 2), anny_model, RunConfig(out, shard=(1, 3), batch_size=1, progress=False))
    run(images, fast_fitter, anny_model, RunConfig(out, shard=(2, 3), progress=False))
    _, s = merge_fits(out)
    why = {u["shard"]: u["why"] for u in s["unfinished_shards"]}
    assert "interrupted (exit 143)" in why["1/3"] and "has not finished" in why["2/3"] and "3/3" not in why
    assert s["missing_shards"] == [] and s["complete_splits"] == []
    r = CliRunner().invoke(cli, ["merge", "--fits", str(out)])
    assert r.exit_code == 0 and "warning: shard 2/3 is unfinished" in r.output, r.output
    def failing(fits_dir):  # an error the run does not fit around: the folder's merge cannot be retired
        raise ValueError("the disk is full")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("fit3d.pipeline.runner.retire_merged", failing)
        with pytest.raises(ValueError, match="disk is full"):
            run(images, fast_fitter, anny_model, RunConfig(out, shard=(1, 3), batch_size=1, progress=False))
    _, s = merge_fits(out)
    why = {u["shard"]: u["why"] for u in s["unfinished_shards"]}
    assert "stopped with an error (the disk is full)" in why["2/3"]  # (a review: it read "still running")
    for i in range(2):  # the same commands rerun: resumed, finished, complete
        run(images, fast_fitter, anny_model, RunConfig(out, shard=(i, 3), progress=False))
    _, s = merge_fits(out)
    assert s["unfinished_shards"] == [] and s["complete_splits"] == [3] and s["people"] == 14
    limited = tmp_path / "limited"
    run(images, fast_fitter, anny_model, RunConfig(limited, limit=1, progress=False))
    _, s = merge_fits(limited)
    ((limit,),) = [s["unfinished_shards"]]
    assert limit["shard"] == "1/1" and "--limit left 3 images unfitted: run it without --limit" in limit["why"]
    assert s["complete_splits"] == []
    run(images, fast_fitter, anny_model, RunConfig(limited, progress=False))
    run(images, fast_fitter, anny_model, RunConfig(limited, limit=1, progress=False))  # a --limit rerun of a done folder
    _, s = merge_fits(limited)
    assert s["unfinished_shards"] == [] and s["complete_splits"] == [1]  # (a review: it was marked unfinished)


def test_merge_names_the_finished_shards_that_had_no_people(tmp_path, sample_copy, anny_model, fast_fitter):
    """More shards than images: the last shards fit nothing. Merge listed only the shards with people
    ("from shards 1/6, 2/6, 3/6, 4/6"), as if the others had not run."""
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    for i in range(6):
        run(images, fast_fitter, anny_model, RunConfig(out, shard=(i, 6), progress=False))
    _, s = merge_fits(out)
    full = [f"{i + 1}/6" for i in range(6) if shard_images(images, (i, 6))]
    empty = [f"{i + 1}/6" for i in range(6) if not shard_images(images, (i, 6))]
    assert len(full) < 6 and s["shards"] == full and s["shards_without_people"] == empty
    assert s["complete_splits"] == [6] and s["missing_shards"] == [] and s["people"] == 14
    r = CliRunner().invoke(cli, ["merge", "--fits", str(out)])
    assert r.exit_code == 0 and f"from shards {', '.join(full)} ({', '.join(empty)}: no people);" in r.output, r.output
    # an unsharded folder resumed as two shards (everything already done): not "no people" (a review)
    whole = tmp_path / "whole"
    run(images, fast_fitter, anny_model, RunConfig(whole, progress=False))
    for i in range(2):
        run(images, fast_fitter, anny_model, RunConfig(whole, shard=(i, 2), progress=False))
    _, s = merge_fits(whole)
    assert s["shards"] == ["1/1"] and s["shards_without_people"] == []


@pytest.mark.parametrize("files_per_chunk", [1024, 1])
def test_outputs_of_different_keypoint_layouts_merge_in_the_union_of_the_layouts(
        tmp_path, sample_copy, anny_model, fast_fitter, monkeypatch, files_per_chunk):
    from fit3d.pipeline.merge import _Chunks

    monkeypatch.setattr(_Chunks, "FILES", files_per_chunk)  # 1: every file its own chunk, layouts mixed
    images, problems = read_coco(two_layout_coco(sample_copy, tmp_path / "two.json"), sample_copy)
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    a, s = merge_fits(out)
    names = list(a["keypoint_names"])
    assert s["people"] == 4 and sorted(names) == sorted(set(COCO17.names) | {"neck"})
    rows = _by_person(a)
    for f in fit_files(out):  # every person's keypoints by name, as in its own image's file
        d = read_fit(f)
        for i, aid in enumerate(d["annot_id"]):
            m = rows[(str(d["image"]), int(aid))]
            for name in names:
                for k, fill in (("keypoints_2d", 0.0), ("keypoints_3d", np.nan)):
                    want = (d[k][i, list(d["keypoint_names"]).index(name)] if name in d["keypoint_names"]
                            else np.full(3, fill))
                    np.testing.assert_allclose(a[k][m, names.index(name)], want, atol=1e-6, err_msg=f"{aid} {k} {name}")


def test_missing_shards_of_the_recorded_splits():
    from fit3d.pipeline.merge import missing_shards

    assert missing_shards(["2/2"]) == ["1/2"]
    assert missing_shards(["1/1"]) == [] and missing_shards([]) == []
    assert missing_shards(["1/3", "3/3", "1/1", "not a shard"]) == ["2/3"]  # each split on its own
    # a folder fitted as 3 shards, then resumed as --shard 1/2: said, with the split that is complete
    assert complete_splits(["1/3", "2/3", "3/3", "1/2"]) == [3] and complete_splits(["2/2"]) == []
    assert complete_splits(["1/3", "3/3", "1/1"]) == [1]


def test_merge_names_the_shards_that_did_not_run_and_a_later_run_retires_the_merge(
        tmp_path, sample_copy, anny_model, fast_fitter):
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, shard=(1, 2), progress=False), problems)  # 2/2 only
    r = CliRunner().invoke(cli, ["merge", "--fits", str(out)])
    assert r.exit_code == 0, r.output  # what exists is merged (README: merge's partial results are warnings)
    assert "warning: shard(s) 1/2 left no outputs or summary" in r.output
    merged = json.loads((out / "summary.json").read_text())["merged"]
    assert merged["missing_shards"] == ["1/2"] and merged["shards"] == ["2/2"]
    assert (out / "dataset.npz").is_file()
    r = CliRunner().invoke(cli, ["merge", "--fits", str(out), "--out", str(tmp_path / "d.txt")])
    assert r.exit_code == 2 and "ending in .npz" in r.output and not (tmp_path / "d.txt").exists()
    with pytest.raises(ValueError, match="ending in .npz"):  # the Python API refuses it too (numpy would
        write_merged(out, tmp_path / "d.txt")  # write d.txt.npz, not the file asked for)
    assert not (tmp_path / "d.txt").exists() and not (tmp_path / "d.txt.npz").exists()
    s = run(images, fast_fitter, anny_model, RunConfig(out, shard=(0, 2), progress=False), problems)  # writes fits
    assert not (out / "dataset.npz").exists() and not (out / "summary.json").exists()  # held only the merge
    assert s["merged_dataset_removed"] == [str(out / "dataset.npz")]
    _, again = merge_fits(out)
    assert again["missing_shards"] == [] and again["shards"] == ["1/2", "2/2"]


def test_a_run_that_writes_fits_removes_the_merged_dataset_and_a_resume_keeps_it(
        tmp_path, sample_copy, anny_model, fast_fitter, caplog):
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    dataset, _ = write_merged(out)
    s = run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)  # a resume: writes nothing
    assert s["this_run"]["images_written"] == 0 and "merged_dataset_removed" not in s
    assert dataset.is_file() and json.loads((out / "summary.json").read_text())["merged"]["people"] == 14
    with caplog.at_level("WARNING", logger="fit3d.pipeline.run"):
        s = run(images, fast_fitter, anny_model, RunConfig(out, overwrite=True, limit=1, progress=False), problems)
    assert s["this_run"]["images_written"] == 1 and not dataset.exists()
    assert s["merged_dataset_removed"] == [str(dataset)]
    summary = json.loads((out / "summary.json").read_text())
    assert "merged" not in summary and "this_run" in summary
    assert [m for m in caplog.messages if "removed" in m and "fit3d merge --fits" in m]
    # a dataset.npz that is not a merge's output is not touched
    np.savez(out / "dataset.npz", x=np.zeros(2))
    run(images, fast_fitter, anny_model, RunConfig(out, overwrite=True, limit=1, progress=False), problems)
    assert (out / "dataset.npz").is_file()

    # a copy of a merged folder: its run retires the copy's dataset, and leaves the original's alone
    # without calling it out of date (found by a new user's trial: the copied summary's record
    # named the original's dataset)
    import shutil

    (out / "dataset.npz").unlink()
    original, _ = write_merged(out)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    caplog.clear()
    with caplog.at_level("WARNING", logger="fit3d.pipeline.run"):
        s = run(images, fast_fitter, anny_model, RunConfig(copy, overwrite=True, limit=1, progress=False), problems)
    assert s["merged_dataset_removed"] == [str(copy / "dataset.npz")] and original.is_file()
    assert not [m for m in caplog.messages if "out of date" in m], caplog.messages
    # merged under another name inside the folder: the copy's own file is retired (a review: it was
    # left in place, as the record named the original's)
    (copy / "dataset.npz").unlink(missing_ok=True)
    named, _ = write_merged(out, out / "train.npz")
    copy2 = tmp_path / "copy2"
    shutil.copytree(out, copy2)
    s = run(images, fast_fitter, anny_model, RunConfig(copy2, overwrite=True, limit=1, progress=False), problems)
    assert str(copy2 / "train.npz") in s["merged_dataset_removed"] and named.is_file()


def test_a_folders_parameters_pose_the_model_to_its_stored_keypoints(tmp_path, sample_copy, anny_model, fast_fitter):
    """README's read-back: the merged parameters of the fitted people, put through the body model,
    give the 3D and 2D keypoints the folder stores (the parameters are the fit, in the camera frame)."""
    import torch

    from fit3d.data.conventions import convert
    from fit3d.geometry import project

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    run(images, fast_fitter, anny_model, RunConfig(tmp_path / "fits", progress=False), problems)
    people, _ = merge_fits(tmp_path / "fits")
    ok = people["status"] == "fitted"
    assert ok.sum() == 12
    body = anny_model(*(torch.as_tensor(people[k][ok]) for k in ("global_orient", "body_pose", "betas", "transl")))
    k3 = convert(body.keypoints_3d.detach().numpy(), anny_model.keypoint_convention, COCO17)
    np.testing.assert_allclose(k3, people["keypoints_3d"][ok], atol=2e-4)
    uv = project(torch.as_tensor(k3), torch.as_tensor(people["focal_length"][ok]),
                 torch.as_tensor(people["principal_point"][ok]))
    np.testing.assert_allclose(uv.numpy(), people["keypoints_2d_fit"][ok], atol=0.05)


def test_an_output_lacking_fields_is_named_not_merged_and_a_folder_of_no_readable_fit_is_said(
        tmp_path, sample_copy, anny_model, fast_fitter):
    """Found by a trial: one output without ``betas`` stopped merge and export ("fields differ",
    exit 1, nothing written), and a folder whose only fit was cut short made export raise a
    KeyError traceback (merge wrote a dataset of 0 people)."""
    from click.testing import CliRunner

    from fit3d.cli.main import cli
    from fit3d.data.writers import write_npz
    from fit3d.pipeline.merge import NoReadableFits

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    files = [f for f in fit_files(out) if len(read_fit(f)["annot_id"])]
    cut = read_fit(files[0])
    write_npz(files[0], {k: v for k, v in cut.items() if k != "betas"})
    arrays, s = merge_fits(out)
    [u] = s["unreadable_outputs"]
    assert u["file"] == files[0].name and "lacks the fields ['betas']" in u["reason"] and "delete it" in u["reason"]
    assert len(arrays["annot_id"]) == 14 - len(cut["annot_id"])
    r = CliRunner().invoke(cli, ["merge", "--fits", str(out)])  # (exit 0 before: 'merge && train' went on)
    assert r.exit_code == 3 and "warning: unreadable" in r.output and (out / "dataset.npz").is_file(), r.output
    assert "(its people are not in the dataset)" in r.output
    # whatever the files' order (a review: the damaged file, sorted first, was taken as the reference)
    renamed = out / "0000.jpg.npz"
    files[0].rename(renamed)
    _, s = merge_fits(out)
    assert [u["file"] for u in s["unreadable_outputs"]] == [renamed.name]
    renamed.rename(files[0])
    no_ids = {k: v for k, v in cut.items() if k != "annot_id"}  # its people would vanish as "no people"
    write_npz(files[0], no_ids)
    _, s = merge_fits(out)
    assert "lacks the fields ['annot_id']" in s["unreadable_outputs"][0]["reason"]
    # a person field the others lack (not a core one): runs of different kinds in one folder, refused
    write_npz(files[0], dict(cut, extra=np.zeros(len(cut["annot_id"]))))
    with pytest.raises(ValueError, match="differ from the other files'"):
        merge_fits(out)
    write_npz(files[0], cut)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg.npz").write_bytes(files[1].read_bytes()[:100])
    with pytest.raises(NoReadableFits) as e:
        merge_fits(broken)
    assert [u["file"] for u in e.value.unreadable] == ["a.jpg.npz"]
    for args in (["merge"], ["export", "--format", "humandata", "--out", str(tmp_path / "hd.npz")]):
        r = CliRunner().invoke(cli, [args[0], "--fits", str(broken), *args[1:]])
        assert r.exit_code == 3 and "unreadable a.jpg.npz" in r.output and "none of the 1 per-image fits" in r.output
        assert "Traceback" not in r.output and not isinstance(r.exception, KeyError), r.output
    assert not (broken / "dataset.npz").exists() and not (tmp_path / "hd.npz").exists()


def test_an_unfinished_shard_of_another_split_is_hedged_when_a_split_is_complete(
        tmp_path, sample_copy, anny_model, fast_fitter):
    """Found by a trial: a --shard i/2 --limit run, then a whole 3-shard split: merge said the
    i/2 shard's images were not in the dataset, though the complete split had fitted them."""
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    half = max(range(2), key=lambda i: len(shard_images(images, (i, 2))))  # a shard --limit 1 cuts short
    assert len(shard_images(images, (half, 2))) > 1
    run(images, fast_fitter, anny_model, RunConfig(out, shard=(half, 2), limit=1, progress=False))
    for i in range(3):
        run(images, fast_fitter, anny_model, RunConfig(out, shard=(i, 3), progress=False))
    r = CliRunner().invoke(cli, ["merge", "--fits", str(out)])
    assert r.exit_code == 0 and "merged 14 people" in r.output, r.output
    assert (f"warning: shard {half + 1}/2 is unfinished: unless the folder's complete split (3 shard(s)) fitted them, its "
            "images not yet fitted are not in the dataset") in r.output


def test_every_earlier_merge_written_into_the_folder_is_retired_and_the_advice_names_an_outside_out(
        tmp_path, sample_copy, anny_model, fast_fitter, caplog):
    """Found by a trial: after merges to FITS/extra.npz and then FITS/dataset.npz, a run removed
    only dataset.npz, leaving extra.npz with the old fits; and with --out outside the folder the
    advice 'fit3d merge --fits X' would write X/dataset.npz, not the file said to be out of date."""
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    write_merged(out, out / "extra.npz")
    write_merged(out)
    np.savez(out / "notes.npz", x=np.zeros(2))  # not a merged dataset: kept
    shutil.copy(out / "extra.npz", out / "backup.npz")  # a merged dataset no merge of the folder wrote: kept
    with caplog.at_level("WARNING", logger="fit3d.pipeline.run"):
        s = run(images, fast_fitter, anny_model, RunConfig(out, overwrite=True, limit=1, progress=False), problems)
    assert sorted(s["merged_dataset_removed"]) == sorted([str(out / "dataset.npz"), str(out / "extra.npz")])
    assert (out / "notes.npz").is_file() and (out / "backup.npz").is_file()
    # a command that writes each removed file again (the advice named the default one only: a review)
    assert any(f"'fit3d merge --fits {out}' and 'fit3d merge --fits {out} --out {out / 'extra.npz'}'" in m
               for m in caplog.messages), caplog.messages
    caplog.clear()
    # the same after the folder is copied and merged again there (a review: the copy's record of
    # its earlier --out was lost, its paths naming the original folder)
    write_merged(out, out / "extra.npz")
    write_merged(out)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    write_merged(copy)
    s = run(images, fast_fitter, anny_model, RunConfig(copy, overwrite=True, limit=1, progress=False), problems)
    assert sorted(s["merged_dataset_removed"]) == sorted([str(copy / "dataset.npz"), str(copy / "extra.npz")])
    assert (out / "extra.npz").is_file() and (out / "dataset.npz").is_file()  # the original's untouched
    (out / "extra.npz").unlink()
    outside, before = tmp_path / "train.npz", tmp_path / "train_v1.npz"
    write_merged(out, before)
    write_merged(out, outside)
    with caplog.at_level("WARNING", logger="fit3d.pipeline.run"):
        run(images, fast_fitter, anny_model, RunConfig(out, overwrite=True, limit=1, progress=False), problems)
    assert any(f"{outside} is out of date" in m and f"fit3d merge --fits {out} --out {outside}'" in m
               for m in caplog.messages), caplog.messages
    # (a review: only the latest merge's file outside was said to be out of date, the earlier forgotten)
    assert any(f"{before} is out of date" in m and f"'fit3d merge --fits {out} --out {before}'" in m
               for m in caplog.messages), caplog.messages
    assert before.is_file() and outside.is_file()  # outside the folder: kept


def test_merge_says_how_many_input_problems_the_runs_recorded(tmp_path, sample_copy, anny_model, fast_fitter):
    """Found by a trial: tasks exited 3 for unreadable images, and merge's lines said nothing of
    the people left out (only ``input_errors`` in summary.json)."""
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    problems = problems + [InputProblem("gone.jpg", "image file not found (2 annotations not fitted: ids 1, 2)")]
    out = tmp_path / "fits"
    for i in range(2):
        run(images, fast_fitter, anny_model, RunConfig(out, shard=(i, 2), progress=False), problems)
    r = CliRunner().invoke(cli, ["merge", "--fits", str(out)])
    assert r.exit_code == 0 and "warning: the runs recorded 1 input problem (unreadable" in r.output, r.output


def test_a_folder_holding_other_run_folders_is_not_merged_as_one(tmp_path, sample_copy, anny_model, fast_fitter):
    """NeuralAnnot with several image folders writes OUT/<folder> per set: merging OUT merged both
    with image paths that lost their folder (and a rerun into OUT itself duplicated people; a trial)."""
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "na"
    run(images, fast_fitter, anny_model, RunConfig(out / "set_a", progress=False), problems)
    run(images, fast_fitter, anny_model, RunConfig(out / "set_b", progress=False), problems)
    with pytest.raises(ValueError, match=r"holds other run folders \(set_a, set_b, each with its own summary\)"):
        merge_fits(out)
    r = CliRunner().invoke(cli, ["export", "--fits", str(out), "--format", "humandata", "--out", str(tmp_path / "h.npz")])
    assert r.exit_code == 1 and "merge or export each run's folder on its own" in r.output, r.output
    _, s = merge_fits(out / "set_a")  # each on its own, as before
    assert s["people"] == 14


def test_a_merge_made_while_a_run_fits_is_retired_when_it_ends(tmp_path, sample_copy, anny_model, fast_fitter):
    """Found by a trial: a merge run during the fitting left a dataset of the first images, and its totals,
    after the run had written the rest (exit 0)."""
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    calls = []

    def merging_fitter(batch):  # someone runs fit3d merge between the run's batches
        if calls:
            write_merged(out)
        calls.append(1)
        return fast_fitter(batch)

    merging_fitter.extra_defaults = fast_fitter.extra_defaults
    s = run(images, merging_fitter, anny_model, RunConfig(out, batch_size=2, progress=False, fitter_name="smplify"),
            problems)
    assert len(calls) > 2 and s["this_run"]["images_written"] >= 3  # (a merge happened between writes)
    assert not (out / "dataset.npz").exists() and "merged" not in json.loads((out / "summary.json").read_text())
    assert s["merged_dataset_removed"] == [str(out / "dataset.npz")]


def test_a_merge_that_cannot_be_written_says_so_in_one_line_and_leaves_no_dataset(tmp_path, sample_copy, anny_model,
                                                                                 fast_fitter, monkeypatch):
    """A review: a full disk gave a traceback (an OSError the command line did not catch), and a
    dataset whose totals were not recorded would never be retired by a later run."""
    import fit3d.data.writers as writers

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(images[:1], fast_fitter, anny_model, RunConfig(out, progress=False), problems)

    def full(path, obj, strict=False):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers, "write_json", full)
    with pytest.raises(ValueError, match="cannot write the merged totals.*No space left.*nothing merged"):
        write_merged(out)
    assert not (out / "dataset.npz").exists()


def test_tracking_ids_reach_the_outputs_and_outputs_from_before_them_still_merge(tmp_path, sample_copy, anny_model,
                                                                                  fast_fitter):
    """track_id (a video trial: OpenPose's person_id was dropped) is in every output and the
    merged dataset; a folder fitted partly before it existed merges, its earlier people -1."""
    from fit3d.data.writers import write_npz

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    images[0].people[0].track_id = 5
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False), problems)
    assert read_fit(out / f"{images[0].image_key}.npz")["track_id"].tolist()[0] == 5
    older = out / f"{images[1].image_key}.npz"  # as an earlier fit3d wrote it: no track_id
    d = dict(read_fit(older))
    del d["track_id"]
    write_npz(older, d)
    arrays, _ = merge_fits(out)
    by = _by_person(arrays)
    assert arrays["track_id"][by[(images[0].image_key, images[0].people[0].annot_id)]] == 5
    assert sorted(set(arrays["track_id"].tolist())) == [-1, 5]


def test_fits_of_two_body_models_in_one_folder_name_both_files(tmp_path):
    """A trial: an SMPL fit among anny fits was reported as '<an anny file>: joint_names differ'."""
    from fit3d.data.writers import write_npz

    def fit(name, model, joints):
        write_npz(tmp_path / f"{name}.npz", dict(
            image=np.str_(name), model=np.str_(model), joint_names=np.asarray([f"j{i}" for i in range(joints)]),
            keypoint_names=np.asarray(COCO17.names), annot_id=np.array([1]), status=np.asarray(["fitted"]),
            valid=np.ones(1, bool), keypoints_2d=np.zeros((1, 17, 3), np.float32), global_orient=np.zeros((1, 3)),
            body_pose=np.zeros((1, joints - 1, 3)), betas=np.zeros((1, 10)), transl=np.zeros((1, 3))))

    fit("a.jpg", "anny", 20)
    fit("b.jpg", "smpl", 24)
    with pytest.raises(ValueError, match=r"fits of two body models in one folder: b.jpg.npz \(smpl, 24 joints\) and "
                                         r"a.jpg.npz \(anny, 20 joints\)"):
        merge_fits(tmp_path)


def test_a_merged_dataset_named_like_a_fit_is_refused_and_one_found_in_the_folder_is_named(
        tmp_path, sample_copy, anny_model, fast_fitter):
    """Found by a review: --out FITS/all.v2.npz was read back by every later merge as an image's fit,
    which then failed with numpy's message."""
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False))
    with pytest.raises(ValueError, match="name it without one"):
        write_merged(out, out / "all.v2.npz")
    write_merged(out, tmp_path / "all.v2.npz")  # outside the folder: any name
    shutil.copy(tmp_path / "all.v2.npz", out / "copied.v2.npz")  # put there by hand
    arrays, s = merge_fits(out)
    assert [u["file"] for u in s["unreadable_outputs"]] == ["copied.v2.npz"]
    assert "a merged dataset" in s["unreadable_outputs"][0]["reason"] and len(arrays["annot_id"]) == s["people"]


def test_neuralannot_s_image_sets_combine_their_exit_codes_as_an_array_does():
    from fit3d.pipeline.summary import combined_exit_code

    assert [combined_exit_code(c) for c in ([0, 4], [4, 4], [3, 4], [5, 3, 0], [4, 130], [])] == [0, 4, 3, 5, 130, 0]
    # a task stopped by an error (a shard refused by its lock: nothing fitted) is not hidden by another's
    # unreadable images ("the rest was fitted") or failures; an interruption still comes first (a review)
    assert [combined_exit_code(c) for c in ([1, 3], [5, 1, 0], [2, 5], [1, 143], [1, 4])] == [1, 1, 2, 143, 1]


def test_an_overwrite_of_other_settings_in_which_every_image_fails_retires_the_merge(tmp_path, sample_copy,
                                                                                      anny_model, fast_fitter):
    """Found by a review of the mend that removes a failed image's earlier output: with every image failed
    nothing was written, so the merge of the earlier fits stayed while the folder was recorded as the new
    settings'."""
    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    run(images, fast_fitter, anny_model, RunConfig(out, progress=False, settings=dict(prior="gmm")), problems)
    dataset, _ = write_merged(out)

    def failing(batch):
        raise RuntimeError("simulated")

    failing.extra_defaults = fast_fitter.extra_defaults
    s = run(images, failing, anny_model, RunConfig(out, progress=False, overwrite=True, settings=dict(prior="vae")),
            problems)
    assert s["this_run"]["images_written"] == 0 and s["this_run"]["images_failed"] == 4
    assert not dataset.exists() and s["merged_dataset_removed"] == [str(dataset)]
    assert not list(out.glob("*.npz"))  # no fit of the earlier settings left


def test_damaged_summaries_and_a_single_array_under_a_fits_name_are_named_not_tracebacks(
        tmp_path, sample_copy, anny_model, fast_fitter):
    """A review: a damaged summary.json stopped every merge with a JSON error naming no file, after the
    dataset had been written; a shard summary holding null, and an .npy saved under an image's fit
    name, ended in TypeError tracebacks."""
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    out = tmp_path / "fits"
    for i in range(2):
        run(images, fast_fitter, anny_model, RunConfig(out, shard=(i, 2), progress=False), problems)
    (out / "summary.json").write_text('{"merged": {')
    (out / "summary.shard-2-of-2.json").write_text("null")
    np.save(open(out / "zz.jpg.npz", "wb"), np.zeros(3))
    path, s = write_merged(out)
    assert path.is_file() and s["people"] == 14
    unreadable = {u["file"]: u["reason"] for u in s["unreadable_outputs"]}
    assert set(unreadable) == {"summary.json", "summary.shard-2-of-2.json", "zz.jpg.npz"}
    assert "single array" in unreadable["zz.jpg.npz"] and "not a fit3d summary" in unreadable["summary.shard-2-of-2.json"]
    assert json.loads((out / "summary.json").read_text())["merged"]["people"] == 14  # the damaged one replaced
    # (a README trial: such a shard was said to have left "no summary")
    assert [u["shard"] for u in s["unfinished_shards"]] == ["2/2"]
    assert "its summary cannot be read" in s["unfinished_shards"][0]["why"]
    assert {u["file"]: u["kind"] for u in s["unreadable_outputs"]} == {
        "summary.json": "summary", "summary.shard-2-of-2.json": "summary", "zz.jpg.npz": "fit"}
    r = CliRunner().invoke(cli, ["merge", "--fits", str(out)])
    assert r.exit_code == 3, r.output  # a fit's people are missing
    assert "unreadable summary.shard-2-of-2.json: not a fit3d summary" in r.output
    assert "(its run's counts are not in the totals)" in r.output and "(its people are not in the dataset)" in r.output
    (out / "zz.jpg.npz").unlink()  # only summaries damaged: every person is in the dataset, a warning
    for args in (["merge"], ["export", "--format", "humandata", "--out", str(tmp_path / "hd.npz")]):
        r = CliRunner().invoke(cli, [args[0], "--fits", str(out), *args[1:]])
        assert r.exit_code == 0, r.output  # (export exited 3 and said the summary's "people are not exported")
        assert "unreadable summary.shard-2-of-2.json" in r.output and "people are not" not in r.output, r.output


def test_merge_warns_when_the_runs_were_fitted_with_different_settings(tmp_path, sample_copy, anny_model,
                                                                      fast_fitter):
    """A review: outputs of two settings copied into one folder were merged without a word."""
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    images, problems = read_coco(sample_copy / "test_coco.json", sample_copy)
    a, b = tmp_path / "a", tmp_path / "b"
    run(images, fast_fitter, anny_model, RunConfig(a, shard=(0, 2), progress=False, settings=dict(prior="gmm")), problems)
    run(images, fast_fitter, anny_model, RunConfig(b, shard=(1, 2), progress=False, settings=dict(prior="l2")), problems)
    for f in b.iterdir():
        if f.name.endswith(".npz") or f.name.startswith("summary.shard"):
            shutil.copy(f, a / f.name)
    r = CliRunner().invoke(cli, ["merge", "--fits", str(a)])
    assert r.exit_code == 0 and "record 2 different fit settings (in prior):" in r.output, r.output
    r = CliRunner().invoke(cli, ["merge", "--fits", str(b)])
    assert r.exit_code == 0 and "different fit settings" not in r.output, r.output
    # settings that a run's check takes for the same (a setting one predates, at its default) are one
    shard2 = json.loads((b / "summary.shard-2-of-2.json").read_text())
    shard2["settings"]["follow"] = False  # (a newer fit3d records follow; the first shard's run predates it)
    shard1 = json.loads((a / "summary.shard-1-of-2.json").read_text())
    shard1["settings"] = {k: v for k, v in shard2["settings"].items() if k != "follow"}
    (a / "summary.shard-1-of-2.json").write_text(json.dumps(shard1))
    (a / "summary.shard-2-of-2.json").write_text(json.dumps(shard2))
    r = CliRunner().invoke(cli, ["merge", "--fits", str(a)])
    assert r.exit_code == 0 and "different fit settings" not in r.output, r.output
