import numpy as np
import pytest

from fit3d.data.conventions import COCO17
from fit3d.data.readers import read_coco


def test_layout_problems_warn_once_per_layout_and_shorten_long_name_lists(sample_dir, anny_model):
    """One warning per layout that names points the model lacks; COCO-WholeBody's 116 extra
    names made a 1,480-character line (found by a trial): the first ones and how many more."""
    from dataclasses import replace

    from fit3d.data.conventions import KeypointConvention
    from fit3d.pipeline.skips import layout_problems

    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    big = KeypointConvention("big", COCO17.names + tuple(f"face_{i}" for i in range(68)))
    p = images[0].people[0]
    wide = replace(p, convention=big, keypoints_2d=np.zeros((len(big), 3), np.float32))
    images[0].people = [wide, p, replace(wide, annot_id=99)]
    [w] = layout_problems(images, anny_model.keypoint_convention)
    assert w.severity == "warning" and w.source == "keypoint layout 'big'"
    assert "17 of 85 keypoints used; ignored (unknown to the model): face_0, face_1" in w.reason
    assert w.reason.endswith("face_11 and 56 more") and len(w.reason) < 300
    alien = KeypointConvention("alien", ("antenna_tip", "tail"))
    images[1].people = [replace(p, convention=alien, keypoints_2d=np.zeros((2, 3), np.float32))]
    with pytest.raises(ValueError, match="'alien' keypoints .* share no name"):
        layout_problems(images, anny_model.keypoint_convention)



def test_keypoints_on_a_line_with_a_little_jitter_are_degenerate_and_a_side_view_is_not(sample_dir, anny_model):
    """A trial: 17 points on a 380 px line with 0.8 px of jitter passed the 0.5 px absolute test and
    were fitted as a valid person; the spread across the line is now also compared with the spread
    along it (2 %). A person seen from the side, narrow but real, is fitted."""
    from dataclasses import replace

    from fit3d.pipeline.skips import skip_reason

    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    p = max((p for r in images for p in r.people), key=lambda p: p.num_visible)
    kp = p.keypoints_2d.copy()
    on = kp[:, 2] > 0
    rng = np.random.default_rng(0)
    line = kp.copy()
    line[on, 0] = 300.0 + 0.8 * rng.standard_normal(on.sum())
    line[on, 1] = np.linspace(0, 380, on.sum())
    reason = skip_reason(replace(p, keypoints_2d=line), anny_model.keypoint_convention)
    assert reason.startswith("degenerate keypoints: all on one point or line") and "2%" in reason
    side = line.copy()
    side[on, 0] = 300.0 + 0.05 * 110 * rng.standard_normal(on.sum())  # 5 % across: the narrowest real people
    assert skip_reason(replace(p, keypoints_2d=side), anny_model.keypoint_convention) is None
    assert skip_reason(p, anny_model.keypoint_convention) is None


def test_a_person_with_an_unusable_camera_is_skipped_with_the_reason_and_the_rest_is_fitted(
        tmp_path, sample_copy, anny_model, fast_fitter):
    """Found by a user's trial of the API: a hand-built person with a negative focal length failed
    its whole image on every run (its good neighbours fitted, never written: exit 5 each time)."""
    from dataclasses import replace

    from fit3d.data.writers import read_fit
    from fit3d.pipeline import RunConfig, run
    from fit3d.pipeline.skips import skip_reason

    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    img = next(r for r in images if sum(skip_reason(p, anny_model.keypoint_convention) is None for p in r.people) >= 2)
    fittable = [p for p in img.people if skip_reason(p, anny_model.keypoint_convention) is None]
    bad = replace(fittable[0], camera=((-800.0, -800.0), (320.0, 240.0)))
    reason = skip_reason(bad, anny_model.keypoint_convention)
    assert reason.startswith("unusable camera:") and "focal length must be a finite number > 0" in reason
    assert skip_reason(bad, anny_model.keypoint_convention, focal_length=1000.0) is None  # the run's own focal
    img.people = [bad if p is fittable[0] else p for p in img.people]
    s = run([img], fast_fitter, anny_model, RunConfig(tmp_path / "fits", progress=False))["this_run"]
    assert s["exit_code"] == 0 and s["people_failed"] == 0 and s["people_fitted"] == len(fittable) - 1
    fit = read_fit(tmp_path / "fits" / f"{img.image_key}.npz")
    row = list(fit["annot_id"]).index(bad.annot_id)
    assert str(fit["skip_reason"][row]).startswith("unusable camera")
