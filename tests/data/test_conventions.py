import numpy as np
import pytest

from fit3d.data.conventions import (COCO17, COCO23, OPENPOSE_BODY25, OPENPOSE_COCO18, KeypointConvention, convert,
                                    get_convention, index_map, union_convention)


def test_conventions_have_unique_names_and_expected_sizes():
    for conv, k in ((COCO17, 17), (COCO23, 23), (OPENPOSE_BODY25, 25), (OPENPOSE_COCO18, 18)):
        assert len(conv) == k
        assert len(set(conv.names)) == k


def test_index_map_matches_by_name_not_position():
    s, d = index_map(OPENPOSE_BODY25, COCO17)
    assert len(s) == 17  # every COCO-17 point exists in BODY_25
    for i, j in zip(s, d):
        assert OPENPOSE_BODY25.names[i] == COCO17.names[j]
    # BODY_25 index 2 is the right shoulder, COCO index 6
    assert COCO17.names[d[list(s).index(2)]] == "right_shoulder"


def test_convert_fills_missing_with_zero_confidence():
    kp = np.arange(17 * 3, dtype=np.float32).reshape(17, 3) + 1
    out = convert(kp, COCO17, OPENPOSE_BODY25)
    assert out.shape == (25, 3)
    assert np.all(out[OPENPOSE_BODY25.index("neck")] == 0)
    np.testing.assert_array_equal(out[OPENPOSE_BODY25.index("left_knee")], kp[COCO17.index("left_knee")])
    back = convert(out, OPENPOSE_BODY25, COCO17)
    np.testing.assert_array_equal(back, kp)


def test_convert_rejects_wrong_size_and_unknown_names():
    with pytest.raises(ValueError):
        convert(np.zeros((18, 3)), COCO17, COCO23)
    with pytest.raises(KeyError):
        get_convention("h36m_99")
    with pytest.raises(KeyError):
        COCO17.index("neck")


def test_union_of_layouts_does_not_depend_on_their_order():
    assert union_convention([OPENPOSE_COCO18, OPENPOSE_BODY25]) is OPENPOSE_BODY25  # a superset is kept whole
    assert union_convention([OPENPOSE_BODY25, OPENPOSE_COCO18, OPENPOSE_BODY25]) is OPENPOSE_BODY25
    assert union_convention([COCO17]) is COCO17
    l8 = KeypointConvention("l8", ("nose", "neck", "left_hip", "right_hip"))
    a, b = union_convention([COCO17, l8]), union_convention([l8, COCO17])
    assert a == b and a.names == COCO17.names + ("neck",)  # the largest layout first, then what the others add
    with pytest.raises(ValueError):
        union_convention([])


@pytest.mark.parametrize("spelling, name", [
    ("LShoulder", "left_shoulder"), ("RBigToe", "right_big_toe"), ("l_shoulder", "left_shoulder"),
    ("Left Shoulder", "left_shoulder"), ("r ankle", "right_ankle"), ("left_shoulder", "left_shoulder"),
    ("LEFT_SHOULDER", "left_shoulder"), ("RIGHT_HIP", "right_hip"), ("L_SHOULDER", "left_shoulder"),  # all caps
    ("LEar", "left_ear"), ("MidHip", "mid_hip"), ("NOSE", "nose"),
    ("LHIP", "left_hip"), ("RSHOULDER", "right_shoulder"), ("LBIGTOE", "left_big_toe"), ("REAR", "right_ear"),
    ("ROOT", "pelvis"),  # a leading R that is no side (a review)
    ("left_foot_index", "left_big_toe"), ("RIGHT_FOOT_INDEX", "right_big_toe"),  # BlazePose (MediaPipe Pose)
])
def test_every_spelling_of_a_keypoint_name_is_read_alike(spelling, name):
    """All-caps names (MediaPipe's PoseLandmark: LEFT_SHOULDER) read as OpenPose's LShoulder
    gave left_eft_shoulder, and every person of such a file was skipped."""
    from fit3d.data.conventions import canonical_keypoint_name, convention_from_names

    assert canonical_keypoint_name(spelling) == name
    assert convention_from_names([n.upper() for n in COCO17.names]) is COCO17


def test_spin24_is_spins_published_joint_order():
    """SPIN's 24 ground-truth joints (``constants.JOINT_NAMES[25:]`` in SPIN's code: LSP's 14, then
    MPII's pelvis and thorax, H36M's spine, jaw and head, the face). The readers and exporters use
    ``SPIN24.index(name)``, so a swap in the table would pass their round trips and train every SPIN
    export on the wrong side (a mutation check)."""
    from fit3d.data.conventions import SPIN24

    assert SPIN24.names == (
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
        "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck_lsp", "head_top",
        "pelvis_mpii", "thorax_mpii", "spine_h36m", "jaw_h36m", "head_h36m", "nose", "left_eye", "right_eye",
        "left_ear", "right_ear")  # fmt: skip


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
