"""Shared pieces of the pipeline tests: a fast SMPLify and a copy of the bundled sample."""

import shutil

import pytest

from fit3d.fitters import SMPLify, Stage

FAST = [
    Stage("camera", ("global_orient", "transl"), 10, 0.05, dict(reprojection=1.0, depth=100.0), keypoints="torso"),
    Stage("body", ("global_orient", "body_pose", "betas", "transl"), 10, 0.04,
          dict(reprojection=1.0, pose_prior=5.0, bend=100.0, shape=1.0)),
]


@pytest.fixture()
def fast_fitter(anny_model):
    """SMPLify with 20 iterations, no prototypes or flips: pipeline tests test the pipeline."""
    return SMPLify(anny_model, schedule=FAST, depth_flips=False)


@pytest.fixture()
def sample_copy(tmp_path, sample_dir):
    d = tmp_path / "images"
    shutil.copytree(sample_dir, d)
    return d
