import json
import shutil

import pytest
from click.testing import CliRunner

from fit3d.body_models import build_body_model
from fit3d.body_models.anny_assets import model_data_path
from fit3d.body_models.weights import weights_path
from fit3d.cli.main import cli
from fit3d.fitters.build import build_eft, build_smplify


def test_setup_model_makes_everything_the_fitters_use(tmp_path, monkeypatch, smpl_like_dir, anny_model):
    anny_data = model_data_path()
    monkeypatch.setenv("FIT3D_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    shutil.copy(anny_data, model_data_path())  # the anny build is not what this test is about
    smpl = build_body_model("smpl", smpl_like_dir)
    with pytest.raises(FileNotFoundError, match="fit3d setup-model --model smpl"):
        build_smplify(smpl)  # before: a one-line message says what to run
    with pytest.raises(FileNotFoundError, match="fit3d setup-model"):
        build_eft(smpl)
    r = CliRunner().invoke(cli, ["setup-model", "--model", "smpl", "--model-path", str(smpl_like_dir), "--quick",
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    from fit3d.body_models import weights
    from fit3d.body_models.weights import ReducedSetupWarning

    with pytest.warns(ReducedSetupWarning, match="without --quick"):  # --quick's weights: using them warns
        d = weights_path(smpl, "gmm").parent  # (tests/conftest.py keeps it in the test's folder)
    assert d.is_relative_to(tmp_path) and d.name.startswith("smpl-neutral-")
    for kind in ("gmm", "vae", "articulation", "prototypes", "regressor", "pose_set"):
        assert weights_path(smpl, kind).is_file(), kind
    stats = json.loads((d / "setup.json").read_text())
    assert stats["model"] == "smpl" and set(stats["seconds"]) == {"retarget", "gmm", "vae", "articulation",
                                                                  "prototypes", "regressor"}
    import numpy as np

    ps = np.load(weights_path(smpl, "pose_set"))
    assert ps["body_pose"].shape[1:] == (23, 3) and "test" in set(ps["split"])  # splits kept
    assert stats["full"] is False  # --quick: using them warns
    # afterwards the fitters find them with no further options, with a warning that they are --quick's
    weights._CHECKED.clear()  # the weights_path calls above warned already (once per process)
    with pytest.warns(ReducedSetupWarning, match="without --quick"):
        f = build_smplify(smpl)
    assert f.prior.name == "gmm" and f.prototypes is not None
    assert build_eft(smpl).regressor.num_joints == 23
    # another model file does not pick them up
    with pytest.raises(FileNotFoundError, match="setup-model --model smplh"):
        build_smplify(build_body_model("smplh", smpl_like_dir))
    r = CliRunner().invoke(cli, ["setup-model", "--model", "anny", "--quick"])
    assert r.exit_code == 1 and "bundled" in r.output
