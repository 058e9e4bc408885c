import json

from fit3d.data.coco import read_coco


def test_a_box_that_contradicts_the_keypoints_is_rebuilt_with_one_warning(tmp_path, sample_dir):
    """Found by a helper: a box of 1e9 px, or one around none of the keypoints, was used as given
    (SMPLify's fit marked valid at 20 px: the validity test is 5 % of the box diagonal)."""
    d = json.loads((sample_dir / "test_coco.json").read_text())
    people = [a for a in d["annotations"] if a.get("num_keypoints", 0) >= 6]
    people[0]["bbox"] = [0, 0, 1e9, 1e9]
    people[1]["bbox"] = [-50, -50, 100, 100]
    (tmp_path / "a.json").write_text(json.dumps(d))
    images, problems = read_coco(tmp_path / "a.json", sample_dir)
    notes = {p.annot_id: p.bbox_note for r in images for p in r.people if p.bbox_note}
    assert set(notes) == {people[0]["id"], people[1]["id"]}
    assert "over 4x the image's size" in notes[people[0]["id"]]
    assert "holds none of the labelled keypoints" in notes[people[1]["id"]]
    (warning,) = [p for p in problems if "box rebuilt" in p.reason]
    assert warning.severity == "warning" and warning.reason.startswith("2 people")
    for r in images:
        for p in r.people:
            if p.annot_id == people[0]["id"]:
                assert p.bbox[2] < 1000
