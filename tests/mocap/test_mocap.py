from pathlib import Path

import numpy as np
import torch

from fit3d.mocap.asf_amc import parse_asf, read_asf_amc
from fit3d.mocap.bvh_reader import read_bvh
from fit3d.mocap.clip import MOCAP_POINTS
from fit3d.mocap.prepare import dedupe, load_clips
from fit3d.mocap.retarget import retarget

D = Path(__file__).resolve().parents[1] / "data" / "mocap"


def _p(clip, name):
    return clip.points[:, MOCAP_POINTS.index(name)]


def test_asf_amc_forward_kinematics_is_rigid_and_human():
    bones = parse_asf(D / "01.asf")
    assert {"lfemur", "rhumerus", "head"} <= set(bones) and "lfemur" in bones["lhipjoint"].children
    c = read_asf_amc(D / "01.asf", D / "01_01.amc")
    assert c.points.shape == (24, len(MOCAP_POINTS), 3) and c.fps == 120
    thigh = np.linalg.norm(_p(c, "left_hip") - _p(c, "left_knee"), axis=-1)
    assert thigh.std() < 1e-5 and 0.3 < thigh.mean() < 0.55  # bone lengths constant, metres
    assert (_p(c, "head_top")[:, 1] > _p(c, "pelvis")[:, 1] + 0.4).all()  # Y up
    # the ASF skeleton's lengths: femur 7.1578 units of 1/0.45 inch
    assert abs(thigh.mean() - 7.1578 * 2.54 / 100 / 0.45) < 1e-4


def test_bvh_forward_kinematics():
    c = read_bvh(D / "39_07.bvh")
    assert c.points.shape == (24, len(MOCAP_POINTS), 3) and abs(c.fps - 120) < 0.1
    shin = np.linalg.norm(_p(c, "left_knee") - _p(c, "left_ankle"), axis=-1)
    assert shin.std() < 1e-5 and 0.3 < shin.mean() < 0.5
    assert (_p(c, "head_top")[:, 1] > _p(c, "left_ankle")[:, 1] + 1.0).all()
    assert c.subsample(10).points.shape[0] == 2


def test_load_clips_and_dedupe(tmp_path):
    clips = load_clips([D])
    assert sorted(c.name for c in clips) == ["01_01", "39_07"]
    pts = np.zeros((5, 3, 3))
    pts[3, 1] = 0.1  # one real move
    assert dedupe(pts, 0.03).tolist() == [0, 3, 4]


def test_retarget_matches_directions(anny_model):
    c = read_asf_amc(D / "01.asf", D / "01_01.amc").subsample(40)
    r = retarget(torch.as_tensor(c.points), anny_model, iterations=150)
    assert r["body_pose"].shape == (len(c.points), 19, 3)
    assert (r["direction_error_deg"] < 3.0).all()
    assert (r["residual_mm"] < 80).all()  # proportions differ between CMU subjects and anny
