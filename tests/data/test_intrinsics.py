import json

import numpy as np
import pytest

from fit3d.data.batching import make_batch
from fit3d.data.conventions import COCO17, SPIN24, convert
from fit3d.data.intrinsics import coco_camera, make_camera, spin_cameras
from fit3d.data.readers import read_coco
from fit3d.data.spin import read_spin
from fit3d.data.writers import write_npz


def test_make_camera_reads_one_or_two_focal_lengths_and_defaults_to_the_centre():
    assert make_camera(1000, None, (640, 480)) == ((1000.0, 1000.0), (320.0, 240.0))
    assert make_camera([1000, 1010.5], [300, 250], (640, 480)) == ((1000.0, 1010.5), (300.0, 250.0))
    for focal, pp, match in ((0, None, "positive"), (-5, None, "positive"), ([1, 2, 3], None, "2 numbers"),
                             ("x", None, "numbers"), (None, None, "numbers"), (True, None, "numbers"),
                             (float("nan"), None, "finite"), (1000, [1.0], "2 numbers"),
                             (1000, [np.inf, 0], "finite")):
        with pytest.raises(ValueError, match=match):
            make_camera(focal, pp, (640, 480))


def test_coco_cam_param_as_moon_et_al_write_it():
    assert coco_camera({}, (640, 480)) is None
    info = {"cam_param": {"focal": [1961.9, 1969.2], "princpt": [540.0, 960.0]}}
    assert coco_camera(info, (1080, 1920)) == ((1961.9, 1969.2), (540.0, 960.0))
    with pytest.raises(ValueError, match="focal"):
        coco_camera({"cam_param": [1000, 1000]}, (640, 480))


def _coco_with_cameras(sample_dir, tmp_path):
    data = json.loads((sample_dir / "test_coco.json").read_text())
    data["images"][0]["cam_param"] = {"focal": [1500.0, 1490.0], "princpt": [310.0, 200.0]}
    data["images"][1]["cam_param"] = {"focal": [-3, 1], "princpt": [0, 0]}  # unusable: that image is not fitted
    path = tmp_path / "cams.json"
    path.write_text(json.dumps(data))
    return data, path


def test_coco_images_give_their_people_the_camera_and_a_bad_one_leaves_them_unfitted(tmp_path, sample_dir):
    data, path = _coco_with_cameras(sample_dir, tmp_path)
    images, problems = read_coco(path, sample_dir)
    by_name = {r.image_key: r for r in images}
    good, bad, other = (data["images"][i]["file_name"] for i in range(3))
    assert bad not in by_name
    [problem] = problems
    assert problem.severity == "error" and "unreadable intrinsics" in problem.reason and "positive" in problem.reason
    n_bad = sum(a["image_id"] == data["images"][1]["id"] for a in data["annotations"])
    assert f"{n_bad} annotations not fitted" in problem.reason
    assert all(p.camera == ((1500.0, 1490.0), (310.0, 200.0)) for p in by_name[good].people)
    assert by_name[good].people and all(p.camera is None for p in by_name[other].people)

    people = by_name[good].people + by_name[other].people
    b = make_batch(people, COCO17)
    n = len(by_name[good].people)
    assert b.focal_length[:n].tolist() == [[1500.0, 1490.0]] * n and b.principal_point[:n].tolist() == [[310.0, 200.0]] * n
    w, h = by_name[other].image_size
    assert b.focal_length[n].tolist() == pytest.approx([np.hypot(w, h)] * 2)
    assert b.principal_point[n].tolist() == [w / 2, h / 2]
    b = make_batch(people, COCO17, focal_length=900.0)  # --focal-length replaces the focal length only
    assert b.focal_length[0].tolist() == [900.0, 900.0] and b.principal_point[0].tolist() == [310.0, 200.0]


def _spin_file(tmp_path, sample_dir, **extra):
    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    people = [(r.image_key, p) for r in images for p in r.people if p.num_visible > 0][:3]
    n = len(people)
    d = dict(imgname=np.asarray([k for k, _ in people]), center=np.full((n, 2), 200.0, np.float32),
             scale=np.ones(n, np.float32),
             part=np.stack([convert(np.asarray(p.keypoints_2d), COCO17, SPIN24) for _, p in people]).astype(np.float32))
    f = tmp_path / "spin.npz"
    write_npz(f, {**d, **extra})
    return f, n


def test_spin_files_with_intrinsic_matrices_or_focal_lengths(tmp_path, sample_dir):
    K = np.tile(np.array([[1100.0, 0, 330], [0, 1120, 210], [0, 0, 1]], np.float32), (3, 1, 1))
    K[2, 0, 0] = 0.0  # a bad row: that person is left out, with a reason
    f, n = _spin_file(tmp_path, sample_dir, cam_int=K)
    images, problems = read_spin(f, sample_dir)
    people = [p for r in images for p in r.people]
    assert len(people) == n - 1 and all(p.camera == ((1100.0, 1120.0), (330.0, 210.0)) for p in people)
    [problem] = problems
    assert problem.source.endswith("#2") and "unreadable intrinsics" in problem.reason
    assert any(problem.source in r.dropped for r in images)

    f, n = _spin_file(tmp_path, sample_dir, focal_length=np.full(3, 1234.0, np.float32))
    images, problems = read_spin(f, sample_dir)
    assert problems == []
    for r in images:
        assert all(p.camera == ((1234.0, 1234.0), (r.image_size[0] / 2, r.image_size[1] / 2)) for p in r.people)
    assert spin_cameras(dict(imgname=np.asarray(["a"]))) is None
    for bad in (dict(cam_int=np.eye(3)[None].repeat(2, 0)), dict(focal_length=np.ones((1, 3))),
                dict(focal_length=np.ones(1), principal_point=np.ones(2))):
        with pytest.raises(ValueError, match="one per person"):
            spin_cameras(dict(imgname=np.asarray(["a"]), **bad))


def test_an_intrinsics_key_fit3d_does_not_read_is_a_warning(tmp_path, sample_dir):
    """A trial: an image entry's 'cam_params' (a typo) was ignored in silence, the image diagonal used.
    Camera identifiers (Human3.6M's cam_idx beside its cam_param) are not named."""
    import json

    from fit3d.data.coco import read_coco

    data = json.loads((sample_dir / "test_coco.json").read_text())
    data["images"][0]["cam_params"] = {"focal": [1500.0, 1490.0]}
    data["images"][1]["cam_idx"] = 3
    data["images"][2].update(cam_idx=2, cam_param={"focal": [1500.0, 1490.0]})
    (tmp_path / "a.json").write_text(json.dumps(data))
    _, problems = read_coco(tmp_path / "a.json", sample_dir)
    [w] = [p for p in problems if "does not read" in p.reason]
    assert w.severity == "warning" and "'cam_params' (1 image)" in w.reason and "cam_idx" not in w.reason
