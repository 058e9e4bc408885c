import json

import numpy as np
import pytest

from fit3d.data.coco import read_coco
from fit3d.data.openpose import read_openpose
from tests.data._helpers import _openpose_from_coco


def test_a_keypoint_a_whole_image_outside_it_is_unusable_and_does_not_inflate_the_box(tmp_path, sample_dir):
    """A trial: one wrist at x = 900,000 px (a digit too many) was fitted, its box rebuilt around it,
    and the person's scale grew so much that a fit hundreds of pixels off the other points was valid.
    A labelled point farther outside its image than the image's larger side is now unusable (counted
    with the ignored ones); nearer ones are kept (the warning above)."""
    d = json.loads((sample_dir / "test_coco.json").read_text())
    a = next(a for a in d["annotations"] if a["num_keypoints"] >= 10 and a["keypoints"][29] > 0)
    a["keypoints"][27] = 900000.0  # the left wrist, on a 640-wide image
    a.pop("bbox")
    near = next(b for b in d["annotations"] if b is not a and b["num_keypoints"] >= 10 and b["keypoints"][2] > 0)
    near["keypoints"][0] = 950.0  # within an image's side beyond the border: kept, said by the outside warning
    (tmp_path / "a.json").write_text(json.dumps(d))
    images, problems = read_coco(tmp_path / "a.json", sample_dir)
    by_id = {p.annot_id: p for r in images for p in r.people}
    person = by_id[a["id"]]
    assert person.keypoints_ignored == 1 and (person.keypoints_2d[9] == 0).all()
    assert person.bbox[0] + person.bbox[2] < 700  # the box from the other points
    assert by_id[near["id"]].keypoints_ignored == 0 and by_id[near["id"]].keypoints_2d[0, 0] == 950.0
    assert any("far-off" in p.reason for p in problems) and any("outside their image" in p.reason for p in problems)

    kp = np.zeros((25, 3))
    kp[:, :2], kp[:, 2] = np.random.default_rng(0).uniform(100, 300, (25, 2)), 0.8
    kp[4, :2] = [200.0, -5000.0]  # OpenPose too
    (tmp_path / "000000000785_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": kp.ravel().tolist()}]}))
    person = read_openpose(tmp_path, sample_dir)[0][0].people[0]
    assert person.keypoints_ignored == 1 and (person.keypoints_2d[4] == 0).all()


def test_a_whole_image_outside_it_is_unusable_in_spin_files_python_built_people_and_ground_truth(
        tmp_path, sample_dir, anny_model):
    """(A review: only the COCO and OpenPose readers were tested.) A SPIN row's ``part`` and
    ``openpose`` points, a Person built in Python (make_batch, skip_reason, its output record) and
    evaluate's COCO ground truth set such points aside as the readers do."""
    from dataclasses import replace

    from fit3d.data.batching import make_batch
    from fit3d.data.spin import read_spin
    from fit3d.data.writers import write_npz
    from fit3d.evaluation.evaluate import load_ground_truth
    from fit3d.pipeline.skips import usable_keypoints

    part = np.zeros((1, 24, 3), np.float32)
    part[0, :, :2] = np.random.default_rng(0).uniform(100, 300, (24, 2))
    part[0, :, 2] = 1.0
    part[0, 6, 0] = 900000.0  # right wrist
    openpose = np.zeros((1, 25, 3), np.float32)
    openpose[0, 22] = [200.0, 1e5, 0.9]  # a big toe far below the image (a detection SPIN's part lacks)
    write_npz(tmp_path / "s.npz", dict(imgname=np.asarray(["000000000785.jpg"]), center=np.full((1, 2), 200.0),
                                       scale=np.ones(1), part=part, openpose=openpose))
    [person] = read_spin(tmp_path / "s.npz", sample_dir)[0][0].people
    names = person.convention.names
    assert person.keypoints_ignored == 2
    assert person.keypoints_2d[[names.index("right_wrist"), names.index("right_big_toe")], 2].tolist() == [0.0, 0.0]
    assert (person.keypoints_2d[:, 0] < 1000).all() and (person.keypoints_2d[:, 1] < 1000).all()

    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    p = max((p for r in images for p in r.people), key=lambda p: p.num_visible)
    kp = p.keypoints_2d.copy()
    labelled = np.nonzero(kp[:, 2] > 0)[0]
    kp[labelled[0], 0] = 900000.0
    built = replace(p, keypoints_2d=kp, keypoints_ignored=0)  # as a Python user builds one
    batch = make_batch([built], anny_model.keypoint_convention)
    assert float(batch.keypoints_2d[0, :, 0].max()) < 1000
    assert usable_keypoints(built, anny_model.keypoint_convention) == (p.num_visible - 1, 1)

    d = json.loads((sample_dir / "test_coco.json").read_text())
    a = next(a for a in d["annotations"] if a["num_keypoints"] >= 10 and a["keypoints"][2] > 0)
    a["keypoints"][0] = 900000.0
    (tmp_path / "gt.json").write_text(json.dumps(d))
    gt = next(g for g in load_ground_truth(tmp_path / "gt.json", []) if g["annot_id"] == a["id"])
    assert gt["keypoints_2d"][0, 2] == 0 and gt["keypoints_2d"][:, 0].max() < 1000


def test_keypoints_as_nested_triples_are_an_error_that_says_so(tmp_path, sample_dir):
    from fit3d.data.readers import parse_keypoints

    with pytest.raises(ValueError, match=r"flat list of 51 keypoint values .* nested list of shape \(17, 3\)"):
        parse_keypoints([[1.0, 2.0, 2]] * 17, 17)  # said "expected 51 keypoint values, got 51" (a helper)
    with pytest.raises(ValueError, match="expected 51 keypoint values .* got 50"):
        parse_keypoints([1.0] * 50, 17)


def test_labelled_keypoints_without_usable_coordinates_are_stored_unlabelled_with_one_warning(tmp_path, sample_dir):
    """NaN (or absurdly far) coordinates with a positive confidence were fitted around silently and
    exported as labelled points (SPIN ``part`` NaN with confidence 1): the readers now store them as
    unlabelled and say so once."""
    kp = np.zeros((25, 3))
    kp[:, :2], kp[:, 2] = np.random.default_rng(0).uniform(100, 300, (25, 2)), 0.8
    kp[2:5, :2] = np.nan  # right shoulder, elbow, wrist
    kp[6, 0] = 1e9
    kp[7, :] = [np.nan, np.nan, 0.0]  # unlabelled anyway: nothing lost, not counted
    kp[8, 2] = np.nan  # a non-finite confidence says nothing: unlabelled, not counted
    kp[9, :2] = 0.0  # labelled at the placeholder (0, 0) (an input audit: fitted at the image's corner)
    kp[10, 0] = 0.0  # on the image's left edge: a point
    (tmp_path / "000000000785_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": kp.ravel().tolist()}]}))
    images, problems = read_openpose(tmp_path, sample_dir)
    person = images[0].people[0]
    assert person.keypoints_ignored == 5
    assert np.isfinite(person.keypoints_2d).all()
    assert (person.keypoints_2d[[2, 3, 4, 6, 7, 8, 9]] == 0).all() and (person.keypoints_2d[[0, 1, 5, 10], 2] > 0).all()
    ignored = [p for p in problems if "non-finite, far-off or" in p.reason]
    assert len(ignored) == 1 and ignored[0].severity == "warning"
    assert ignored[0].reason.startswith("1 person has 5 labelled keypoints") and "000000000785" in ignored[0].source

    d = json.loads((sample_dir / "test_coco.json").read_text())
    a = next(a for a in d["annotations"] if a["num_keypoints"] >= 10 and a["keypoints"][2] > 0)
    a["keypoints"][0:2] = [None, None]  # a labelled nose without coordinates
    (tmp_path / "a.json").write_text(json.dumps(d))
    images, problems = read_coco(tmp_path / "a.json", sample_dir)
    person = next(p for r in images for p in r.people if p.annot_id == a["id"])
    assert person.keypoints_ignored == 1 and (person.keypoints_2d[0] == 0).all()
    assert [p.severity for p in problems if "non-finite, far-off or" in p.reason] == ["warning"]


def test_keypoint_values_in_forms_the_format_does_not_define_are_read_with_one_warning(tmp_path, sample_dir):
    """Numbers written as strings or booleans and COCO visibility flags other than 0, 1, 2 were read
    silently (NumPy takes "12.5" and true as numbers; a flag of 3 or a detector score of 0.05 is
    labelled): they are still read as given, with one warning counting them per input."""
    d = json.loads((sample_dir / "test_coco.json").read_text())
    people = [a for a in d["annotations"] if a["num_keypoints"] >= 10]
    first, second = people[0], people[1]
    first["keypoints"][0] = str(first["keypoints"][0])  # "12.5"
    first["keypoints"][5] = 3  # a flag COCO does not define: labelled
    second["keypoints"][2] = True  # a boolean flag
    second["keypoints"][8] = 0.05  # a detector score
    second["keypoints"][11] = -1  # a negative flag: unlabelled
    second["keypoints"][14] = "3"  # a string and a flag COCO does not define: one value, counted once
    second["keypoints"][17] = float("nan")  # a NaN flag (a trial: unlabelled without a word)
    (tmp_path / "a.json").write_text(json.dumps(d))
    images, problems = read_coco(tmp_path / "a.json", sample_dir)
    by_id = {p.annot_id: p for r in images for p in r.people}
    assert by_id[first["id"]].keypoints_unusual == 2 and by_id[second["id"]].keypoints_unusual == 4  # (not the score)
    assert by_id[first["id"]].keypoints_2d[0, 0] == pytest.approx(float(first["keypoints"][0]))
    assert by_id[first["id"]].keypoints_2d[1, 2] == 1.0 and by_id[second["id"]].keypoints_2d[0, 2] == 1.0
    # a detector's score (strictly between 0 and 1): the point's confidence, as OpenPose's (a trial of
    # MediaPipe output: every score read as a full-weight label)
    assert by_id[second["id"]].keypoints_2d[2, 2] == pytest.approx(0.05)
    assert by_id[second["id"]].keypoints_2d[3, 2] == 0.0 and by_id[second["id"]].keypoints_2d[5, 2] == 0.0
    assert sum(p.keypoints_unusual for p in by_id.values()) == 6
    [warning] = [p for p in problems if "does not define" in p.reason]
    assert warning.severity == "warning" and warning.reason.startswith("2 people have 6 keypoint values")
    assert len(problems) == 1  # the rest of the file is as before: nothing else said

    kp = np.zeros((25, 3))
    kp[:, :2], kp[:, 2] = np.random.default_rng(0).uniform(100, 300, (25, 2)), 0.8
    values = kp.ravel().tolist()
    values[0] = "150.0"
    (tmp_path / "000000000785_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": values}]}))
    images, problems = read_openpose(tmp_path, sample_dir)
    assert images[0].people[0].keypoints_unusual == 1 and images[0].people[0].keypoints_2d[0, 0] == 150.0
    assert [p.reason.split(" (")[0] for p in problems if "does not define" in p.reason] == \
        ["1 person has 1 keypoint value in a form the format does not define"]


def test_tracking_ids_are_read_from_openpose_and_coco(tmp_path, sample_dir):
    """A video trial: OpenPose's person_id (tracking) was dropped, so a person could not be
    followed across frames (annot_id is the index in `people`, whose order changes)."""
    from fit3d.data.keypoints import track_id

    assert [track_id(v) for v in ([-1], [7], 7, 7.0, None, "7", [1, 2], True, -3, 2.5)] == [
        -1, 7, 7, 7, -1, -1, -1, -1, -1, -1]
    _openpose_from_coco(sample_dir, tmp_path)
    f = tmp_path / "000000000785_keypoints.json"
    data = json.loads(f.read_text())
    data["people"][0]["person_id"] = [12]
    f.write_text(json.dumps(data))
    images, _ = read_openpose(tmp_path, sample_dir)
    ids = {r.image_key: [p.track_id for p in r.people] for r in images}
    assert ids["000000000785.jpg"][0] == 12 and all(t == -1 for k, v in ids.items() for t in v if k != "000000000785.jpg")
    coco = json.loads((sample_dir / "test_coco.json").read_text())
    coco["annotations"][0]["track_id"] = 3
    (tmp_path / "c.json").write_text(json.dumps(coco))
    images, _ = read_coco(tmp_path / "c.json", sample_dir)
    people = [p for r in images for p in r.people]
    assert [p.track_id for p in people if p.annot_id == coco["annotations"][0]["id"]] == [3]
    assert sorted({p.track_id for p in people}) == [-1, 3]


def test_keypoint_lists_of_another_form_are_named_for_what_they_are():
    """A new-user trial: null keypoints read "'NoneType' object is not iterable", x, y pairs only
    "expected 51, got 34"."""
    from fit3d.data.keypoints import parse_keypoints

    with pytest.raises(ValueError, match="got null"):
        parse_keypoints(None, 17)
    with pytest.raises(ValueError, match="got str"):
        parse_keypoints("1 2 3", 17)
    with pytest.raises(ValueError, match=r"got 34 \(x, y pairs without a visibility"):
        parse_keypoints([1.0] * 34, 17)
    assert parse_keypoints([1.0] * 51, 17).shape == (17, 3)
