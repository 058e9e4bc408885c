import json
from types import SimpleNamespace

import pytest

from fit3d.body_models import weights


@pytest.fixture()
def smpl_body(tmp_path, monkeypatch):
    """A SMPL-family body as the weights lookup sees it (a model file, a gender), its set-up folder."""
    monkeypatch.setenv("FIT3D_CACHE_DIR", str(tmp_path / "cache"))
    model_file = tmp_path / "SMPL_NEUTRAL.pkl"
    model_file.write_bytes(b"a model")
    body = SimpleNamespace(name="smpl", gender="neutral", model_file=model_file)
    folder = weights.setup_dir(body)
    folder.mkdir(parents=True)
    weights.forget_reduced_setup_checks()
    return body, folder


@pytest.mark.parametrize("content", ["[]", '"x"', "1", '{"full": false, "config": "abc"}', '{"config": [1]}',
                                     '{"full": false}', '{"full": false, "reduced": {}}'])
def test_a_damaged_setup_record_warns_or_not_but_never_raises(smpl_body, content):
    """A review: a setup.json that is no JSON object, or whose config is not one, was a traceback at every
    weights lookup."""
    import warnings

    body, folder = smpl_body
    (folder / "setup.json").write_text(content)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        weights.weights_path(body, "gmm")
    assert all("(e.g. --quick: None)" not in str(w.message) and "--quick: )" not in str(w.message) for w in said)
    state = weights.setup_state(body)
    assert state is None or set(state) <= {"full", "retargeting", "unfinished"}


def test_the_setup_state_a_fit_records(smpl_body):
    body, folder = smpl_body
    assert weights.setup_state(body) is None  # not set up
    (folder / "setup.json").write_text(json.dumps({"full": True, "retargeting": weights.SETUP_RETARGETING}))
    state = weights.setup_state(body)
    assert state == {"full": True, "retargeting": weights.SETUP_RETARGETING}
    assert weights.setup_state_problem(state) is None
    (folder / weights.PARTIAL).write_text("{}")  # a set-up of the folder running or interrupted (a review)
    state = weights.setup_state(body)
    assert state["unfinished"] and "an unfinished 'fit3d setup-model'" in weights.setup_state_problem(state)
    (folder / weights.PARTIAL).unlink()
    (folder / "setup.json").write_text(json.dumps({"config": {"max_poses": 256}}))  # before the flags
    assert weights.setup_state(body) == {"full": False, "retargeting": None}
    assert "reduced" in weights.setup_state_problem(weights.setup_state(body))
    assert weights.setup_state(SimpleNamespace(name="anny")) is None
