import numpy as np
import pytest

from fit3d.data.conventions import COCO17, MPII16, OPENPOSE_BODY25, KeypointConvention
from fit3d.export.human_data_keypoints import BY_DATASET, HUMAN_DATA, human_data_names, to_human_data


def test_table_is_consistent():
    assert len(HUMAN_DATA) == 190 and len(set(HUMAN_DATA)) == 190
    for names, hd in BY_DATASET.items():
        assert len(names) == len(hd) and len(set(hd)) == len(hd) and set(hd) <= set(HUMAN_DATA)


@pytest.mark.parametrize("convention, point, hd_name", [
    (COCO17, "left_hip", "left_hip_extra"), (COCO17, "nose", "nose"), (MPII16, "head_top", "headtop"),
    (MPII16, "upper_neck", "neck_extra"), (OPENPOSE_BODY25, "mid_hip", "pelvis_openpose"),
])
def test_points_land_where_mmhuman3d_puts_them(convention, point, hd_name):
    kp = np.random.default_rng(0).uniform(0, 100, (2, len(convention), 3)).astype(np.float32)
    out, mask, dropped = to_human_data(kp, convention)
    j = HUMAN_DATA.index(hd_name)
    assert np.array_equal(out[:, j], kp[:, convention.names.index(point)]) and mask[j] == 1
    assert mask.sum() == len(convention) and not dropped
    assert (out[:, mask == 0] == 0).all()


def test_spin_joints_and_unlabelled_points():
    from fit3d.data.conventions import SPIN24

    kp = np.ones((1, 24, 3), np.float32)
    kp[0, 0] = [np.nan, np.nan, 0.0]  # an unlabelled point
    kp[0, 1] = [np.nan, np.nan, 1.0]  # a "labelled" point without coordinates: unlabelled, not seen at (0, 0)
    out, mask, dropped = to_human_data(kp, SPIN24)
    assert not dropped and mask.sum() == 24 and np.isfinite(out).all()
    assert (out[0, HUMAN_DATA.index(human_data_names(SPIN24)[1])] == 0).all()
    assert mask[HUMAN_DATA.index("neck_extra")] == 1 and mask[HUMAN_DATA.index("head_extra")] == 1


def test_other_layouts_by_name_and_unknown_points_reported():
    conv = KeypointConvention("custom", ("nose", "left_hip", "left_big_toe", "belly_button"))
    kp = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    out, mask, dropped = to_human_data(kp, conv)
    assert dropped == ["belly_button"] and mask.sum() == 3
    assert np.array_equal(out[:, HUMAN_DATA.index("left_bigtoe")], kp[:, 2])
    with pytest.raises(ValueError, match="not"):
        to_human_data(kp[:, :3], conv)


def test_every_dataset_table_names_each_point_as_itself():
    """Each layout's table gives every point mmhuman3d's name of the same point: the name itself up to
    mmhuman3d's suffixes and spellings (``_openpose``, ``_extra``, ``bigtoe``, ``headtop``) and three
    documented renames (a mutation check: swapping two knees passed the spot checks above)."""
    renames = {("head_top", "head"), ("upper_neck", "neck_extra"), ("mid_hip", "pelvis_openpose")}

    def plain(n: str) -> str:
        for suffix in ("_openpose", "_extra"):
            n = n.replace(suffix, "")
        return n.replace("bigtoe", "big_toe").replace("smalltoe", "small_toe").replace("headtop", "head_top")

    for names, hd in BY_DATASET.items():
        for ours, theirs in zip(names, hd):
            assert plain(theirs) == ours or (ours, theirs) in renames, (ours, theirs)


def test_a_spin_files_detections_go_to_openpose_places_and_nothing_is_overwritten():
    """Found by a review: a SPIN file's detected neck and mid hip took the places of the annotated neck
    (LSP's) and pelvis (MPII's) and were then overwritten by those, unlabelled: lost without a word."""
    from fit3d.data.conventions import SPIN_OPENPOSE

    kp = np.zeros((1, len(SPIN_OPENPOSE), 3), np.float32)
    kp[0, SPIN_OPENPOSE.names.index("neck")] = [100, 50, 0.9]
    kp[0, SPIN_OPENPOSE.names.index("mid_hip")] = [100, 150, 0.8]
    kp[0, SPIN_OPENPOSE.names.index("left_big_toe")] = [90, 300, 0.7]
    out, mask, dropped = to_human_data(kp, SPIN_OPENPOSE)
    for name, value in (("neck_openpose", [100, 50, 0.9]), ("pelvis_openpose", [100, 150, 0.8]),
                        ("left_bigtoe_openpose", [90, 300, 0.7])):
        np.testing.assert_allclose(out[0, HUMAN_DATA.index(name)], value)
    assert not dropped and mask.sum() == len(SPIN_OPENPOSE)
    # a layout with two points of one place: the second is reported, not written over the first
    conv = KeypointConvention("two_necks", ("nose", "neck", "upper_neck"))
    out, mask, dropped = to_human_data(np.array([[[1, 1, 1], [5, 5, 1], [6, 6, 1]]], np.float32), conv)
    assert dropped == ["upper_neck"] and out[0, HUMAN_DATA.index("neck_extra")].tolist() == [5, 5, 1]
