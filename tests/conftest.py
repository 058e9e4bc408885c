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


# Approximate SMPL rest joints (metres, Y up, facing +Z) and parents, for a fake model file.
_SMPL_JOINTS = [
    (0, 0, 0), (0.06, -0.09, 0), (-0.06, -0.09, 0), (0, 0.11, 0), (0.1, -0.47, 0), (-0.1, -0.47, 0),
    (0, 0.24, 0), (0.1, -0.87, -0.04), (-0.1, -0.87, -0.04), (0, 0.29, 0), (0.12, -0.93, 0.1),
    (-0.12, -0.93, 0.1), (0, 0.5, 0), (0.08, 0.41, 0), (-0.08, 0.41, 0), (0, 0.6, 0.05), (0.18, 0.45, 0),
    (-0.18, 0.45, 0), (0.44, 0.43, 0), (-0.44, 0.43, 0), (0.7, 0.43, 0), (-0.7, 0.43, 0), (0.78, 0.43, 0),
    (-0.78, 0.43, 0),
]  # fmt: skip
_SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
# smplx's extra-keypoint vertices -> (joint they hang on, offset)
_SMPL_EXTRA_VERTS = {
    332: (15, (0, 0, 0.1)), 6260: (15, (-0.03, 0.03, 0.08)), 2800: (15, (0.03, 0.03, 0.08)),
    4071: (15, (-0.07, 0.0, 0.0)), 583: (15, (0.07, 0.0, 0.0)), 3216: (10, (0, 0, 0.08)),
    3226: (10, (0.04, 0, 0.06)), 3387: (7, (0, -0.05, -0.05)), 6617: (11, (0, 0, 0.08)),
    6624: (11, (-0.04, 0, 0.06)), 6787: (8, (0, -0.05, -0.05)),
}  # fmt: skip


def write_fake_smpl(path: Path, seed: int = 0) -> Path:
    """A random but structurally valid SMPL model file (6890 vertices, 24 joints, 10 betas)."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    V, J = 6890, 24
    joints = np.asarray(_SMPL_JOINTS, dtype=np.float64)
    owner = rng.integers(0, J, V)
    verts = joints[owner] + rng.normal(0, 0.03, (V, 3))
    for vid, (j, off) in _SMPL_EXTRA_VERTS.items():
        owner[vid] = j
        verts[vid] = joints[j] + np.asarray(off)
    weights = np.zeros((V, J))
    weights[np.arange(V), owner] = 1.0
    J_reg = np.zeros((J, V))
    for j in range(J):
        idx = np.nonzero(owner == j)[0]
        J_reg[j, idx] = 1.0 / len(idx)
    # joint = mean of its vertices: move vertices so the mean is exactly the joint
    for j in range(J):
        idx = np.nonzero(owner == j)[0]
        verts[idx] += joints[j] - verts[idx].mean(0)
    kintree = np.asarray([[4294967295] + _SMPL_PARENTS[1:], list(range(J))], dtype=np.int64)
    data = dict(
        v_template=verts,
        shapedirs=rng.normal(0, 0.002, (V, 3, 10)),
        posedirs=rng.normal(0, 1e-4, (V, 3, 207)),
        J_regressor=J_reg,
        weights=weights,
        kintree_table=kintree,
        f=rng.integers(0, V, (13776, 3)).astype(np.int64),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return path


@pytest.fixture(scope="session")
def fake_smpl_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("smpl_models")
    write_fake_smpl(d / "smpl" / "SMPL_NEUTRAL.pkl")
    return d
