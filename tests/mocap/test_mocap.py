from pathlib import Path

import numpy as np
import pytest
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


def test_readers_give_the_skeletons_rest_pose():
    for c in (read_asf_amc(D / "01.asf", D / "01_01.amc"), read_bvh(D / "39_07.bvh")):
        rest = c.rest
        assert rest.shape == (len(MOCAP_POINTS), 3) and np.isfinite(rest).all()
        i, j = MOCAP_POINTS.index("left_hip"), MOCAP_POINTS.index("left_knee")
        thigh = np.linalg.norm(_p(c, "left_hip") - _p(c, "left_knee"), axis=-1)
        assert abs(np.linalg.norm(rest[i] - rest[j]) - thigh.mean()) < 1e-4  # the same skeleton
        at = {n: rest[MOCAP_POINTS.index(n)] for n in ("pelvis", "head_top", "left_hip", "right_hip", "left_ankle")}
        assert at["head_top"][1] > at["pelvis"][1] + 0.4 > at["left_ankle"][1] + 0.4  # standing, Y up
        assert abs(at["left_hip"][1] - at["right_hip"][1]) < 1e-3  # level hips
        assert c.subsample(10).rest is rest


def _rest_leans(anny_model, body_pose):
    from fit3d.mocap.retarget import forward_leans, model_points

    out = anny_model.canonical(body_pose, torch.zeros(len(body_pose), anny_model.num_betas))
    return torch.rad2deg(forward_leans(model_points(anny_model, out)))


def test_spine_and_head_are_retargeted_relative_to_the_rest_poses(anny_model):
    """A review: CMU's upper back, head and head top are other points than anny's spine3 joint, head
    joint and mid-ears, and their directions were matched as they are, so a CMU skeleton standing at rest
    became an anny with its upper back bent back (spine3 -11 degrees) and its head raised (-13). Given
    the mocap's rest pose, a skeleton at rest now gives anny's own spine and head leans."""
    at_rest = _rest_leans(anny_model, torch.zeros(1, anny_model.num_body_joints, 3))
    for c in (read_asf_amc(D / "01.asf", D / "01_01.amc"), read_bvh(D / "39_07.bvh")):
        rest = torch.as_tensor(c.rest)[None]
        r = retarget(rest, anny_model, iterations=300, rest=rest)
        assert (_rest_leans(anny_model, r["body_pose"]) - at_rest).abs().max() < 5.0, c.name
        assert r["direction_error_deg"].max() < 1.0
        unknown = retarget(rest, anny_model, iterations=300, rest=torch.full_like(rest, float("nan")))
        plain = retarget(rest, anny_model, iterations=300)  # (a source without a rest pose: matched as they are)
        assert torch.allclose(unknown["body_pose"], plain["body_pose"])


def test_a_motion_in_two_bvh_namings_retargets_alike(tmp_path, anny_model):
    """The cgspeed naming's spine top is another joint than amc2bvh's (its thorax): relative to each
    file's rest pose, the same motion gives about the same spine and head (the short thorax -> shoulders
    segment of one differs by up to 4 degrees)."""
    ren = {"Chest": "Spine", "Chest2": "Spine1", "lowerneck": "Neck", "Neck": "Neck1", "LeftHip": "LeftUpLeg",
           "LeftKnee": "LeftLeg", "LeftAnkle": "LeftFoot", "LeftToe": "LeftToeBase", "lowerback": "LowerBack",
           "LeftCollar": "LeftShoulder", "LeftShoulder": "LeftArm", "LeftElbow": "LeftForeArm", "LeftWrist": "LeftHand"}
    ren.update({k.replace("Left", "Right"): v.replace("Left", "Right") for k, v in ren.items() if "Left" in k})
    lines = []
    for line in (D / "39_07.bvh").read_text().splitlines():
        t = line.split()
        lines.append(line.replace(t[1], ren.get(t[1], t[1])) if len(t) == 2 and t[0] == "JOINT" else line)
    (tmp_path / "39_07.bvh").write_text("\n".join(lines) + "\n")
    leans = []
    for c in (read_bvh(D / "39_07.bvh").subsample(40), read_bvh(tmp_path / "39_07.bvh").subsample(40)):
        n = len(c.points)
        r = retarget(torch.as_tensor(c.points), anny_model, iterations=300,
                     rest=torch.as_tensor(c.rest).expand(n, -1, -1))
        leans.append(_rest_leans(anny_model, r["body_pose"]))
    apart = (leans[0] - leans[1]).abs().amax(0)  # per pair, degrees (the head's 7.4 apart, matched as they are)
    assert apart.max() < 5.0 and apart[2:].max() < 3.0, apart


def _asf_amc_variant(tmp_path, asf_edit, amc_line):
    """01.asf / 01_01.amc rewritten: ``asf_edit(text) -> text``; ``amc_line(tokens) -> line`` per AMC line."""
    asf = tmp_path / "01.asf"
    asf.write_text(asf_edit((D / "01.asf").read_text()))
    lines = [amc_line(raw.split()) if raw.split() else raw for raw in (D / "01_01.amc").read_text().splitlines()]
    (tmp_path / "01_01.amc").write_text("\n".join(lines) + "\n")
    return read_asf_amc(asf, tmp_path / "01_01.amc")


def test_asf_root_order_angle_and_length_units_are_read(tmp_path):
    from scipy.spatial.transform import Rotation

    ref = read_asf_amc(D / "01.asf", D / "01_01.amc").points

    def root_zyx(t):  # the same root rotation applied about z, then y, then x, written in that order
        if t[0] != "root":
            return " ".join(t)
        z, y, x = Rotation.from_euler("xyz", [float(v) for v in t[4:7]], degrees=True).as_euler("zyx", degrees=True)
        return " ".join(t[:4] + [repr(float(v)) for v in (z, y, x)])

    (tmp_path / "a").mkdir()
    zyx = _asf_amc_variant(tmp_path / "a", lambda s: s.replace("order TX TY TZ RX RY RZ", "order TX TY TZ RZ RY RX"),
                           root_zyx)
    assert np.abs(zyx.points - ref).max() < 1e-5  # (it was read as rx ry rz: tens of cm off)

    def radians(t):
        if t[0].upper() == ":DEGREES":
            return ":RADIANS"
        if t[0].startswith((":", "#")) or t[0].isdigit():
            return " ".join(t)
        vals = [float(v) for v in t[1:]]
        vals = vals[:3] + [np.radians(v) for v in vals[3:]] if t[0] == "root" else [np.radians(v) for v in vals]
        return " ".join([t[0]] + [repr(float(v)) for v in vals])

    def asf_in_radians(s):
        out = []
        for line in s.replace("angle deg", "angle rad").splitlines():
            t = line.split()
            if t and t[0] == "axis" and len(t) == 5:
                line = "axis " + " ".join(repr(float(np.radians(float(v)))) for v in t[1:4]) + " XYZ"
            out.append(line)
        return "\n".join(out)

    (tmp_path / "b").mkdir()
    rad = _asf_amc_variant(tmp_path / "b", asf_in_radians, radians)
    assert np.abs(rad.points - ref).max() < 1e-5
    (tmp_path / "c").mkdir()
    half = _asf_amc_variant(tmp_path / "c", lambda s: s.replace("length 0.45", "length 0.9"), lambda t: " ".join(t))
    assert np.allclose(half.points, ref / 2, atol=1e-6)  # its lengths are inches x 0.9: half CMU's metres
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="axis order"):
        _asf_amc_variant(tmp_path / "d", lambda s: s.replace("axis 0 0 20  XYZ", "axis 0 0 20  ZYX", 1),
                         lambda t: " ".join(t))


def test_cgspeed_bvh_names_are_read(tmp_path):
    ren = {"LeftHip": "LeftUpLeg", "LeftKnee": "LeftLeg", "LeftAnkle": "LeftFoot", "LeftToe": "LeftToeBase",
           "lowerback": "LowerBack", "Chest": "Spine", "Chest2": "Spine1", "lowerneck": "Neck", "Neck": "Neck1",
           "LeftCollar": "LeftShoulder", "LeftShoulder": "LeftArm", "LeftElbow": "LeftForeArm", "LeftWrist": "LeftHand"}
    ren.update({k.replace("Left", "Right"): v.replace("Left", "Right") for k, v in ren.items() if "Left" in k})
    lines = []
    for line in (D / "39_07.bvh").read_text().splitlines():
        t = line.split()
        if len(t) == 2 and t[0] == "JOINT":
            line = line.replace(t[1], ren.get(t[1], t[1]))
        lines.append(line)
    (tmp_path / "39_07.bvh").write_text("\n".join(lines) + "\n")
    ref, cg = read_bvh(D / "39_07.bvh"), read_bvh(tmp_path / "39_07.bvh")
    for name in ("left_hip", "right_knee", "left_ankle", "right_toe", "left_shoulder", "right_elbow", "left_wrist",
                 "head", "head_top"):
        assert np.allclose(_p(cg, name), _p(ref, name)), name
    # cgspeed keeps the thorax that amc2bvh drops: its spine top is amc2bvh's neck joint here
    assert np.allclose(_p(cg, "spine_top"), _p(ref, "neck"))
    (tmp_path / "bad.bvh").write_text("\n".join(lines).replace("JOINT LeftForeArm", "JOINT LeftElbowX") + "\n")
    with pytest.raises(ValueError, match="LeftForeArm"):
        read_bvh(tmp_path / "bad.bvh")


def test_frames_with_nan_are_dropped_before_the_near_duplicate_test(caplog):
    from fit3d.mocap.clip import MocapClip
    from fit3d.mocap.prepare import usable_frames

    c = read_bvh(D / "39_07.bvh")
    pts = c.points.copy()
    pts[0, 3, 1] = np.nan  # one NaN in the first frame made dedupe keep that frame alone
    kept = usable_frames(MocapClip(c.name, c.subject, c.fps, pts))
    assert len(kept.points) == len(pts) - 1 and np.isfinite(kept.points).all()
    assert len(dedupe(kept.points, 0.03)) == len(dedupe(c.points[1:], 0.03)) > 1
    assert "1 of 24 frames" in caplog.text
    assert usable_frames(MocapClip(c.name, c.subject, c.fps, pts[:1])) is None
    usable_frames(MocapClip(c.name, c.subject, c.fps, c.points * 100))  # read in the wrong units
    assert "legs are" in caplog.text


def test_prepare_refuses_non_finite_poses(tmp_path, anny_model, monkeypatch):
    import fit3d.mocap.retarget as rt
    from fit3d.mocap.prepare import prepare_mocap

    def broken(points, body_model, **kw):
        n = len(points)
        return dict(body_pose=torch.full((n, 19, 3), float("nan")), global_orient=torch.zeros(n, 3),
                    residual_mm=torch.zeros(n), direction_error_deg=torch.zeros(n))

    monkeypatch.setattr(rt, "retarget", broken)
    with pytest.raises(ValueError, match="non-finite poses"):
        prepare_mocap([D], tmp_path / "poses.npz", anny_model, progress=False)
    assert not (tmp_path / "poses.npz").exists()


def test_each_motion_gets_its_own_skeleton_and_subject(tmp_path, caplog):
    """A review: without an ``NN.asf``, any ASF of the folder was taken (HDM05's ``HDM_bd_...amc`` got
    another actor's ``HDM_bd.asf`` or worse) and every actor became subject ``HDM``."""
    import shutil

    from fit3d.mocap.prepare import find_clips, skeleton_of

    for actor in ("bd", "mm"):
        shutil.copy(D / "01.asf", tmp_path / f"HDM_{actor}.asf")
        shutil.copy(D / "01_01.amc", tmp_path / f"HDM_{actor}_01-01_01_120.amc")
    assert skeleton_of(tmp_path / "HDM_mm_01-01_01_120.amc") == tmp_path / "HDM_mm.asf"
    clips = find_clips(tmp_path)
    assert sorted((c.name, c.subject) for c in clips) == [("HDM_bd_01-01_01_120", "HDM_bd"),
                                                          ("HDM_mm_01-01_01_120", "HDM_mm")]
    (tmp_path / "walk.amc").write_text((D / "01_01.amc").read_text())
    assert skeleton_of(tmp_path / "walk.amc") is None  # two skeletons, neither named for it
    assert "walk" not in [c.name for c in find_clips(tmp_path)] and "no ASF skeleton" in caplog.text
    (tmp_path / "HDM_mm.asf").unlink()
    (tmp_path / "HDM_mm_01-01_01_120.amc").unlink()
    assert skeleton_of(tmp_path / "walk.amc") == tmp_path / "HDM_bd.asf"  # the folder's only skeleton
    assert [c.subject for c in find_clips(D)] == ["01", "39"]  # CMU's NN_MM: as before
