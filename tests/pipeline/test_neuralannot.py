"""NeuralAnnot's input sets (fit3d.pipeline.neuralannot.check_input_sets): checked in the package,
before any model is built; the command line says them as usage errors."""

import shutil

import pytest

from fit3d.pipeline.neuralannot import check_input_sets


def test_input_sets_are_checked_before_anything_is_built(tmp_path, sample_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(sample_dir, a)
    b.mkdir()
    ann = a / "test_coco.json"
    check_input_sets([a], [ann])  # one file per folder
    check_input_sets([a, b], [ann, ann])
    with pytest.raises(ValueError, match="one --annotations per --images"):
        check_input_sets([a, b], [ann])
    with pytest.raises(ValueError, match="one --keypoints per --images, and no --annotations"):
        check_input_sets([a], [ann], [tmp_path / "kp"])
    with pytest.raises(ValueError, match="one --keypoints per --images"):
        check_input_sets([a, b], None, [tmp_path / "kp"])
    with pytest.raises(ValueError, match="is for OpenPose input"):
        check_input_sets([a], [ann], openpose_model="body_25b")
    with pytest.raises(ValueError, match=f"no person_keypoints_\\*.json beside or above {b}"):
        check_input_sets([b])  # nothing to discover
    (tmp_path / "person_keypoints_b.json").write_text("{}")
    check_input_sets([b])  # found above it (read later, by the run)


def test_the_command_line_says_them_as_usage_errors(tmp_path, sample_dir):
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    r = CliRunner().invoke(cli, ["neuralannot", "--images", str(sample_dir), "--images", str(sample_dir),
                                 "--annotations", str(sample_dir / "test_coco.json"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "one --annotations per --images" in r.output, r.output
    assert not (tmp_path / "o").exists()
