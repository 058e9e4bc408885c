import shutil

import pytest

from fit3d.data.readers import discover_annotations, load_inputs
from tests.data._helpers import _openpose_from_coco


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
