"""``fit3d train-regressor``: a deep ensemble from ``--members``; ``fit3d setup-model``'s options."""

from click.testing import CliRunner

from fit3d.cli.main import cli


def test_train_regressor_members_writes_an_ensemble_and_no_checkpoint(tmp_path):
    from fit3d.regressors.ensemble import EnsembleRegressor
    from fit3d.training.regressor import load_regressor

    out = tmp_path / "reg.pt"
    (tmp_path / "reg.pt.partial.member2").write_bytes(b"")  # left by an interrupted run with --members 3
    r = CliRunner().invoke(cli, ["train-regressor", "--members", "2", "--rounds", "1", "--people", "256",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    reg = load_regressor(out)
    assert isinstance(reg, EnsembleRegressor) and len(reg.members) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg.pt"]  # every member's checkpoint removed


def test_train_regressor_refuses_prototypes_with_members(tmp_path):
    protos = tmp_path / "p.pt"
    protos.write_bytes(b"")
    r = CliRunner().invoke(cli, ["train-regressor", "--members", "2", "--prototypes", str(protos),
                                 "--out", str(tmp_path / "r.pt")])
    assert r.exit_code == 2



def test_setup_model_has_no_default_model_and_the_others_keep_anny():
    r = CliRunner().invoke(cli, ["setup-model", "--quick"])  # anny, the others' default, needs no set-up
    assert r.exit_code == 2 and "Missing option '--model'" in r.output, r.output
    help_text = " ".join(CliRunner().invoke(cli, ["setup-model", "--help"]).output.split())
    assert "[required]" in help_text and "default: anny" not in help_text
    assert "[default: anny]" in " ".join(CliRunner().invoke(cli, ["train-regressor", "--help"]).output.split())
