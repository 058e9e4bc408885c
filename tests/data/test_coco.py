import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fit3d.data.coco import read_coco
from fit3d.data.conventions import COCO17
from fit3d.data.openpose import read_openpose
from tests.data._helpers import _openpose_from_coco


def test_read_coco_real_sample(sample_dir):
    images, problems = read_coco(sample_dir / "test_coco.json", sample_dir)
    assert problems == []
    assert len(images) == 4
    data = json.loads((sample_dir / "test_coco.json").read_text())
    expected = [a for a in data["annotations"] if not a.get("iscrowd")]  # 0-keypoint people too: skipped later
    people = [p for r in images for p in r.people]
    assert len(people) == len(expected) == 14
    assert sum(p.num_visible > 0 for p in people) == 12
    ann = {a["id"]: a for a in expected}
    for p in people:
        a = ann[p.annot_id]
        kp = np.asarray(a["keypoints"], dtype=np.float32).reshape(17, 3)
        np.testing.assert_allclose(p.keypoints_2d[:, :2], kp[:, :2])
        np.testing.assert_array_equal(p.keypoints_2d[:, 2], (kp[:, 2] > 0).astype(np.float32))
        assert p.convention is COCO17
        assert p.num_visible == a["num_keypoints"]
        assert p.image_path.is_file()
    sizes = {r.image_key: r.image_size for r in images}
    assert sizes["000000000785.jpg"] == (640, 425)


def test_read_coco_reports_missing_images(tmp_path, sample_dir):
    shutil.copy(sample_dir / "000000000785.jpg", tmp_path)
    images, problems = read_coco(sample_dir / "test_coco.json", tmp_path)
    assert [r.image_key for r in images] == ["000000000785.jpg"]
    assert len(problems) == 3 and all("not found" in p.reason and "annotations not fitted" in p.reason
                                      and p.severity == "error" for p in problems)


def test_read_coco_corrupt_json(tmp_path, sample_dir):
    bad = tmp_path / "person_keypoints_bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(ValueError, match="corrupt"):
        read_coco(bad, sample_dir)
    with pytest.raises(FileNotFoundError):
        read_coco(tmp_path / "nope.json", sample_dir)


def test_files_with_a_byte_order_mark_are_read(tmp_path, sample_dir):
    """Windows tools write UTF-8 with a byte-order mark: the COCO file and OpenPose files are read
    (a trial: 'Unexpected UTF-8 BOM (decode using utf-8-sig)', exit 1)."""
    bom = tmp_path / "person_keypoints_bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + (sample_dir / "test_coco.json").read_bytes())
    images, problems = read_coco(bom, sample_dir)
    assert problems == [] and sum(len(r.people) for r in images) == 14
    keypoints = tmp_path / "op"
    keypoints.mkdir()
    _openpose_from_coco(sample_dir, keypoints)
    for f in keypoints.iterdir():
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    images, problems = read_openpose(keypoints, sample_dir)
    assert problems == [] and sum(len(r.people) for r in images) == 14


def test_image_ids_written_as_another_type_are_named(tmp_path, sample_dir):
    """A trial: image ids written as strings in 'images' and integers in 'annotations' gave 14
    'unknown image id' problems without saying why."""
    data = json.loads((sample_dir / "test_coco.json").read_text())
    for im in data["images"]:
        im["id"] = str(im["id"])
    f = tmp_path / "person_keypoints_x.json"
    f.write_text(json.dumps(data))
    images, problems = read_coco(f, sample_dir)
    assert len(problems) == 14 and all("a string in 'images', an integer here" in p.reason for p in problems)


def test_read_coco_image_entries_naming_one_file_share_its_record(tmp_path, sample_dir):
    d = json.loads((sample_dir / "test_coco.json").read_text())
    info = next(i for i in d["images"] if i["id"] == 785)
    d["images"].append(dict(info, id=999999))
    ann = next(a for a in d["annotations"] if a["image_id"] == 785)
    d["annotations"].append(dict(ann, id=77777777, image_id=999999))
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps(d))
    images, problems = read_coco(dup, sample_dir)
    rec = [r for r in images if r.image_key == "000000000785.jpg"]
    assert len(rec) == 1 and len(images) == 4
    assert sorted(p.annot_id for p in rec[0].people) == sorted([ann["id"], 77777777])
    assert [p.person_index for p in rec[0].people] == [0, 1]
    assert sorted((p.severity, "image ids 785, 999999" in p.source, "exactly" in p.reason) for p in problems) == \
        [("warning", False, True), ("warning", True, False)]  # (the copied annotation: one person twice)
    # two different files outside the image folder with one name: one output name, the second not fitted
    for sub in ("A", "B"):
        (tmp_path / sub).mkdir()
        shutil.copy(sample_dir / "000000000785.jpg", tmp_path / sub / "x.jpg")
    d["images"][-1]["file_name"] = str(tmp_path / "A" / "x.jpg")
    info["file_name"] = str(tmp_path / "B" / "x.jpg")
    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps(d))
    images, problems = read_coco(clash, sample_dir)
    rec = [r for r in images if r.image_key == "x.jpg"]
    assert len(rec) == 1 and len(rec[0].people) == 1
    assert sorted((p.severity, "would be written as x.jpg" in p.reason) for p in problems) == [("error", True),
                                                                                              ("warning", False)]
    assert "leads out of the image folder" in next(p.reason for p in problems if p.severity == "warning")
    # one of them against a file of that name inside the folder: the folder's file keeps the name (found by
    # a trial: the file outside had it, and render and exports then put its fits on the folder's picture)
    inside = tmp_path / "imgs"
    shutil.copytree(sample_dir, inside, ignore=shutil.ignore_patterns("*.json"))
    shutil.copy(sample_dir / "000000040083.jpg", inside / "x.jpg")
    info["file_name"] = "x.jpg"  # image 785's entry now names the folder's x.jpg (sorted after A/x.jpg's path)
    clash.write_text(json.dumps(d))
    images, problems = read_coco(clash, inside)
    rec = [r for r in images if r.image_key == "x.jpg"]
    assert len(rec) == 1 and rec[0].image_path == inside / "x.jpg"
    assert any("would be written as x.jpg" in p.reason and str(tmp_path / "A") in p.reason for p in problems)


def test_read_coco_annotations_of_unknown_categories(tmp_path, sample_dir):
    d = json.loads((sample_dir / "test_coco.json").read_text())
    d["images"] = [i for i in d["images"] if i["id"] == 40083]
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] == 40083]
    d["annotations"][0]["category_id"] = 42
    del d["annotations"][1]["category_id"]
    one = tmp_path / "one.json"
    one.write_text(json.dumps(d))
    images, problems = read_coco(one, sample_dir)  # one layout: read in it, one warning for the id
    assert len(images[0].people) == 3 and not images[0].dropped
    assert [(p.severity, "category_id 42" in p.source) for p in problems] == [("warning", True)]
    d["categories"].append(dict(d["categories"][0], id=2, name="p7", keypoints=d["categories"][0]["keypoints"][:7]))
    two = tmp_path / "two.json"
    two.write_text(json.dumps(d))
    images, problems = read_coco(two, sample_dir)  # two layouts: the layouts of 42 and of no id are unknown
    assert len(images[0].people) == 1 and len(images[0].dropped) == 2
    assert sum(p.severity == "error" and "names no keypoint category" in p.reason for p in problems) == 2
    d["categories"][1]["keypoints"] = d["categories"][0]["keypoints"]  # two categories, one layout
    d["categories"].append(dict(id=3, name="car"))  # an instances file's other categories name no keypoints
    d["annotations"][2]["category_id"] = 3
    same = tmp_path / "same.json"
    same.write_text(json.dumps(d))
    images, problems = read_coco(same, sample_dir)
    assert len(images[0].people) == 3 and not images[0].dropped
    assert sorted((p.severity, p.source.split("(")[-1], "names no keypoints" in p.reason) for p in problems) == [
        ("warning", "category_id 3)", True), ("warning", "category_id 42)", False)]


def test_annotations_of_a_non_person_keypoint_category_are_left_out(tmp_path, sample_dir):
    d = json.loads((sample_dir / "test_coco.json").read_text())
    d["images"] = [i for i in d["images"] if i["id"] == 40083]
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] == 40083]
    person = d["categories"][0]
    # an animal layout (AP-10K style) whose names overlap a person's: shoulders, elbows, hips, knees
    d["categories"].append(dict(id=2, name="dog", supercategory="Canidae", keypoints=person["keypoints"]))
    d["annotations"][0]["category_id"] = 2
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps(d))
    images, problems = read_coco(mixed, sample_dir)
    assert sorted(p.annot_id for p in images[0].people) == sorted(a["id"] for a in d["annotations"][1:])
    assert [(p.severity, "category_id 2" in p.source, "1 annotations of category 'dog'" in p.reason)
            for p in problems] == [("warning", True, True)]
    # an instances file's other categories: their annotations without keypoints are left out too
    d["categories"].append(dict(id=3, name="car", supercategory="vehicle"))
    d["annotations"].append(dict(id=5555, image_id=40083, category_id=3, bbox=[1, 1, 20, 20], iscrowd=0))
    cars = tmp_path / "cars.json"
    cars.write_text(json.dumps(d))
    images, problems = read_coco(cars, sample_dir)
    assert len(images[0].people) == len(d["annotations"]) - 2 and not images[0].dropped
    assert sorted(p.reason.split(" (")[0] for p in problems) == ["1 annotations of category 'car'",
                                                                 "1 annotations of category 'dog'"]
    d["categories"].pop()
    d["annotations"].pop()
    # a file whose only category is not named person is still read as people, with a warning
    d["categories"] = [dict(person, name="athlete", supercategory="sport")]
    for a in d["annotations"]:
        a["category_id"] = person["id"]
    custom = tmp_path / "custom.json"
    custom.write_text(json.dumps(d))
    images, problems = read_coco(custom, sample_dir)
    assert len(images[0].people) == len(d["annotations"])
    assert [(p.severity, "'athlete' is not named 'person'" in p.reason) for p in problems] == [("warning", True)]


def test_a_layout_naming_one_point_twice_is_a_warning():
    from fit3d.data.readers import category_conventions

    problems = []
    cats = category_conventions(dict(categories=[dict(id=1, name="p", keypoints=["head", "headtop", "neck"])]),
                                problems, "x.json")
    assert cats[1].names == ("head_top", "head_top", "neck")
    assert len(problems) == 1 and problems[0].severity == "warning" and "head, headtop all mean head_top" in \
        problems[0].reason


def test_an_image_id_given_to_two_files_places_none_of_its_people(tmp_path, sample_dir):
    """Two merged files whose image ids collide: the id's annotations are an error, never fitted on
    either file (the later entry used to win: people went to the wrong image, the other was dropped)."""
    data = json.loads((sample_dir / "test_coco.json").read_text())
    first, second = data["images"][0], data["images"][1]
    data["images"].append(dict(first, file_name=second["file_name"]))  # first's id, second's file
    data["images"].append(dict(first))  # an exact repeat of an entry is harmless
    path = tmp_path / "collide.json"
    path.write_text(json.dumps(data))
    images, problems = read_coco(path, sample_dir)
    n = sum(a["image_id"] == first["id"] for a in data["annotations"])
    [p] = [p for p in problems if p.severity == "error"]
    assert f"image id {first['id']} is given to 2 different files" in p.reason and f"its {n} annotations" in p.reason
    assert first["file_name"] in p.reason and second["file_name"] in p.reason
    keys = {r.image_key for r in images}
    assert first["file_name"] not in keys and second["file_name"] in keys
    placed = {p.annot_id for r in images for p in r.people}
    assert not placed & {a["id"] for a in data["annotations"] if a["image_id"] == first["id"]}
    assert {p.annot_id for r in images if r.image_key == second["file_name"] for p in r.people} == \
        {a["id"] for a in data["annotations"] if a["image_id"] == second["id"]}


def test_a_file_name_climbing_out_of_the_image_folder_keeps_its_output_inside(tmp_path, sample_dir, monkeypatch):
    """Found by a helper: file_name "sub/../../x.jpg" gave the key "../x.jpg", written outside --out."""
    images_dir = tmp_path / "imgs"
    (images_dir / "sub").mkdir(parents=True)
    shutil.copy(sample_dir / "000000000785.jpg", tmp_path / "escape.jpg")
    d = json.loads((sample_dir / "test_coco.json").read_text())
    d["images"] = [dict(i, file_name="sub/../../escape.jpg") for i in d["images"] if i["id"] == 785]
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] == 785]
    (tmp_path / "a.json").write_text(json.dumps(d))
    images, _ = read_coco(tmp_path / "a.json", images_dir)
    assert [r.image_key for r in images] == ["escape.jpg"]
    monkeypatch.chdir(images_dir / "sub")  # --images . (a review found '../x.jpg' kept from there)
    d["images"][0]["file_name"] = "../../escape.jpg"
    (tmp_path / "a.json").write_text(json.dumps(d))
    images, _ = read_coco(tmp_path / "a.json", Path("."))
    assert [r.image_key for r in images] == ["escape.jpg"]


def test_coco_wholebody_foot_points_are_read_and_a_bad_foot_array_keeps_the_body(tmp_path, sample_dir):
    """COCO-WholeBody's ``foot_kpts`` add the six foot points (COCO-23); one of the wrong length
    dropped the whole person (found by a trial): the body is fitted, with a warning."""
    from fit3d.data.conventions import COCO23

    data = json.loads((sample_dir / "test_coco.json").read_text())
    with_kp = [a for a in data["annotations"] if a.get("num_keypoints", 0) > 0]
    for a in with_kp:
        a["foot_kpts"] = [v for k in range(6) for v in (100.0 + k, 200.0, 2)]
    with_kp[0]["foot_kpts"] = with_kp[0]["foot_kpts"][:9]
    (tmp_path / "wb.json").write_text(json.dumps(data))
    images, problems = read_coco(tmp_path / "wb.json", sample_dir)
    people = {p.annot_id: p for r in images for p in r.people}
    bad = people[with_kp[0]["id"]]
    assert bad.convention is COCO17 and bad.keypoints_2d.shape == (17, 3)
    good = people[with_kp[1]["id"]]
    assert good.convention is COCO23
    np.testing.assert_allclose(good.keypoints_2d[COCO23.index("left_big_toe")], [100.0, 200.0, 1.0])
    [w] = [x for x in problems if "foot_kpts" in x.reason]
    assert w.severity == "warning" and "fitted without the feet" in w.reason and str(with_kp[0]["id"]) in w.source


def test_arrays_of_another_size_under_a_category_without_keypoint_names_say_why(tmp_path, sample_dir):
    """A category with a skeleton but no keypoint names is read as COCO-17; 14-point arrays then
    failed with 'expected 51 ... got 42' and no hint (found by a trial)."""
    data = json.loads((sample_dir / "test_coco.json").read_text())
    for c in data["categories"]:
        c.pop("keypoints", None)
    a = next(a for a in data["annotations"] if a.get("num_keypoints", 0) > 0)
    a["keypoints"] = a["keypoints"][:42]
    (tmp_path / "c.json").write_text(json.dumps(data))
    _, problems = read_coco(tmp_path / "c.json", sample_dir)
    [p] = [x for x in problems if "unreadable keypoints" in x.reason]
    assert "got 42" in p.reason and "COCO-17 is assumed" in p.reason


def test_read_coco_opens_only_the_images_it_is_asked_for(sample_dir, monkeypatch):
    import fit3d.data.coco as coco

    opened = []
    real = coco.open_image
    monkeypatch.setattr(coco, "open_image", lambda path, *a: opened.append(path.name) or real(path, *a))
    every, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    opened.clear()
    first = every[0].image_key
    some, _ = read_coco(sample_dir / "test_coco.json", sample_dir, only=lambda key: key == first)
    assert opened == [first] and [r.image_key for r in some] == [r.image_key for r in every]
    assert some[0].people and not any(r.people for r in some[1:])  # the others: counted, not opened or parsed


def test_a_coco_results_file_is_refused_with_what_to_wrap_it_in(tmp_path, sample_dir):
    """A MediaPipe trial: detectors write COCO's results format (a bare list of detections); the
    refusal said only that 'images' and 'annotations' were missing."""
    from fit3d.data.coco import read_coco

    (tmp_path / "results.json").write_text(json.dumps([dict(image_id=785, category_id=1, score=0.9,
                                                            keypoints=[10.0, 20.0, 0.8] * 17)]))
    with pytest.raises(ValueError, match="COCO's results format.*'images'"):
        read_coco(tmp_path / "results.json", sample_dir)
    (tmp_path / "other.json").write_text(json.dumps({"info": {}}))
    with pytest.raises(ValueError, match=r"lists\)$"):
        read_coco(tmp_path / "other.json", sample_dir)


def test_odd_iscrowd_values_huge_ids_and_huge_numbers_are_input_problems_not_crashes(tmp_path, sample_dir):
    """Found by a review: ``iscrowd: "0"`` dropped a person as a crowd; an id beyond int64 passed the
    reader and stopped the run when written; a 400-digit integer made the reader raise."""
    from fit3d.data.keypoints import track_id

    data = json.loads((sample_dir / "test_coco.json").read_text())
    anns = [a for a in data["annotations"] if not a.get("iscrowd") and sum(a["keypoints"][2::3]) > 0]
    a0, a1, a2, a3 = (dict(x) for x in anns[:4])
    a0["iscrowd"] = "0"
    a1["id"] = 2 ** 63 + 5
    a2["keypoints"] = [10 ** 400] + a2["keypoints"][1:]
    a3["bbox"] = [1, 1, 10 ** 400, 20]
    data["annotations"] = [a0, a1, a2, a3]
    f = tmp_path / "person_keypoints_odd.json"
    f.write_text(json.dumps(data))
    images, problems = read_coco(f, sample_dir)
    people = {p.annot_id: p for r in images for p in r.people}
    assert a0["id"] in people and any("iscrowd '0' is not 0 or 1: read as 0" in p.reason for p in problems)
    assert a1["id"] not in people and any("is not an integer" in p.reason for p in problems)
    assert a2["id"] not in people and any("too large" in p.reason for p in problems)
    assert a3["id"] in people  # (its box rebuilt from the keypoints)
    assert all(np.int64(p.annot_id) == p.annot_id for p in people.values())  # (fits store them as int64)
    assert track_id(1e30) == track_id([2 ** 63]) == -1 and track_id(2 ** 63 - 1) == 2 ** 63 - 1


def test_images_whose_fits_could_never_be_read_back_are_problems(tmp_path, sample_dir):
    """Found by a review: an image named without an extension, or starting with '.', was fitted and its
    .npz written, but merge, export and evaluate never list such a file."""
    data = json.loads((sample_dir / "test_coco.json").read_text())
    first, second = data["images"][:2]
    shutil.copy(sample_dir / first["file_name"], tmp_path / "noext")
    shutil.copy(sample_dir / second["file_name"], tmp_path / ".hidden.jpg")
    first["file_name"], second["file_name"] = "noext", ".hidden.jpg"
    f = tmp_path / "person_keypoints_names.json"
    f.write_text(json.dumps(data))
    images, problems = read_coco(f, tmp_path)
    assert not {"noext", ".hidden.jpg"} & {r.image_key for r in images}
    named = [p for p in problems if "never read back" in p.reason]
    assert len(named) == 2 and all(p.severity == "error" for p in named)
