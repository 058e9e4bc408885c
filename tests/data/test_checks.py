import json

import numpy as np

from fit3d.data.coco import read_coco
from fit3d.data.readers import load_inputs


def test_keypoints_far_outside_the_image_are_counted_in_one_warning(tmp_path, sample_dir):
    d = json.loads((sample_dir / "test_coco.json").read_text())
    for a in d["annotations"]:
        if a["id"] in (442619, 198196):
            a["keypoints"][0] = 900.0 if a["id"] == 442619 else -100.0  # a nose beyond the right / left border
    (tmp_path / "a.json").write_text(json.dumps(d))
    records, problems, _ = load_inputs(sample_dir, annotations=tmp_path / "a.json")
    outside = [p for p in problems if "outside their image" in p.reason]
    assert len(outside) == 1 and outside[0].severity == "warning" and outside[0].reason.startswith("2 people")
    assert "up to 260 px" in outside[0].reason  # 900 on a 640-wide image
    assert not [p for p in load_inputs(sample_dir, annotations=sample_dir / "test_coco.json")[1]]


def test_people_repeated_exactly_and_implausible_intrinsics_are_one_warning_each(tmp_path, sample_dir):
    """A trial: two identical people under two ids were fitted twice in silence, and a cam_param of
    1e9 px focal length gave a fit 4,500 km away, marked valid, in silence. Both are fitted as given,
    with a warning."""
    d = json.loads((sample_dir / "test_coco.json").read_text())
    a = next(a for a in d["annotations"] if a["num_keypoints"] >= 10)
    d["annotations"].append({**a, "id": 99999999})
    for img in d["images"]:
        img["cam_param"] = {"focal": [1e9, 1e9]} if img["id"] == a["image_id"] else \
            {"focal": [800.0, 800.0], "princpt": [320.0, 240.0]}
    (tmp_path / "a.json").write_text(json.dumps(d))
    images, problems = read_coco(tmp_path / "a.json", sample_dir)
    assert sum(len(r.people) for r in images) == 15  # both fitted
    [repeated] = [p for p in problems if "exactly" in p.reason]
    assert repeated.severity == "warning" and repeated.reason.startswith("1 person repeats") and "99999999" in repeated.source
    [camera] = [p for p in problems if "intrinsics" in p.reason]
    n = sum(len(r.people) for r in images if any(p.annot_id == a["id"] for p in r.people))
    assert camera.severity == "warning" and camera.reason.startswith(f"{n} people have") and "1e+09" in camera.reason
    assert not [p for p in read_coco(sample_dir / "test_coco.json", sample_dir)[1]]
    for img in d["images"]:  # a principal point normalised to the image, the focal in pixels
        img["cam_param"] = {"focal": [800.0, 800.0], "princpt": [0.5, 0.5]}
    (tmp_path / "a.json").write_text(json.dumps(d))
    images, problems = read_coco(tmp_path / "a.json", sample_dir)
    [camera] = [p for p in problems if "intrinsics" in p.reason]
    labelled = sum((p.keypoints_2d[:, 2] > 0).any() for r in images for p in r.people)  # (not the 2 without)
    assert camera.reason.startswith(f"{labelled} people have") and labelled < sum(len(r.people) for r in images)


def test_keypoints_normalised_to_the_image_are_named_in_a_warning(tmp_path, sample_dir):
    """A MediaPipe trial: landmarks written as 0-1 fractions of the image were skipped as
    "degenerate keypoints" with the hint only inside each output file."""
    from fit3d.data.coco import read_coco

    d = json.loads((sample_dir / "test_coco.json").read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in d["images"]}
    people = [a for a in d["annotations"] if a["num_keypoints"] >= 10]
    for a in people[:2]:
        w, h = sizes[a["image_id"]]
        kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
        kp[:, 0] /= w
        kp[:, 1] /= h
        kp[np.nonzero(kp[:, 2] > 0)[0][0], 0] = 1.19  # MediaPipe's run past the image (a trial: 2 of 11 missed)
        a["keypoints"] = kp.ravel().tolist()
    (tmp_path / "a.json").write_text(json.dumps(d))
    _, problems = read_coco(tmp_path / "a.json", sample_dir)
    [warning] = [p for p in problems if "within 0-1" in p.reason]
    assert warning.severity == "warning" and warning.reason.startswith("2 people have all keypoint coordinates")
    _, problems = read_coco(sample_dir / "test_coco.json", sample_dir)
    assert not [p for p in problems if "within 0-1" in p.reason]
