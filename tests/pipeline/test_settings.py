import json
from pathlib import Path

import pytest

from fit3d.pipeline import RunConfig, run
from fit3d.pipeline.settings import SETTINGS_FILE, check_settings


def test_a_folder_fitted_with_other_settings_is_not_resumed_into(tmp_path):
    out = tmp_path / "fits"
    out.mkdir()
    check_settings(out, dict(fitter="eft", flip=True, regressor=Path("/w/r.pt")))
    assert json.loads((out / SETTINGS_FILE).read_text()) == dict(fitter="eft", flip=True, regressor="/w/r.pt")
    check_settings(out, dict(fitter="eft", flip=False))  # no fit in the folder yet: the new settings stand
    (out / "a.jpg.npz").write_bytes(b"")
    check_settings(out, dict(fitter="eft", flip=False))  # the same: resumes
    with pytest.raises(ValueError, match=r"other settings \(flip: False there, True now\).*--overwrite"):
        check_settings(out, dict(fitter="eft", flip=True))
    check_settings(out, dict(fitter="eft", flip=True), overwrite=True)  # refits everything: recorded
    assert json.loads((out / SETTINGS_FILE).read_text())["flip"] is True


def test_run_records_its_settings_and_refuses_to_mix_fits(tmp_path, sample_copy, anny_model, fast_fitter):
    out = tmp_path / "fits"
    cfg = dict(out_dir=out, progress=False, limit=1)
    s = run([], fast_fitter, anny_model, RunConfig(**cfg, settings=dict(prior="gmm")))
    assert s["settings"] == dict(prior="gmm")
    from fit3d.data.readers import read_coco

    records, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    run(records, fast_fitter, anny_model, RunConfig(**cfg, settings=dict(prior="gmm")))
    assert len(list(out.glob("*.npz"))) == 1
    with pytest.raises(ValueError, match="other settings"):
        run(records, fast_fitter, anny_model, RunConfig(**cfg, settings=dict(prior="vae")))
    assert len(list(out.glob("*.npz"))) == 1  # nothing written by the refused run
