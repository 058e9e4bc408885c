"""``fit3d benchmark make`` and ``fit3d benchmark run`` through the command line."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fit3d.cli.main import cli


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    bench = tmp_path_factory.mktemp("bench") / "b.npz"
    r = CliRunner().invoke(cli, ["benchmark", "make", "--count", "6", "--out", str(bench)])
    assert r.exit_code == 0, r.output
    return bench


def test_benchmark_run_regressor_with_and_without_flip(tmp_path, bench):
    scores = {}
    for flag in ("--flip", "--no-flip"):
        out = tmp_path / f"{flag}.json"
        r = CliRunner().invoke(cli, ["benchmark", "run", "--bench", str(bench), "--fitter", "regressor", flag,
                                     "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert "%|" in r.output  # a progress bar by default
        s = json.loads(out.read_text())
        assert s["fitter"] == "regressor" and s["flip"] == (flag == "--flip")
        scores[flag] = s["pa_mpjpe"]
    assert scores["--flip"] != scores["--no-flip"]  # the option reaches the regressor


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_benchmark_run_writes_valid_json_and_no_progress_bar_with_no_progress(tmp_path, bench):
    data = dict(np.load(bench))
    data["rare"] = np.zeros_like(data["rare"])  # no rare people: their metrics are NaN
    common = tmp_path / "common.npz"
    np.savez(common, **data)
    out = tmp_path / "s.json"
    r = CliRunner().invoke(cli, ["benchmark", "run", "--bench", str(common), "--fitter", "regressor", "--limit", "2",
                                 "--no-progress", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "%|" not in r.output
    printed, written = _strict_json(r.stdout), _strict_json(out.read_text())
    assert printed == written and written["pa_mpjpe_rare"] is None and written["pa_mpjpe_common"] > 0
    assert written["pose_space"] is None  # not smplify's: not recorded as used
    assert written["batch_size"] == 64  # the CPU's (on a GPU the fitter's GPU batch)


@pytest.mark.parametrize("fitter, options, named", [
    ("regressor", ["--prior", "vae"], "--prior"),
    ("regressor", ["--pose-space", "latent"], "--pose-space"),
    ("eft", ["--pose-space", "latent"], "--pose-space"),
    ("eft", ["--schedule", "s.json"], "--schedule"),
    ("smplify", ["--no-flip"], "--flip/--no-flip"),
    ("regressor", ["--finetune", "fast"], "--finetune"),
    ("smplify", ["--finetune", "all"], "--finetune"),
])
def test_benchmark_run_refuses_options_its_fitter_does_not_use(tmp_path, fitter, options, named):
    any_file = tmp_path / "b.npz"  # refused before the benchmark is read
    any_file.write_bytes(b"")
    r = CliRunner().invoke(cli, ["benchmark", "run", "--bench", str(any_file), "--fitter", fitter, *options])
    assert r.exit_code == 2 and f"{named} does not apply to --fitter {fitter}" in r.output, r.output


def test_benchmark_run_refuses_a_latent_fit_without_the_vae_and_smpl_options_for_anny(tmp_path, bench):
    """Found by a new user's trial: --pose-space latent with the default GMM was exit 1, and --gender or
    --model-path on an anny benchmark were ignored in silence."""
    for options, said in ((["--pose-space", "latent"], "add --prior vae"),
                          (["--pose-space", "latent", "--prior", "gmm"], "add --prior vae"),
                          (["--gender", "female"], "--gender is for the SMPL family"),
                          (["--model-path", str(tmp_path)], "--model-path is for the SMPL family")):
        r = CliRunner().invoke(cli, ["benchmark", "run", "--bench", str(bench), "--limit", "1", *options])
        assert r.exit_code == 2 and said in r.output, (options, r.output)


def test_benchmark_run_fine_tunes_what_finetune_names_and_records_it(tmp_path, bench, monkeypatch):
    import fit3d.fitters.build as build

    made = []
    real = build.build_eft
    monkeypatch.setattr(build, "build_eft", lambda *a, **k: made.append(k) or real(*a, **k))
    out = tmp_path / "s.json"
    r = CliRunner().invoke(cli, ["benchmark", "run", "--bench", str(bench), "--fitter", "eft", "--finetune", "fast",
                                 "--limit", "2", "--no-progress", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert made[0]["finetune"] == "fast" and _strict_json(out.read_text())["finetune"] == "fast"


def test_benchmark_run_prior_help_names_the_defaults():
    from fit3d.fitters.build import DEFAULT_PRIOR

    r = CliRunner().invoke(cli, ["benchmark", "run", "--help"])
    assert f"default: smplify {DEFAULT_PRIOR}, eft none" in " ".join(r.output.split())


def test_benchmark_make_for_a_model_not_set_up_says_to_run_setup_model(tmp_path, smpl_like_dir):
    """Before: 'Error: [Errno 2] No such file or directory: .../pose_set.npz'."""
    r = CliRunner().invoke(cli, ["benchmark", "make", "--count", "8", "--model", "smpl", "--model-path",
                                 str(smpl_like_dir), "--out", str(tmp_path / "b.npz")])
    errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
    assert r.exit_code == 1 and len(errors) == 1, r.output
    assert "no retargeted pose set for this smpl model yet: run 'fit3d setup-model --model smpl" in errors[0]
    assert "Errno" not in r.output and not (tmp_path / "b.npz").exists()


def test_benchmark_run_on_a_file_that_is_no_benchmark_is_a_one_line_error(tmp_path, bench):
    """Found by a trial: a fit file, a text file or a cut-short benchmark ended in tracebacks."""
    fit = tmp_path / "a.jpg.npz"
    np.savez(fit, keypoints_2d=np.zeros((1, 17, 3)), image_size=np.asarray([640, 480]))
    (tmp_path / "t.txt").write_text("hello")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(bench.read_bytes()[:200])
    for path, said in ((fit, "a.jpg.npz is not a benchmark file"), (tmp_path / "t.txt", "t.txt is not a benchmark"),
                       (cut, "cut.npz is not a benchmark file")):
        r = CliRunner().invoke(cli, ["benchmark", "run", "--bench", str(path), "--limit", "1"])
        assert r.exit_code == 1 and said in r.output and "Traceback" not in r.output, r.output
