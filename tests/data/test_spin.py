import numpy as np
import pytest


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


def test_an_empty_npz_is_a_zip_without_spins_arrays(tmp_path):
    """A review: an empty .npz (a zip of no arrays, 'PK\\x05\\x06') was called 'not a zip archive'."""
    from fit3d.data.spin import load_spin_npz

    np.savez(tmp_path / "e.npz")
    with pytest.raises(ValueError, match="missing"):
        load_spin_npz(tmp_path / "e.npz")


def test_rows_naming_one_image_share_its_record_and_another_file_of_its_name_is_a_problem(tmp_path, sample_dir):
    """Found by a review: 'a.jpg', './a.jpg' and an absolute path were separate records writing one output
    (one replaced the other, unsaid), and repeated ids were not flagged."""
    import shutil

    from fit3d.data.spin import read_spin
    from fit3d.data.writers import write_npz

    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(sample_dir / "000000000785.jpg", other / "000000000785.jpg")
    names = ["000000000785.jpg", "./000000000785.jpg", str((sample_dir / "000000000785.jpg").resolve()),
             str(other / "000000000785.jpg")]
    part = np.zeros((4, 24, 3), np.float32)
    part[:, :, :2], part[:, :, 2] = np.random.default_rng(1).uniform(100, 300, (4, 24, 2)), 1.0
    write_npz(tmp_path / "s.npz", dict(imgname=np.asarray(names), center=np.full((4, 2), 200.0), scale=np.ones(4),
                                       part=part, annot_id=np.asarray([7, 7, 8, 9])))
    images, problems = read_spin(tmp_path / "s.npz", sample_dir)
    [record] = images
    assert record.image_key == "000000000785.jpg"
    assert [(p.annot_id, p.duplicate_id) for p in record.people] == [(7, True), (7, True), (8, False)]
    assert [p.source for p in problems if "another file" in p.reason] == [f"{tmp_path / 's.npz'}#3"]
