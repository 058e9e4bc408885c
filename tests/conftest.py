"""Shared fixtures. Real data comes from the repository (examples/, tests/data/), never ../shared."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import roma
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "examples" / "data" / "coco_sample"
SAMPLE_JSON = SAMPLE_DIR / "test_coco.json"
DATA_DIR = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def anny_model():
    from fit3d.body_models.anny_model import AnnyModel

    return AnnyModel()


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


def synthetic_people(model, n: int, seed: int = 0, noise_px: float = 0.0, width: int = 640, height: int = 480):
    """Random posed bodies of ``model`` seen by a full-frame camera.

    Returns ``(batch, gt_params, gt_output)``; the batch is in the model's convention.
    """
    from fit3d.data.batching import PersonBatch, default_focal_length
    from fit3d.geometry import project

    g = torch.Generator().manual_seed(seed)
    J = model.num_body_joints
    body_pose = torch.randn(n, J, 3, generator=g) * 0.2
    betas = torch.randn(n, model.num_betas, generator=g) * 0.5
    yaw = torch.rand(n, generator=g) * 2 * math.pi
    R = roma.rotvec_to_rotmat(torch.tensor([math.pi, 0.0, 0.0])) @ roma.rotvec_to_rotmat(
        torch.stack([torch.zeros(n), yaw, torch.zeros(n)], -1)
    )
    global_orient = roma.rotmat_to_rotvec(R)
    transl = torch.stack(
        [torch.randn(n, generator=g) * 0.2, torch.randn(n, generator=g) * 0.1, 3.0 + 3.0 * torch.rand(n, generator=g)],
        -1,
    )
    with torch.no_grad():
        out = model(global_orient, body_pose, betas, transl)
    f = torch.full((n, 2), default_focal_length(width, height))
    pp = torch.tensor([[width / 2, height / 2]]).repeat(n, 1)
    kp = project(out.keypoints_3d, f, pp)
    kp = kp + noise_px * torch.randn(kp.shape, generator=g)
    kp2d = torch.cat([kp, torch.ones(n, kp.shape[1], 1)], -1)
    lo, hi = kp.min(1).values, kp.max(1).values
    batch = PersonBatch(
        kp2d, torch.cat([lo, hi - lo], -1), f, pp, torch.tensor([[width, height]]).float().repeat(n, 1),
        model.keypoint_convention,
    )
    params = dict(global_orient=global_orient, body_pose=body_pose, betas=betas, transl=transl)
    return batch, params, out


@pytest.fixture(scope="session")
def make_synthetic():
    """The :func:`synthetic_people` helper, as a fixture."""
    return synthetic_people


@pytest.fixture(scope="session", autouse=True)
def _child_temp_files_in_pytest_temp(tmp_path_factory):
    """Processes the tests start (``torchrun``'s rendezvous folders, multiprocessing's
    ``pymp-*`` folders of killed workers) write temporary files under pytest's base
    temporary folder, which pytest prunes, not into the system's /tmp, where each run
    left them behind."""
    import os

    folder = tmp_path_factory.mktemp("child_tmp")
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    yield
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old


@pytest.fixture(autouse=True)
def _isolated_model_setups(tmp_path, monkeypatch):
    """SMPL-family weights (``fit3d setup-model``) come from a per-test folder, never from
    the user's cache: tests see a model as not set up unless they set it up."""
    import fit3d.body_models.weights as w

    monkeypatch.setattr(w, "setup_dir", lambda body: tmp_path / "model_setups" / w.model_key(body))


@pytest.fixture()
def schedule_file(tmp_path):
    """``schedule_file(n)``: the default SMPLify schedule (``fit3d print-schedule``) with ``n``
    iterations per stage, as a file for ``--schedule``."""
    import json

    from click.testing import CliRunner

    from fit3d.cli.main import cli

    def make(iterations: int) -> Path:
        stages = json.loads(CliRunner().invoke(cli, ["print-schedule"]).output)
        for s in stages:
            s["iterations"] = iterations
        f = tmp_path / f"schedule_{iterations}.json"
        f.write_text(json.dumps(stages))
        return f

    return make


@pytest.fixture(scope="session")
def smpl_like_dir(tmp_path_factory) -> Path:
    """SMPL, SMPL-H and SMPL-X test models built from anny (tests/fixtures/smpl_like.py): not SMPL."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("smpl_like", Path(__file__).parent / "fixtures" / "smpl_like.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_smpl_like(tmp_path_factory.mktemp("smpl_like"))
