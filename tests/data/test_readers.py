import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from fit3d.data.conventions import COCO17, OPENPOSE_BODY25, convert
from fit3d.data.readers import discover_annotations, load_inputs, read_coco, read_openpose


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


def test_files_that_are_not_an_npz_are_named_for_what_they_are(tmp_path, sample_dir):
    """A trial: a JSON file given as --spin-npz was called 'pickled objects (a HumanData file?)'."""
    from fit3d.data.spin import load_spin_npz

    with pytest.raises(ValueError, match=r"not a SPIN dataset file \(.npz\): JSON \(a COCO file\? --annotations\)"):
        load_spin_npz(sample_dir / "test_coco.json")
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"a single array \(.npy\)"):
        load_spin_npz(tmp_path / "a.npy")
    (tmp_path / "b.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a zip archive"):
        load_spin_npz(tmp_path / "b.npz")


def _openpose_from_coco(sample_dir, out_dir, layout=OPENPOSE_BODY25):
    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    for r in images:
        people = [
            {"person_id": [-1], "pose_keypoints_2d": convert(p.keypoints_2d, COCO17, layout).ravel().tolist()}
            for p in r.people
        ]
        (out_dir / (r.image_path.stem + "_keypoints.json")).write_text(json.dumps({"version": 1.3, "people": people}))
    return images


def test_read_openpose_body25_and_problems(tmp_path, sample_dir):
    coco = _openpose_from_coco(sample_dir, tmp_path)
    (tmp_path / "broken_keypoints.json").write_text("{not json")
    (tmp_path / "000000999999_keypoints.json").write_text(json.dumps({"people": []}))
    (tmp_path / "a_list_keypoints.json").write_text(json.dumps([{"people": []}]))
    (tmp_path / "no_people_keypoints.json").write_text(json.dumps({"version": 1.3}))
    images, problems = read_openpose(tmp_path, sample_dir)
    assert len(images) == 4
    assert sum("not an OpenPose keypoint file (needs an object with a 'people' list)" in x.reason
               for x in problems) == 2
    assert sum(len(r.people) for r in images) == sum(len(r.people) for r in coco)
    p = images[0].people[0]
    assert p.convention is OPENPOSE_BODY25 and p.image_size == (640, 425)
    reasons = " ".join(x.reason for x in problems)
    assert "corrupt OpenPose JSON" in reasons and "no image named 000000999999" in reasons


def test_openposes_body_25b_is_read_when_named_and_said_when_it_looks_like_it(tmp_path, sample_dir):
    """An input audit: BODY_25B's 75 values (COCO's order first) were read as BODY_25, the eyes as
    the neck and a shoulder, with no word (fits 0 valid at 70 px). A guess from the points must not
    choose the layout (a review: each shard reads a part of the folder and one pose can tip it; a
    hand at the face looked like BODY_25B), so it only warns; --openpose-model body_25b reads it."""
    from fit3d.data.conventions import OPENPOSE_BODY25B
    from fit3d.data.openpose import body25_ratio

    (tmp_path / "b").mkdir()
    coco = _openpose_from_coco(sample_dir, tmp_path / "b", OPENPOSE_BODY25B)
    images, problems = read_openpose(tmp_path / "b", sample_dir)  # the default model: read as BODY_25 ...
    assert {p.convention for r in images for p in r.people} == {OPENPOSE_BODY25}
    [said] = [x for x in problems if "BODY_25B" in x.reason]  # ... with a warning
    assert said.severity == "warning" and "--openpose-model body_25b" in said.reason
    images, problems = read_openpose(tmp_path / "b", sample_dir, model="body_25b")
    assert {p.convention for r in images for p in r.people} == {OPENPOSE_BODY25B}
    assert not [x for x in problems if "look like" in x.reason]
    by_image = {r.image_key: r for r in coco}
    for r in images:
        for p, q in zip(r.people, by_image[r.image_key].people):
            assert np.allclose(convert(p.keypoints_2d, OPENPOSE_BODY25B, COCO17), q.keypoints_2d)
    (tmp_path / "a").mkdir()
    _openpose_from_coco(sample_dir, tmp_path / "a")
    images, problems = read_openpose(tmp_path / "a", sample_dir)
    assert {p.convention for r in images for p in r.people} == {OPENPOSE_BODY25}
    assert not [x for x in problems if "BODY_25B" in x.reason]
    images, problems = read_openpose(tmp_path / "a", sample_dir, model="body_25b")  # the other mistake (a trial)
    [said] = [x for x in problems if "look like" in x.reason]
    assert said.reason.startswith("the 75-value keypoints look like OpenPose's BODY_25, not BODY_25B")
    assert body25_ratio([]) == (None, 0)
    with pytest.raises(ValueError, match="unknown OpenPose model"):
        read_openpose(tmp_path / "a", sample_dir, model="body_135")


def test_the_openpose_model_option_reaches_the_reader(tmp_path, sample_dir, monkeypatch):
    from click.testing import CliRunner

    import fit3d.data.readers as readers
    from fit3d.cli.main import cli

    kdir = tmp_path / "openpose"
    kdir.mkdir()
    _openpose_from_coco(sample_dir, kdir)
    seen = []
    real = readers.read_openpose
    monkeypatch.setattr(readers, "read_openpose", lambda *a: seen.append(a[3]) or real(*a))
    for extra in ([], ["--openpose-model", "body_25b"]):
        r = CliRunner().invoke(cli, ["eft", "--images", str(sample_dir), "--keypoints", str(kdir), "--out",
                                     str(tmp_path / "out"), "--dry-run", *extra])
        assert r.exit_code == 0, r.output
    assert seen == ["body_25", "body_25b"]
    r = CliRunner().invoke(cli, ["eft", "--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"),
                                 "--out", str(tmp_path / "out"), "--dry-run", "--openpose-model", "body_25b"])
    assert r.exit_code == 2 and "is for OpenPose input" in r.output  # (ignored in silence before: a trial)
    with pytest.raises(ValueError, match="is for OpenPose input"):  # the Python API too (a review)
        load_inputs(sample_dir, sample_dir / "test_coco.json", openpose_model="body_25b")
    with pytest.raises(ValueError, match="unknown OpenPose model"):
        load_inputs(sample_dir, keypoints_dir=kdir, openpose_model="nonsense")


def test_read_openpose_coco18(tmp_path, sample_dir):
    flat = np.zeros((18, 3), dtype=np.float32)
    flat[:, :2] = 100
    flat[:, 2] = 0.9
    (tmp_path / "000000000785_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": flat.ravel().tolist()}]}))
    images, problems = read_openpose(tmp_path, sample_dir)
    assert images[0].people[0].convention.name == "openpose_coco18"
    # the sample's three other images have no keypoint file: one warning counts them
    assert [(p.severity, p.reason.split(" in ")[0]) for p in problems] == [
        ("warning", "3 images have no keypoint file")]


def test_read_openpose_two_files_of_one_image_and_images_without_a_file(tmp_path, sample_dir):
    kp_dir, img_dir = tmp_path / "kp", tmp_path / "img"
    kp_dir.mkdir()
    shutil.copytree(sample_dir, img_dir)
    _openpose_from_coco(sample_dir, kp_dir)
    shutil.copy(kp_dir / "000000040083_keypoints.json", kp_dir / "000000040083.json")  # the same image, twice
    (kp_dir / "000000196141_keypoints.json").unlink()  # an image without a keypoint file
    shutil.copy(img_dir / "000000000785.jpg", img_dir / "000000000785.png")  # two images of one stem
    images, problems = read_openpose(kp_dir, img_dir)
    assert sorted(r.image_key for r in images) == ["000000000785.jpg", "000000040083.jpg", "000000197388.jpg"]
    keys = [r.image_key for r in images]
    assert len(keys) == len(set(keys))  # one record (one output file) per image
    found = sorted((p.severity, p.source, p.reason.split(" (")[0].split(":")[0]) for p in problems)
    assert found == [  # OpenPose's own a_keypoints.json is read, the a.json beside it left out
        ("warning", str(kp_dir / "000000000785_keypoints.json"), "2 images are named 000000000785.*"),
        ("warning", str(kp_dir / "000000040083.json"),
         "names the same image as " + str(kp_dir / "000000040083_keypoints.json")),
        ("warning", "000000196141.jpg", "1 image has no keypoint file in " + str(kp_dir))]


def test_read_openpose_follows_linked_folders(tmp_path, sample_dir):
    """Frames and keypoints linked in from another disk (``clip -> /data/clip``) were not read:
    ``Path.rglob`` does not follow links to folders. A link that loops is listed once."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "kp").mkdir(parents=True)
    shutil.copytree(sample_dir, elsewhere / "img")
    _openpose_from_coco(sample_dir, elsewhere / "kp")
    kp_dir, img_dir = tmp_path / "kp", tmp_path / "img"
    kp_dir.mkdir()
    img_dir.mkdir()
    (kp_dir / "clip").symlink_to(elsewhere / "kp", target_is_directory=True)
    (img_dir / "clip").symlink_to(elsewhere / "img", target_is_directory=True)
    (kp_dir / "clip_again").symlink_to(kp_dir, target_is_directory=True)  # a loop: kp/clip_again/clip/...
    images, problems = read_openpose(kp_dir, img_dir)
    assert sorted(r.image_key for r in images) == [f"clip/{n}" for n in ("000000000785.jpg", "000000040083.jpg",
                                                                          "000000196141.jpg", "000000197388.jpg")]
    assert sum(len(r.people) for r in images) == 14 and not problems
    # an alias inside the tree (all -> clip) is not followed: its files keep their own names (a review:
    # the alias, sorting first, took them, and the images were looked for under img/all)
    (kp_dir / "all").symlink_to(kp_dir / "clip", target_is_directory=True)
    (img_dir / "all").symlink_to(img_dir / "clip", target_is_directory=True)
    again, problems = read_openpose(kp_dir, img_dir)
    assert [r.image_key for r in again] == [r.image_key for r in images] and not problems


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


def test_discover_annotations(tmp_path, sample_dir):
    img = tmp_path / "val2017"
    img.mkdir()
    assert discover_annotations(img) is None
    (tmp_path / "person_keypoints_train2017.json").write_text("{}")
    (tmp_path / "person_keypoints_val2017.json").write_text("{}")
    assert discover_annotations(img).name == "person_keypoints_val2017.json"
    (tmp_path / "person_keypoints_val2017_subset.json").write_text("{}")  # two name the folder: a guess
    with pytest.raises(ValueError, match="2 person_keypoints_.*val2017.json, person_keypoints_val2017_subset.json"):
        discover_annotations(img)
    other = tmp_path / "b" / "images"
    other.mkdir(parents=True)
    for name in ("a", "c"):  # none names the folder: a guess (a trial: the first was taken in silence)
        (tmp_path / "b" / f"person_keypoints_{name}.json").write_text("{}")
    with pytest.raises(ValueError, match="pass --annotations"):
        discover_annotations(other)
    coco = tmp_path / "coco"  # COCO's own layout: annotations/ beside the image folders
    (coco / "val2017").mkdir(parents=True)
    (coco / "annotations").mkdir()
    (coco / "annotations" / "person_keypoints_val2017.json").write_text("{}")
    (coco / "annotations" / "person_keypoints_train2017.json").write_text("{}")
    assert discover_annotations(coco / "val2017") == (coco / "annotations" / "person_keypoints_val2017.json").resolve()


def test_load_inputs(tmp_path, sample_dir):
    images = tmp_path / "coco" / "val2017"
    shutil.copytree(sample_dir, images)
    with pytest.raises(FileNotFoundError, match="person_keypoints_"):
        load_inputs(images)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_inputs(tmp_path / "missing")
    ann = shutil.move(images / "test_coco.json", tmp_path / "coco" / "person_keypoints_val2017.json")
    records, problems, used = load_inputs(images)
    assert used == ann.resolve() and len(records) == 4 and not problems
    assert load_inputs(images, annotations=ann)[2] == ann
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ValueError, match="corrupt COCO JSON"):
        load_inputs(images, annotations=tmp_path / "bad.json")
    with pytest.raises(ValueError, match="one source of people"):
        load_inputs(images, annotations=ann, keypoints_dir=tmp_path)


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


def test_a_truncated_image_is_read_with_a_warning(tmp_path, sample_dir):
    shutil.copy(sample_dir / "000000000785.jpg", tmp_path)
    data = (sample_dir / "000000040083.jpg").read_bytes()
    (tmp_path / "000000040083.jpg").write_bytes(data[:20000])  # an interrupted copy: the header still reads
    # a complete image followed by other data (a phone's motion photo): decoded to be sure, not reported
    (tmp_path / "000000196141.jpg").write_bytes((sample_dir / "000000196141.jpg").read_bytes() + bytes(8192))
    images, problems = read_coco(sample_dir / "test_coco.json", tmp_path)
    cut = [p for p in problems if "cut short" in p.reason]
    assert len(cut) == 1 and cut[0].severity == "warning" and cut[0].source.endswith("000000040083.jpg")
    assert {r.image_key for r in images} == {"000000000785.jpg", "000000040083.jpg", "000000196141.jpg"}


def test_a_truncated_png_is_read_with_a_warning_and_never_decoded_for_its_exif(tmp_path, monkeypatch):
    """Found by a trial: Pillow's getexif decodes a whole PNG, so a cut-short PNG was an error (exit 3,
    its people not fitted) and every PNG was decoded while the inputs were read."""
    from PIL import Image, PngImagePlugin

    from fit3d.data.images import inspect_image

    Image.effect_noise((400, 300), 60).convert("RGB").save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    loads = []
    real = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: loads.append(1) or real(self))
    assert inspect_image(tmp_path / "a.png") == ((400, 300), "PNG", False, 1) and not loads
    assert inspect_image(tmp_path / "cut.png").truncated  # (decoded once, to tell: no end marker)


def test_a_truncated_bmp_is_found_by_its_declared_length_and_a_truncated_webp_does_not_open(tmp_path):
    """Left out before: only JPEG and PNG (end markers) were checked, so a cut-short BMP was
    fitted without a word and training code could not decode it."""
    from PIL import Image

    from fit3d.data.images import inspect_image

    for fmt in ("BMP", "WEBP"):
        path = tmp_path / f"a.{fmt.lower()}"
        Image.effect_noise((401, 300), 60).convert("RGB").save(path, fmt)
        data = path.read_bytes()
        assert inspect_image(path) == ((401, 300), fmt, False, 1)
        (tmp_path / "long").write_bytes(data + bytes(100))  # a complete file with data after it: not cut
        assert not inspect_image(tmp_path / "long").truncated
        (tmp_path / "cut").write_bytes(data[: len(data) - 100])
        if fmt == "BMP":
            assert inspect_image(tmp_path / "cut").truncated
        else:  # an error, not a warning: its people are not fitted
            with pytest.raises(OSError):
                inspect_image(tmp_path / "cut")


def test_an_image_stored_turned_warns_unless_its_annotations_saw_it_as_shown(tmp_path, sample_dir):
    """Found by a trial: keypoints labelled on the stored pixels of an image with an EXIF orientation
    were fitted in the frame as shown, valid, exit 0, without a word."""
    from PIL import Image

    d = json.loads((sample_dir / "test_coco.json").read_text())
    name = "000000000785.jpg"
    entry = next(i for i in d["images"] if i["file_name"] == name)
    d["images"] = [entry]
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] == entry["id"]]
    with Image.open(sample_dir / name) as im:
        w, h = im.size
        for orientation, pixels in ((3, im.transpose(Image.Transpose.ROTATE_180)),
                                    (6, im.transpose(Image.Transpose.ROTATE_90))):
            folder = tmp_path / str(orientation)
            folder.mkdir()
            exif = Image.Exif()
            exif[0x0112] = orientation
            pixels.save(folder / name, exif=exif)
    (tmp_path / "ann.json").write_text(json.dumps(d))
    _, problems = read_coco(tmp_path / "ann.json", tmp_path / "3")  # same size either way: the frame is unknown
    assert [p.severity for p in problems] == ["warning"] and "EXIF orientation 3" in problems[0].reason
    entry.update(width=h, height=w)  # the annotations give the stored size of the quarter-turned file
    (tmp_path / "ann.json").write_text(json.dumps(d))
    _, problems = read_coco(tmp_path / "ann.json", tmp_path / "6")
    assert len(problems) == 1 and "annotations give the stored size" in problems[0].reason
    entry.update(width=w, height=h)  # the size as shown: the annotator saw it as shown (no warning)
    (tmp_path / "ann.json").write_text(json.dumps(d))
    assert read_coco(tmp_path / "ann.json", tmp_path / "6")[1] == []


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


def test_a_layout_naming_one_point_twice_is_a_warning():
    from fit3d.data.readers import category_conventions

    problems = []
    cats = category_conventions(dict(categories=[dict(id=1, name="p", keypoints=["head", "headtop", "neck"])]),
                                problems, "x.json")
    assert cats[1].names == ("head_top", "head_top", "neck")
    assert len(problems) == 1 and problems[0].severity == "warning" and "head, headtop all mean head_top" in \
        problems[0].reason


def test_a_point_named_twice_is_taken_from_the_first_labelled_of_them():
    """An input audit: Halpe-136 as mmpose names it calls the body's wrists and the hands' roots
    all left_wrist / right_wrist; body-only annotations lost their labelled wrists (the unlabelled
    hand root, later in the list, won)."""
    from fit3d.data.conventions import COCO17, KeypointConvention, convert

    src = KeypointConvention("halpe_like", ("left_wrist", "nose", "left_wrist"))
    kp = np.array([[[10.0, 20.0, 1.0], [5.0, 5.0, 1.0], [0.0, 0.0, 0.0]],  # body wrist labelled, hand root not
                   [[0.0, 0.0, 0.0], [5.0, 5.0, 1.0], [30.0, 40.0, 0.7]],  # only the hand root labelled
                   [[10.0, 20.0, 1.0], [5.0, 5.0, 1.0], [30.0, 40.0, 1.0]]])  # both: the first
    out = convert(kp, src, COCO17)
    wrist = COCO17.names.index("left_wrist")
    assert out[:, wrist].tolist() == [[10, 20, 1], [30, 40, 0.7], [10, 20, 1]]
    assert out[:, COCO17.names.index("nose")].tolist() == [[5, 5, 1]] * 3
    assert convert(kp[0], src, COCO17)[wrist].tolist() == [10, 20, 1]  # one person


def test_an_image_turned_by_its_exif_orientation_is_read_as_shown(tmp_path, sample_dir):
    from PIL import Image

    from fit3d.render.fits import load_image

    for f in sample_dir.glob("*.jpg"):
        shutil.copy(f, tmp_path)
    name = "000000000785.jpg"
    with Image.open(sample_dir / name) as im:
        shown = np.asarray(im.convert("RGB"))
        exif = Image.Exif()
        exif[0x0112] = 6  # "turn 90 degrees clockwise to show": stored a quarter turn the other way
        im.transpose(Image.Transpose.ROTATE_90).save(tmp_path / name, exif=exif, quality=95)
    images, problems = read_coco(sample_dir / "test_coco.json", tmp_path)
    turned = next(r for r in images if r.image_key == name)
    assert tuple(turned.image_size) == (shown.shape[1], shown.shape[0])  # width x height as shown
    assert not [p for p in problems if name in p.source]  # the annotations' size agrees: no warning
    pixels, problem, scale = load_image(tmp_path / name, turned.image_size)
    assert problem == "" and pixels.shape == shown.shape and scale == 1.0
    assert np.abs(pixels.astype(int) - shown).mean() < 4  # the same picture (JPEG re-encoded)


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


def test_the_spin_reader_unlabels_unusable_keypoints_too(tmp_path, sample_dir):
    from fit3d.data.conventions import SPIN24
    from fit3d.data.spin import read_spin
    from fit3d.data.writers import write_npz

    part = np.zeros((1, 24, 3), np.float32)
    part[0, :, :2], part[0, :, 2] = np.random.default_rng(1).uniform(100, 300, (24, 2)), 1.0
    part[0, SPIN24.index("left_wrist"), :2] = np.nan
    part[0, SPIN24.index("left_knee"), 2] = np.nan  # no confidence: unlabelled, not counted
    write_npz(tmp_path / "s.npz", dict(imgname=np.asarray(["000000000785.jpg"]), center=np.full((1, 2), 200.0),
                                       scale=np.ones(1), part=part))
    images, problems = read_spin(tmp_path / "s.npz", sample_dir)
    [person] = [p for r in images for p in r.people]
    assert person.keypoints_ignored == 1 and np.isfinite(person.keypoints_2d).all()
    assert (person.keypoints_2d[[SPIN24.index("left_wrist"), SPIN24.index("left_knee")]] == 0).all()
    assert set(np.unique(person.keypoints_2d[:, 2])) == {0.0, 1.0}
    assert [p.reason.split(":")[0] for p in problems] == ["1 person has 1 labelled keypoint with non-finite, far-off or placeholder (0, 0) coordinates"]


def test_an_image_too_large_for_pillow_is_an_input_error_and_the_rest_is_read(tmp_path, sample_dir, monkeypatch):
    """Found by a helper: Pillow's DecompressionBombError is no OSError, so one huge image stopped the run."""
    from PIL import Image

    for name in ("000000000785.jpg", "000000040083.jpg"):
        shutil.copy(sample_dir / name, tmp_path)
    with Image.open(tmp_path / "000000040083.jpg") as im:
        im.resize((200, 150)).save(tmp_path / "000000000785.jpg")  # small enough
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 80_000)  # 640x427 > 2x the limit: refused as a bomb
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # 200x150 < 2x: read, Pillow's warning not passed on
        images, problems = read_coco(sample_dir / "test_coco.json", tmp_path)
    big = [p for p in problems if "too large" in p.reason]
    assert len(big) == 1 and big[0].severity == "error" and big[0].source.endswith("000000040083.jpg")
    assert "000000000785.jpg" in {r.image_key for r in images}


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


def test_openpose_people_in_old_and_empty_forms(tmp_path, sample_dir):
    """Found by a helper: OpenPose 1.0's "pose_keypoints" read as "0 values"; an empty array was an
    input error (the image marked incomplete and refitted by every rerun); normalised coordinates
    were skipped as degenerate without a hint."""
    from fit3d.data.conventions import OPENPOSE_BODY25
    from fit3d.pipeline.skips import skip_reason

    flat = np.zeros((18, 3), dtype=np.float32)
    flat[:, 0], flat[:, 1], flat[:, 2] = np.linspace(100, 300, 18), np.linspace(50, 400, 18) ** 1.1, 0.9
    people = [{"pose_keypoints": flat.ravel().tolist()}, {"pose_keypoints_2d": []}, {"face_keypoints_2d": []}]
    # (the empty person takes the file's COCO-18 layout: BODY_25 would add its points to the folder's layout)
    (tmp_path / "000000000785_keypoints.json").write_text(json.dumps({"people": people}))
    images, problems = read_openpose(tmp_path, sample_dir)
    (rec,) = images
    assert [p.person_index for p in rec.people] == [0, 1] and rec.people[0].convention.name == "openpose_coco18"
    assert rec.people[1].num_visible == 0 and rec.people[1].convention.name == "openpose_coco18"
    errors = [p for p in problems if p.severity == "error"]
    assert len(errors) == 1 and "no pose_keypoints_2d (keys: face_keypoints_2d)" in errors[0].reason
    p = rec.people[0]
    p.keypoints_2d[:, :2] = 0.5 + 0.01 * np.arange(18)[:, None]  # normalised: within 0-1, one line
    assert "normalised?" in skip_reason(p, OPENPOSE_BODY25)
    p.keypoints_2d[0, 0] = 1.19  # MediaPipe's run past the image (a trial): still the hint
    assert "normalised?" in skip_reason(p, OPENPOSE_BODY25)
    p.keypoints_2d[:, :2] = 3.0 + 0.01 * np.arange(18)[:, None]  # pixels, on one line: no hint
    assert "degenerate" in skip_reason(p, OPENPOSE_BODY25) and "normalised?" not in skip_reason(p, OPENPOSE_BODY25)


def test_the_spin_reader_takes_openpose_detections_where_part_has_none(tmp_path, sample_dir):
    """SPIN's COCO/MPII/LSP files carry OpenPose detections beside ``part``: they were ignored
    (a file with an empty ``part`` skipped everyone; the feet were never read). Also the forms
    found in a trial: ``imgname`` as bytes, ``scale`` as one column."""
    from fit3d.data.conventions import OPENPOSE_BODY25, SPIN24
    from fit3d.data.spin import SPIN_OPENPOSE, read_spin
    from fit3d.data.writers import write_npz

    rng = np.random.default_rng(2)
    part = np.zeros((2, 24, 3), np.float32)
    part[0, :12, :2], part[0, :12, 2] = rng.uniform(100, 300, (12, 2)), 1.0  # the limbs annotated
    openpose = np.zeros((2, 25, 3), np.float32)
    openpose[:, :, :2], openpose[:, :, 2] = rng.uniform(100, 300, (2, 25, 2)), 0.6  # detections
    write_npz(tmp_path / "s.npz", dict(imgname=np.asarray([b"000000000785.jpg"] * 2), center=np.full((2, 2), 200.0),
                                       scale=np.ones((2, 1)), part=part, openpose=openpose))
    images, problems = read_spin(tmp_path / "s.npz", sample_dir)
    assert not problems and [r.image_key for r in images] == ["000000000785.jpg"]
    annotated, detected_only = images[0].people
    assert annotated.convention is SPIN_OPENPOSE and len(SPIN_OPENPOSE) == 32
    for name in ("left_wrist", "right_ankle"):  # annotated: part's point, confidence 1
        np.testing.assert_array_equal(annotated.keypoints_2d[SPIN_OPENPOSE.index(name)], part[0, SPIN24.index(name)])
    for name in ("left_big_toe", "right_heel"):  # points part has no place for: the detection with its score
        np.testing.assert_allclose(annotated.keypoints_2d[SPIN_OPENPOSE.index(name)],
                                   openpose[0, OPENPOSE_BODY25.index(name)])
    for name in ("nose", "head_top"):  # part's, unlabelled there: a detection does not replace an annotation
        assert (annotated.keypoints_2d[SPIN_OPENPOSE.index(name)] == 0).all()
    feet = [SPIN_OPENPOSE.index(n) for n in ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe")]
    np.testing.assert_allclose(detected_only.keypoints_2d[feet], openpose[1, feet])  # (BODY_25's order first)
    assert (detected_only.keypoints_2d[SPIN_OPENPOSE.index("left_shoulder")] == 0).all()
    # a lost detection of a point part has is not counted as an ignored keypoint (it is not read)
    from fit3d.data.spin import spin_keypoints

    lost = openpose[0].copy()
    lost[OPENPOSE_BODY25.index("right_shoulder"), 0] = np.nan
    assert spin_keypoints(part[0], lost)[1] == 0
    lost[OPENPOSE_BODY25.index("left_heel"), 0] = np.nan
    assert spin_keypoints(part[0], lost)[1] == 1
    assert annotated.bbox[2] == pytest.approx(200.0)

    write_npz(tmp_path / "bad.npz", dict(imgname=np.asarray(["a.jpg"] * 2), center=np.full((2, 2), 200.0),
                                         scale=np.ones((2, 2)), part=part))
    with pytest.raises(ValueError, match=r"bad.npz: scale must have shape \(N,\) \(N = 2 people"):
        read_spin(tmp_path / "bad.npz", sample_dir)


def test_openpose_files_named_after_the_whole_image_name(tmp_path, sample_dir):
    """``a.jpg_keypoints.json`` / ``a.jpg.json`` (tools that keep the extension) were 'no image
    named a.jpg.*' for every file."""
    coco = _openpose_from_coco(sample_dir, tmp_path)
    for f in sorted(tmp_path.glob("*_keypoints.json")):
        stem = f.name[: -len("_keypoints.json")]
        f.rename(tmp_path / (f"{stem}.jpg_keypoints.json" if stem.endswith("5") else f"{stem}.jpg.json"))
    images, problems = read_openpose(tmp_path, sample_dir)
    assert not [x for x in problems if x.severity == "error"], problems
    assert sorted(r.image_key for r in images) == sorted(r.image_key for r in coco)
    assert sum(len(r.people) for r in images) == sum(len(r.people) for r in coco)


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


def test_a_missing_image_of_a_spin_file_is_one_problem_naming_its_rows(tmp_path, sample_dir):
    """As the COCO reader does (it was one problem per image and one more per row)."""
    from fit3d.data.spin import read_spin
    from fit3d.data.writers import write_npz

    part = np.zeros((3, 24, 3), np.float32)
    part[:, :, :2], part[:, :, 2] = 150.0, 1.0
    write_npz(tmp_path / "s.npz", dict(imgname=np.asarray(["gone.jpg", "000000000785.jpg", "gone.jpg"]),
                                       center=np.full((3, 2), 200.0), scale=np.ones(3), part=part))
    images, problems = read_spin(tmp_path / "s.npz", sample_dir)
    assert [len(r.people) for r in images] == [1]
    [p] = [x for x in problems if x.severity == "error"]
    assert "gone.jpg: image file not found" in f"{p.source}: {p.reason}" and "(2 rows of s.npz not fitted: #0, #2)" in p.reason


def test_an_image_name_that_repeats_the_images_folder_says_to_give_the_folder_above(tmp_path, sample_dir):
    """An input audit: SPIN's imgname holds the dataset's subfolder (val2017/a.jpg); under --images
    .../val2017 it was 'image file not found' with no hint."""
    import shutil

    from fit3d.data.spin import read_spin
    from fit3d.data.writers import write_npz

    (tmp_path / "coco" / "val2017").mkdir(parents=True)
    shutil.copy(sample_dir / "000000000785.jpg", tmp_path / "coco" / "val2017")
    part = np.zeros((1, 24, 3), np.float32)
    part[:, :, :2], part[:, :, 2] = 150.0, 1.0
    write_npz(tmp_path / "s.npz", dict(imgname=np.asarray(["val2017/000000000785.jpg"]), center=np.full((1, 2), 200.0),
                                       scale=np.ones(1), part=part))
    _, problems = read_spin(tmp_path / "s.npz", tmp_path / "coco" / "val2017")
    [p] = [x for x in problems if x.severity == "error"]
    assert "image file not found (its name starts with the images folder's own name, val2017/" in p.reason
    images, problems = read_spin(tmp_path / "s.npz", tmp_path / "coco")
    assert [len(r.people) for r in images] == [1] and not [x for x in problems if x.severity == "error"]


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


def test_an_image_whose_outputs_could_not_be_named_is_an_input_error(tmp_path, sample_dir):
    """Found by a trial: a 240-character name failed every run ("run again to retry"), its temporary
    output name past the file system's 255 bytes; a legal output name is now written, and a name too
    long for the outputs is an input error naming why."""
    from fit3d.data.writers import atomic_write_bytes

    long_out = tmp_path / ("a" * 240 + ".jpg.npz")
    atomic_write_bytes(long_out, b"x")
    assert long_out.read_bytes() == b"x"
    d = json.loads((sample_dir / "test_coco.json").read_text())
    name = "b" * 236 + ".jpg"  # 240 bytes: <name>.incomplete.json would be 256
    entry = d["images"][0]
    shutil.copy(sample_dir / entry["file_name"], tmp_path / name)
    ok = "c" * 227 + ".jpg"  # 231 bytes: room for every output (render --save-mesh's <name>_<id>.obj too)
    shutil.copy(sample_dir / entry["file_name"], tmp_path / ok)
    d["images"] = [dict(entry, file_name=name), dict(entry, id=1, file_name=ok)]
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] == entry["id"]]
    d["annotations"] += [dict(a, id=a["id"] + 10**9, image_id=1) for a in d["annotations"]]
    (tmp_path / "ann.json").write_text(json.dumps(d))
    images, problems = read_coco(tmp_path / "ann.json", tmp_path)
    assert [r.image_key for r in images] == [ok]
    assert len(problems) == 1 and problems[0].severity == "error" and "240 bytes" in problems[0].reason


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


def test_read_openpose_parses_and_opens_only_the_images_it_is_asked_for(tmp_path, sample_dir, monkeypatch):
    """A sharded run's task read every frame's keypoint file and opened every frame (left out
    when COCO input learned ``only``): now its own images only; the others are records without
    people, and the warning about images without a keypoint file counts its own images only."""
    import fit3d.data.openpose as op

    _openpose_from_coco(sample_dir, tmp_path)
    (tmp_path / "000000196141_keypoints.json").unlink()  # an image without a keypoint file
    (tmp_path / "000000040083_keypoints.json").write_text("{not json")  # a corrupt file
    every, problems = read_openpose(tmp_path, sample_dir)
    assert len(problems) == 2
    opened, parsed = [], []
    real_open, real_load = op.open_image, op.json.load
    monkeypatch.setattr(op, "open_image", lambda path, *a: opened.append(path.name) or real_open(path, *a))
    monkeypatch.setattr(op.json, "load", lambda f: parsed.append(Path(f.name).name) or real_load(f))
    first = "000000000785.jpg"
    some, problems = read_openpose(tmp_path, sample_dir, only=lambda key: key == first)
    assert opened == [first] and parsed == ["000000000785_keypoints.json"] and problems == []
    # (the corrupt file's image too: its file is not read here)
    assert sorted(r.image_key for r in some) == ["000000000785.jpg", "000000040083.jpg", "000000197388.jpg"]
    assert [len(r.people) for r in some if r.image_key == first] == [len(every[0].people)]
    assert not any(r.people for r in some if r.image_key != first)
    # the shard that owns them reports the corrupt file and the image without a file
    _, problems = read_openpose(tmp_path, sample_dir, only=lambda key: key != first)
    reasons = sorted(p.reason.split(":")[0] for p in problems)
    assert reasons == ["1 image has no keypoint file in " + str(tmp_path), "corrupt OpenPose JSON"]
    # a keypoint file without an image: one shard says so, not every one (a review)
    from fit3d.pipeline.selection import in_shard

    (tmp_path / "ghost_keypoints.json").write_text(json.dumps({"people": []}))
    said = [sum("no image named ghost" in p.reason for p in read_openpose(
        tmp_path, sample_dir, only=lambda key, i=i: in_shard(key, (i, 2)))[1]) for i in range(2)]
    assert sorted(said) == [0, 1]


def test_read_spin_opens_only_the_images_it_is_asked_for(tmp_path, sample_dir):
    from fit3d.data.spin import read_spin
    from fit3d.data.writers import write_npz

    part = np.zeros((4, 24, 3), np.float32)
    part[:, :, :2], part[:, :, 2] = 150.0 + np.arange(4)[:, None, None], 1.0
    names = ["gone.jpg", "000000000785.jpg", "gone.jpg", "000000000785.jpg"]
    write_npz(tmp_path / "s.npz", dict(imgname=np.asarray(names), center=np.full((4, 2), 200.0), scale=np.ones(4),
                                       part=part))
    images, problems = read_spin(tmp_path / "s.npz", sample_dir, only=lambda key: key == "000000000785.jpg")
    assert [(r.image_key, len(r.people)) for r in images] == [("gone.jpg", 0), ("000000000785.jpg", 2)]
    assert problems == []  # the missing image is the other shard's problem
    images, problems = read_spin(tmp_path / "s.npz", sample_dir, only=lambda key: key == "gone.jpg")
    assert [(r.image_key, len(r.people)) for r in images] == [("000000000785.jpg", 0)]
    assert [p.severity for p in problems] == ["error"] and "#0, #2" in problems[0].reason


def test_openpose_video_frame_names_get_a_hint(tmp_path, sample_dir):
    """OpenPose on a video writes <video>_000000000000_keypoints.json; frames extracted as
    frame_000001.jpg matched nothing, with no hint (a video trial)."""
    kp = tmp_path / "kp"
    kp.mkdir()
    (kp / "clip_000000000000_keypoints.json").write_text(json.dumps({"people": []}))
    (kp / "000000000785_keypoints.json").write_text(json.dumps({"people": []}))
    _, problems = read_openpose(kp, sample_dir)
    [video] = [p for p in problems if "clip_000000000000" in p.source]
    assert "ffmpeg -i clip.mp4 -start_number 0 clip_%012d.png" in video.reason
    assert not any("ffmpeg" in p.reason for p in problems if p is not video)


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
