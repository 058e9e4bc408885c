import math

import numpy as np
import pytest

from fit3d.data.batching import default_focal_length, make_batch
from fit3d.data.conventions import COCO17, COCO23
from fit3d.data.keypoints import sanitize_keypoints
from fit3d.data.readers import Person


def _person(kp, size=(640, 480)):
    return Person("a.jpg", None, size, 1, np.array([0, 0, 10, 10], np.float32), kp, COCO17)


def test_full_frame_camera_defaults():
    kp = np.ones((17, 3), np.float32)
    b = make_batch([_person(kp), _person(kp, (1000, 2000))], COCO23)
    assert b.focal_length[0, 0].item() == pytest.approx(800.0)
    assert b.focal_length[1, 1].item() == pytest.approx(math.sqrt(1000**2 + 2000**2))
    assert b.principal_point[1].tolist() == [500.0, 1000.0]
    assert default_focal_length(3, 4) == 5
    b = make_batch([_person(kp)], COCO23, focal_length=1234.0, principal_point=(1.0, 2.0))
    assert b.focal_length[0].tolist() == [1234.0, 1234.0] and b.principal_point[0].tolist() == [1.0, 2.0]


def test_an_unusable_camera_is_refused_with_the_person_named():
    """Found by a researcher's trial of the API: focal length 0 crashed the fit deep inside (an SVD
    of NaN), a negative one gave fits behind the camera marked valid, and 0 given was replaced by the
    default while the run's settings recorded 0."""
    from dataclasses import replace

    kp = np.ones((17, 3), np.float32)
    for bad in (0.0, -1500.0, float("nan")):
        with pytest.raises(ValueError, match=r"a.jpg \(id 1\).*focal length must be a finite number > 0"):
            make_batch([_person(kp)], COCO23, focal_length=bad)
    with pytest.raises(ValueError, match="focal length"):
        make_batch([_person(kp, (0, 0))], COCO23)  # the default of an image of size 0
    with pytest.raises(ValueError, match="focal length"):
        make_batch([replace(_person(kp), camera=((0.0, 0.0), (320.0, 240.0)))], COCO23)
    from fit3d.pipeline import RunConfig

    for bad in (0, -800.0, float("inf"), True):
        with pytest.raises(ValueError, match="focal_length must be"):
            RunConfig("out", focal_length=bad)
    # found by an audit: these were taken, and failed later or fitted the wrong images
    with pytest.raises(ValueError, match="one number"):
        make_batch([_person(kp)], COCO23, focal_length=(800.0, 800.0))
    for pp in ((1.0,), (1.0, 2.0, 3.0)):
        with pytest.raises(ValueError, match=r"\(cx, cy\)"):
            make_batch([_person(kp)], COCO23, principal_point=pp)
    for shard in ((3, 2), (-1, 2), (0, 0), (1,)):
        with pytest.raises(ValueError, match="shard must be"):
            RunConfig("out", shard=shard)
    with pytest.raises(ValueError, match="limit must be"):
        RunConfig("out", limit=-1)
    with pytest.raises(ValueError, match="min_visible must be"):
        RunConfig("out", min_visible=0)
    assert RunConfig("out", shard=[1, 3], limit=0).shard == (1, 3)


def test_batch_maps_to_model_convention_and_sanitizes_nan():
    kp = np.random.default_rng(0).uniform(10, 100, (17, 3)).astype(np.float32)
    kp[:, 2] = 1
    kp[3] = np.nan
    kp[4, :2] = np.nan  # labelled, no coordinates
    b = make_batch([_person(kp)], COCO23)
    assert b.keypoints_2d.shape == (1, 23, 3)
    assert b.keypoints_2d[0, 3, 2] == 0 and b.keypoints_2d[0, 4, 2] == 0 and np.isfinite(b.keypoints_2d.numpy()).all()
    assert (b.keypoints_2d[0, 17:, 2] == 0).all()  # feet absent from COCO-17
    clean, n_bad = sanitize_keypoints(kp)
    assert n_bad == 1  # row 4; row 3's confidence is NaN too: it claimed nothing


def test_empty_batch_raises():
    with pytest.raises(ValueError):
        make_batch([], COCO23)


@pytest.mark.parametrize("shape", [(17, 2), (51,), (1, 17, 3)])
def test_keypoints_of_another_shape_are_a_clear_error(shape):
    with pytest.raises(ValueError, match=r"must be \(K, 3\)"):
        make_batch([_person(np.ones(shape, np.float32))], COCO23)


def test_a_batch_for_a_model_is_cast_checked_and_not_empty(anny_model):
    import torch

    from fit3d.fitters.build import build_smplify

    kp = np.ones((17, 3), np.float32)
    b = make_batch([_person(kp)], anny_model.keypoint_convention, dtype=torch.float64)
    ready = b.for_model(anny_model)
    assert ready.keypoints_2d.dtype == anny_model.dtype == torch.float32 and ready.convention == b.convention
    with pytest.raises(ValueError, match="make_batch"):
        make_batch([_person(kp)], COCO17).for_model(anny_model)
    empty = b.index(torch.zeros(1, dtype=torch.bool))
    with pytest.raises(ValueError, match="empty batch"):
        empty.for_model(anny_model)
    with pytest.raises(ValueError, match="empty batch"):  # before: an IndexError deep in the optimiser
        build_smplify(anny_model, prior="l2")(empty)


@pytest.mark.parametrize("box", [None, [np.nan, 0, 10, 10], [5, 5, 0, 0], [900, 900, 10, 10]])
def test_an_unusable_box_is_rebuilt_from_the_keypoints_as_the_readers_do(box):
    kp = np.zeros((17, 3), np.float32)
    kp[:5] = [[100, 50, 1], [200, 250, 1], [150, 100, 1], [120, 60, 1], [180, 240, 1]]
    p = Person("a.jpg", None, (640, 480), 1, box, kp, COCO17)
    b = make_batch([p], COCO23)
    np.testing.assert_allclose(b.bbox[0].numpy(), [90, 30, 120, 240], atol=1e-4)  # the keypoints' box, padded 10 %
    good = Person("a.jpg", None, (640, 480), 1, np.array([10, 20, 300, 400], np.float32), kp, COCO17)
    assert make_batch([good], COCO23).bbox[0].tolist() == [10, 20, 300, 400]  # a usable box is kept


def test_a_box_written_as_corners_is_rebuilt_where_that_shows():
    """An input audit: [x1, y1, x2, y2] in COCO's [x, y, w, h] place was used as given (a box past
    the image, 2.3x the person's width: a shifted crop, a lenient validity test, a wrong SPIN centre)."""
    from fit3d.data.boxes import checked_bbox

    kp = np.zeros((17, 3), np.float32)
    kp[:5] = [[300, 60, 1], [480, 380, 1], [350, 100, 1], [320, 70, 1], [450, 360, 1]]
    box, note = checked_bbox([280.8, 44.7, 499.5, 391.4], kp, (640, 425))  # corners, on the image's right
    assert "as corners x1, y1, x2, y2" in note and box[0] < 300 and box[0] + box[2] < 640
    for ok in ([280.8, 44.7, 218.7, 346.7],  # the same box as COCO writes it
               [500, 100, 200, 300],  # past the edge (a truncated person's box), but no corners: x2 < x1
               [10, 10, 700, 400],  # past the edge, and as corners past it too
               [240, 10, 480, 480]):  # a padded square box (SPIN's centre / scale), as corners cutting the person
        assert checked_bbox(ok, kp, (640, 425))[1] == "", ok
    spin_kp = kp.copy()
    spin_kp[:5, 0] += 100  # (the person right of the corners' x2 = 480: a review's SPIN box)
    assert checked_bbox([240, 10, 480, 480], spin_kp, (640, 480))[1] == ""


def test_a_batch_whose_shapes_do_not_match_its_convention_is_refused(anny_model):
    """Found by a researcher's trial: a hand-built batch with 17 keypoints in a 23-keypoint
    convention raised a bare RuntimeError deep in the losses."""
    import torch

    from fit3d.data.batching import PersonBatch

    conv = anny_model.keypoint_convention
    ok = make_batch([_person(np.ones((17, 3), np.float32))], conv)
    assert ok.for_model(anny_model).keypoints_2d.shape == (1, len(conv), 3)
    short = PersonBatch(torch.zeros(1, 17, 3), ok.bbox, ok.focal_length, ok.principal_point, ok.image_size, conv)
    with pytest.raises(ValueError, match=r"keypoints_2d \(1, 17, 3\) \(expected \(1, 23, 3\)\)"):
        short.for_model(anny_model)


def test_a_hand_built_batch_with_a_negative_focal_length_or_image_size_is_refused(anny_model):
    """Found by a user's trial of the API: a hand-built batch with focal length -800 was fitted
    upside down behind the camera by SMPLify and marked valid (make_batch refused it already)."""
    import dataclasses

    conv = anny_model.keypoint_convention
    ok = make_batch([_person(np.ones((17, 3), np.float32))] * 2, conv)
    for field, bad in (("focal_length", -800.0), ("focal_length", 0.0), ("image_size", -640.0)):
        values = getattr(ok, field).clone()
        values[1] = bad
        with pytest.raises(ValueError, match=rf"{field} out of range .* for people \[1\]"):
            dataclasses.replace(ok, **{field: values}).for_model(anny_model)
    unknown = ok.image_size.clone()
    unknown[1] = 0.0  # (0 x 0: an image not opened, its camera given)
    assert dataclasses.replace(ok, image_size=unknown).for_model(anny_model).image_size[1].tolist() == [0.0, 0.0]


def test_the_camera_error_names_what_is_wrong():
    """A user's trial: a NaN principal point was reported as 'the focal length must be a finite number > 0'."""
    kp = np.ones((17, 3), np.float32)
    with pytest.raises(ValueError, match="principal point must be finite") as e:
        make_batch([_person(kp)], COCO23, principal_point=(float("nan"), 1.0))
    assert "focal length must" not in str(e.value)
    with pytest.raises(ValueError, match=r"image size must be finite numbers >= 0"):
        make_batch([_person(kp, (-640, 480))], COCO23, focal_length=800.0)
    from dataclasses import replace  # a review: an image of unknown size (0 x 0) with its camera given is fitted
    known = replace(_person(kp, (0, 0)), camera=((1000.0, 1000.0), (320.0, 240.0)))
    assert make_batch([known], COCO23).focal_length[0].tolist() == [1000.0, 1000.0]


def test_a_hand_built_batch_with_nan_keypoints_reads_them_as_unlabelled(anny_model):
    """Found by a researcher's trial: NaN coordinates in a hand-built batch reached the fit and
    failed every person of the batch in an SVD; a NaN box the same."""
    import dataclasses

    import torch

    conv = anny_model.keypoint_convention
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(100, 300, (17, 2)), np.ones((17, 1))], 1).astype(np.float32)
    batch = make_batch([_person(kp), _person(kp)], conv)
    k = batch.keypoints_2d.clone()
    k[0, 3:8, :2], k[1, 2, 2] = float("nan"), float("nan")
    out = dataclasses.replace(batch, keypoints_2d=k).for_model(anny_model)
    assert torch.isfinite(out.keypoints_2d).all()
    assert (out.keypoints_2d[0, 3:8] == 0).all() and (out.keypoints_2d[1, 2] == 0).all()
    assert torch.equal(out.keypoints_2d[0, 8:], batch.keypoints_2d[0, 8:])
    box = batch.bbox.clone()
    box[1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite bbox for people \[1\]"):
        dataclasses.replace(batch, bbox=box).for_model(anny_model)


@pytest.mark.parametrize("fitter", ["smplify", "eft"])
def test_a_fitter_given_no_batch_says_how_to_make_one(anny_model, fitter):
    """A list of people given to a fitter raised AttributeError: 'list' object has no attribute
    'for_model' (a researcher's trial)."""
    from fit3d.fitters.build import build_eft, build_smplify

    fit = build_smplify(anny_model) if fitter == "smplify" else build_eft(anny_model)
    with pytest.raises(TypeError, match="fitters take a PersonBatch, not a list: build one with .*make_batch"):
        fit([_person(np.ones((17, 3), np.float32))])


def test_hand_built_batches_are_taken_as_make_batch_gives_them(anny_model):
    """A notebook trial: integer keypoints failed in torch.finfo, keypoints carrying a gradient (a 2D
    network's output) failed EFT's backward the second time, numpy fields had no .to, COCO's
    visibility 2 weighed a point twice."""
    from dataclasses import replace

    import torch

    from fit3d.data.batching import PersonBatch

    conv = anny_model.keypoint_convention
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0], kp[:, 1], kp[:, 2] = np.linspace(200, 300, 17), np.linspace(100, 400, 17), 1.0
    batch = make_batch([Person("a.jpg", None, (640, 480), 1, None, kp, COCO17)], conv)
    ref = batch.for_model(anny_model)
    as_int = replace(batch, keypoints_2d=batch.keypoints_2d.round().long()).for_model(anny_model)
    assert as_int.keypoints_2d.dtype == anny_model.dtype
    assert torch.equal(as_int.keypoints_2d, ref.keypoints_2d.round())
    grad = batch.keypoints_2d.clone().requires_grad_(True)
    assert not replace(batch, keypoints_2d=grad).for_model(anny_model).keypoints_2d.requires_grad
    as_numpy = PersonBatch(*(getattr(batch, k).numpy() for k in ("keypoints_2d", "bbox", "focal_length",
                                                                 "principal_point", "image_size")), batch.convention)
    assert torch.equal(as_numpy.for_model(anny_model).keypoints_2d, ref.keypoints_2d)
    twos = batch.keypoints_2d.clone()
    twos[..., 2] *= 2  # COCO's flag 2 ("visible") put in by hand
    assert torch.equal(replace(batch, keypoints_2d=twos).for_model(anny_model).keypoints_2d, ref.keypoints_2d)
    with pytest.raises(TypeError, match="PersonBatch.bbox is a str"):
        replace(batch, bbox="wide").for_model(anny_model)


def test_one_person_given_to_make_batch_is_named(anny_model):
    kp = np.ones((17, 3), np.float32)
    with pytest.raises(TypeError, match=r"make_batch\(\[person\], convention\)"):
        make_batch(Person("a.jpg", None, (640, 480), 1, None, kp, COCO17), anny_model.keypoint_convention)
