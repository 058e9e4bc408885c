"""``fit3d benchmark make`` and ``fit3d benchmark run`` through the command line."""

import json

from click.testing import CliRunner

from fit3d.cli.main import cli


def test_benchmark_run_regressor_with_and_without_flip(tmp_path):
    bench = tmp_path / "b.npz"
    r = CliRunner().invoke(cli, ["benchmark", "make", "--count", "6", "--out", str(bench)])
    assert r.exit_code == 0, r.output
    scores = {}
    for flag in ("--flip", "--no-flip"):
        out = tmp_path / f"{flag}.json"
        r = CliRunner().invoke(cli, ["benchmark", "run", "--bench", str(bench), "--fitter", "regressor", flag,
                                     "--out", str(out)])
        assert r.exit_code == 0, r.output
        s = json.loads(out.read_text())
        assert s["fitter"] == "regressor" and s["flip"] == (flag == "--flip")
        scores[flag] = s["pa_mpjpe"]
    assert scores["--flip"] != scores["--no-flip"]  # the option reaches the regressor
