import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fit3d.data.conventions import COCO17, OPENPOSE_BODY25, convert
from fit3d.data.openpose import read_openpose
from tests.data._helpers import _openpose_from_coco


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


def test_openpose_files_named_after_the_whole_image_name(tmp_path, sample_dir):
    """``a.jpg_keypoints.json`` / ``a.jpg.json`` (tools that keep the extension) were 'no image
    named a.jpg.*' for every file."""
    coco = _openpose_from_coco(sample_dir, tmp_path)
    for f in sorted(tmp_path.glob("*_keypoints.json")):
        stem = f.name[: -len("_keypoints.json")]
        f.rename(tmp_path / (f"{stem}.jpg_keypoints.json" if stem.endswith("5") else f"{stem}.jpg.json"))
    images, problems = read_openpose(tmp_path, sample_dir)
    assert not [x for x in problems if x.severity == "error"], problems
    assert not [x for x in problems if "no keypoint file" in x.reason], problems  # (found by a review: each was)
    assert sorted(r.image_key for r in images) == sorted(r.image_key for r in coco)
    assert sum(len(r.people) for r in images) == sum(len(r.people) for r in coco)


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


def test_an_openpose_person_written_nested_is_named_so(tmp_path, sample_dir):
    """A trial: pose_keypoints_2d as 25 [x, y, c] triples read "has 25 values; expected 75"."""
    kdir = tmp_path / "op"
    kdir.mkdir()
    people = [{"pose_keypoints_2d": [[100.0, 200.0, 0.9]] * 25}]
    (kdir / "000000000785_keypoints.json").write_text(json.dumps({"version": 1.3, "people": people}))
    images, problems = read_openpose(kdir, sample_dir)
    assert any("a nested list of 25 points: OpenPose writes them flat" in p.reason for p in problems)
