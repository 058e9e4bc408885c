"""``fit3d train-regressor``: a deep ensemble from ``--members``; ``fit3d setup-model``'s options."""

import pytest
from click.testing import CliRunner

from fit3d.cli.main import cli


def test_train_regressor_members_writes_an_ensemble_and_no_checkpoint(tmp_path):
    from fit3d.regressors.ensemble import EnsembleRegressor
    from fit3d.regressors.io import load_regressor

    out = tmp_path / "reg.pt"
    (tmp_path / "reg.pt.partial.member2").write_bytes(b"")  # left by an interrupted run with --members 3
    r = CliRunner().invoke(cli, ["train-regressor", "--members", "2", "--rounds", "1", "--people", "256",
                                 "--width", "64", "--out", str(out)])
    assert r.exit_code == 0, r.output
    reg = load_regressor(out)
    assert isinstance(reg, EnsembleRegressor) and len(reg.members) == 2
    assert all(m.width == 64 for m in reg.members)  # --width reaches every member
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg.pt", "reg.pt.lock"]  # every member's checkpoint removed
    import torch

    from fit3d.body_models.weights import file_digest
    from fit3d.mocap import bundled_pose_set

    record = torch.load(out, weights_only=False)["training"]  # what made it (the bundled weights record nothing)
    assert record["command"] == "fit3d train-regressor" and record["pose_set_sha256"] == file_digest(bundled_pose_set())
    assert (record["rounds"], record["people"], record["members"], record["width"], record["seed"]) == (1, 256, 2, 64, 0)
    assert record["torch_threads"] == torch.get_num_threads()


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


def tiny_pose_set(path, body, n: int = 40, seed: int = 0):
    """A ``prepare-mocap``-like pose set of ``n`` small random poses of ``body``, all training subjects."""
    import numpy as np

    rng = np.random.default_rng(seed)
    np.savez(path, body_pose=rng.normal(0, 0.2, (n, body.num_body_joints, 3)).astype(np.float32),
             global_orient=rng.normal(0, 0.2, (n, 3)).astype(np.float32), split=np.full(n, "train"),
             joint_names=np.asarray(body.joint_names), model=np.str_(body.name))
    return path


def _one_line_error(r, *expected):
    """Exit 1, no traceback, one ``Error:`` line holding every ``expected`` text."""
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output  # (an exception: not SystemExit)
    errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in r.output, r.output  # (smplx prints a warning of its own)
    for text in expected:
        assert text in errors[0], r.output


def test_train_regressor_refuses_fewer_people_than_a_batch(tmp_path):
    """--people below the batch size made no training step: a traceback from the learning-rate schedule."""
    from fit3d.training.regressor import REGRESSOR_BATCH_SIZE

    r = CliRunner().invoke(cli, ["train-regressor", "--rounds", "2", "--people", "64", "--out", str(tmp_path / "r.pt")])
    assert r.exit_code == 2 and "Invalid value for '--people'" in r.output, r.output
    assert f"64 is fewer than the training batch size, {REGRESSOR_BATCH_SIZE}" in r.output
    help_text = " ".join(CliRunner().invoke(cli, ["train-regressor", "--help"]).output.split())
    assert f"at least the training batch size, {REGRESSOR_BATCH_SIZE}" in help_text


def test_prepare_mocap_of_an_empty_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(cli, ["prepare-mocap", "--mocap", str(tmp_path / "empty"), "--out", str(tmp_path / "p.npz")])
    _one_line_error(r, "no mocap trials found")


@pytest.mark.parametrize("command", ["train-prior", "train-regressor"])
def test_training_on_a_file_that_is_not_a_pose_set_is_a_one_line_error(tmp_path, command):
    import numpy as np

    json_file = tmp_path / "some.json"
    json_file.write_text('{"poses": []}')
    fit = tmp_path / "000001.npz"  # a per-image fit: arrays, but no subject split
    np.savez(fit, body_pose=np.zeros((1, 19, 3)), betas=np.zeros((1, 10)))
    kind = ["--kind", "gmm"] if command == "train-prior" else []
    for poses, named in ((json_file, "some.json is not a pose set"), (fit, "000001.npz is not a pose set")):
        r = CliRunner().invoke(cli, [command, *kind, "--poses", str(poses), "--out", str(tmp_path / "o.pt")])
        _one_line_error(r, named)
    assert "'split'" in r.output
    bench = tmp_path / "b.npz"  # the three names, other shapes (found by a trial: an IndexError traceback)
    np.savez(bench, body_pose=np.zeros((3, 19, 3)), split=np.asarray("test"), joint_names=np.asarray(["a"] * 20))
    r = CliRunner().invoke(cli, [command, *kind, "--poses", str(bench), "--out", str(tmp_path / "o.pt")])
    _one_line_error(r, "b.npz is not a pose set")


def test_prepare_mocap_of_a_file_that_is_no_archive_is_a_one_line_error(tmp_path):
    (tmp_path / "t.txt").write_text("hello")  # (found by a trial: a tarfile.ReadError traceback)
    r = CliRunner().invoke(cli, ["prepare-mocap", "--mocap", str(tmp_path / "t.txt"), "--out", str(tmp_path / "p.npz")])
    _one_line_error(r, "t.txt is not a mocap archive")


def test_train_prior_prototypes_for_a_smpl_pose_set(tmp_path, smpl_like_dir):
    """train-prior had no --model: prototypes of a SMPL pose set ended in a traceback about --model-path."""
    from fit3d.body_models import build_body_model
    from fit3d.priors.io import load_prior

    smpl = build_body_model("smpl", smpl_like_dir)
    poses = tiny_pose_set(tmp_path / "smpl_poses.npz", smpl)
    out = tmp_path / "protos.pt"
    r = CliRunner().invoke(cli, ["train-prior", "--kind", "prototypes", "--poses", str(poses), "--out", str(out)])
    _one_line_error(r, "is a smpl pose set", "--model smpl --model-path")  # the anny default: refused in one line
    r = CliRunner().invoke(cli, ["train-prior", "--kind", "prototypes", "--poses", str(poses), "--out", str(out),
                                 "--model", "smpl", "--model-path", str(smpl_like_dir)])
    assert r.exit_code == 0, r.output
    assert load_prior(out).prototypes.shape[1:] == (smpl.num_body_joints, 3)
    import torch

    from fit3d.body_models.weights import file_digest

    record = torch.load(out, weights_only=False)["training"]
    assert record["kind"] == "prototypes" and record["pose_set_sha256"] == file_digest(poses) and record["seed"] == 0
    assert record["command"] == "fit3d train-prior" and torch.load(out)["training"] == record  # (weights_only loads it)
    # no --poses: the set 'fit3d setup-model' makes, which is not there yet
    r = CliRunner().invoke(cli, ["train-prior", "--kind", "gmm", "--out", str(out), "--model", "smpl",
                                 "--model-path", str(smpl_like_dir)])
    _one_line_error(r, "no retargeted pose set for this smpl model yet", "fit3d setup-model --model smpl")
    help_text = " ".join(CliRunner().invoke(cli, ["train-prior", "--help"]).output.split())
    assert "--model-path" in help_text and "(--model, --model-path)" in help_text
