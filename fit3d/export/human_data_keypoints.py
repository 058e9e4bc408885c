"""mmhuman3d's ``human_data`` keypoint convention: the 190-point layout in which HumanData
stores ``keypoints2d`` (mmhuman3d ``core/conventions/keypoints_mapping/human_data.py``;
its training datasets convert from it with ``convert_kps(..., src='human_data')``).

Annotated keypoints are placed by the names mmhuman3d's own converters give each
dataset's points (``coco.py``, ``coco_wholebody.py``, ``crowdpose.py``, ``mpii.py``,
``openpose.py`` there), so a fit3d export lines up with mmhuman3d's converted copy of the
same dataset: COCO's annotated hips are ``left_hip_extra`` (not the SMPL hip joint),
MPII's neck is ``neck_extra``, OpenPose's BODY_25 points carry ``_openpose``. Other layouts
(OpenPose's BODY_25B among them: no mmhuman3d converter reads it) are placed point by point by
fit3d's keypoint names (:data:`BY_NAME`), as annotations' are.
"""

from __future__ import annotations

import numpy as np

from fit3d.data.conventions import (COCO17, COCO23, CROWDPOSE14, MPII16, OPENPOSE_BODY25, SPIN_DETECTED_ONLY,
                                   SPIN_OPENPOSE, KeypointConvention)
from fit3d.data.keypoints import unlabel_unusable

#: The 190 ``human_data`` names, in mmhuman3d's order.
HUMAN_DATA: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine_1", "left_knee", "right_knee", "spine_2", "left_ankle", "right_ankle",
    "spine_3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "jaw", "left_eyeball",
    "right_eyeball", "left_index_1", "left_index_2", "left_index_3", "left_middle_1", "left_middle_2",
    "left_middle_3", "left_pinky_1", "left_pinky_2", "left_pinky_3", "left_ring_1", "left_ring_2", "left_ring_3",
    "left_thumb_1", "left_thumb_2", "left_thumb_3", "right_index_1", "right_index_2", "right_index_3",
    "right_middle_1", "right_middle_2", "right_middle_3", "right_pinky_1", "right_pinky_2", "right_pinky_3",
    "right_ring_1", "right_ring_2", "right_ring_3", "right_thumb_1", "right_thumb_2", "right_thumb_3", "nose",
    "right_eye", "left_eye", "right_ear", "left_ear", "left_bigtoe", "left_smalltoe", "left_heel", "right_bigtoe",
    "right_smalltoe", "right_heel", "left_thumb", "left_index", "left_middle", "left_ring", "left_pinky",
    "right_thumb", "right_index", "right_middle", "right_ring", "right_pinky", "right_eyebrow_1", "right_eyebrow_2",
    "right_eyebrow_3", "right_eyebrow_4", "right_eyebrow_5", "left_eyebrow_5", "left_eyebrow_4", "left_eyebrow_3",
    "left_eyebrow_2", "left_eyebrow_1", "nosebridge_1", "nosebridge_2", "nosebridge_3", "nosebridge_4",
    "right_nose_2", "right_nose_1", "nose_middle", "left_nose_1", "left_nose_2", "right_eye_1", "right_eye_2",
    "right_eye_3", "right_eye_4", "right_eye_5", "right_eye_6", "left_eye_4", "left_eye_3", "left_eye_2",
    "left_eye_1", "left_eye_6", "left_eye_5", "right_mouth_1", "right_mouth_2", "right_mouth_3", "mouth_top",
    "left_mouth_3", "left_mouth_2", "left_mouth_1", "left_mouth_5", "left_mouth_4", "mouth_bottom", "right_mouth_4",
    "right_mouth_5", "right_lip_1", "right_lip_2", "lip_top", "left_lip_2", "left_lip_1", "left_lip_3",
    "lip_bottom", "right_lip_3", "right_contour_1", "right_contour_2", "right_contour_3", "right_contour_4",
    "right_contour_5", "right_contour_6", "right_contour_7", "right_contour_8", "contour_middle", "left_contour_8",
    "left_contour_7", "left_contour_6", "left_contour_5", "left_contour_4", "left_contour_3", "left_contour_2",
    "left_contour_1", "right_hip_extra", "left_hip_extra", "neck_extra", "headtop", "pelvis_extra", "thorax_extra",
    "spine_extra", "jaw_extra", "head_extra", "nose_openpose", "neck_openpose", "right_shoulder_openpose",
    "right_elbow_openpose", "right_wrist_openpose", "left_shoulder_openpose", "left_elbow_openpose",
    "left_wrist_openpose", "pelvis_openpose", "right_hip_openpose", "right_knee_openpose", "right_ankle_openpose",
    "left_hip_openpose", "left_knee_openpose", "left_ankle_openpose", "right_eye_openpose", "left_eye_openpose",
    "right_ear_openpose", "left_ear_openpose", "left_bigtoe_openpose", "left_smalltoe_openpose",
    "left_heel_openpose", "right_bigtoe_openpose", "right_smalltoe_openpose", "right_heel_openpose", "spine_4_3dhp",
    "left_clavicle_3dhp", "right_clavicle_3dhp", "left_hand_3dhp", "right_hand_3dhp", "left_toe_3dhp",
    "right_toe_3dhp", "head_h36m", "headtop_h36m", "head_bottom_pt", "left_hand", "right_hand"
)

_COCO = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
         "right_elbow", "left_wrist", "right_wrist", "left_hip_extra", "right_hip_extra", "left_knee", "right_knee",
         "left_ankle", "right_ankle")
_FEET = ("left_bigtoe", "left_smalltoe", "left_heel", "right_bigtoe", "right_smalltoe", "right_heel")

#: fit3d layout (by its point names) -> mmhuman3d's names of the same points, in that layout's order.
BY_DATASET: dict[tuple[str, ...], tuple[str, ...]] = {
    COCO17.names: _COCO,
    COCO23.names: (*_COCO[:11], "left_hip", "right_hip", *_COCO[13:], *_FEET),  # mmhuman3d's coco_wholebody
    CROWDPOSE14.names: ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck"),
    MPII16.names: ("right_ankle", "right_knee", "right_hip_extra", "left_hip_extra", "left_knee", "left_ankle",
                   "pelvis_extra", "thorax_extra", "neck_extra", "headtop", "right_wrist", "right_elbow",
                   "right_shoulder", "left_shoulder", "left_elbow", "left_wrist"),
    OPENPOSE_BODY25.names: tuple(f"{n}_openpose" for n in (
        "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
        "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
        "left_eye", "right_ear", "left_ear", "left_bigtoe", "left_smalltoe", "left_heel", "right_bigtoe",
        "right_smalltoe", "right_heel")),
}

#: fit3d keypoint name -> ``human_data`` name for other layouts (annotated, COCO-like points);
#: names not listed map to themselves when ``human_data`` has them.
BY_NAME: dict[str, str] = {
    "left_hip": "left_hip_extra", "right_hip": "right_hip_extra", "head_top": "headtop", "upper_neck": "neck_extra",
    "neck": "neck_extra", "thorax": "thorax_extra", "pelvis": "pelvis_extra", "mid_hip": "pelvis_extra",
    "left_big_toe": "left_bigtoe", "left_small_toe": "left_smalltoe", "right_big_toe": "right_bigtoe",
    "right_small_toe": "right_smalltoe",
    # SPIN's 24 joints, as mmhuman3d's smpl_54 names them
    "neck_lsp": "neck_extra", "pelvis_mpii": "pelvis_extra", "thorax_mpii": "thorax_extra",
    "spine_h36m": "spine_extra", "jaw_h36m": "jaw_extra", "head_h36m": "head_extra",
}


def human_data_names(convention: KeypointConvention) -> list[str | None]:
    """Each point of ``convention`` -> its ``human_data`` name (None: human_data has no such point).
    A SPIN file's OpenPose detections (:data:`~fit3d.data.conventions.SPIN_DETECTED_ONLY`: the neck,
    mid hip and feet SPIN-24 has no place for) go to the ``*_openpose`` places, as mmhuman3d's SPIN
    converter puts them (the neck and mid hip took the annotated neck's and pelvis' places before)."""
    known = BY_DATASET.get(tuple(convention.names))
    if known is not None:
        return list(known)
    index = set(HUMAN_DATA)
    detected = dict(zip(OPENPOSE_BODY25.names, BY_DATASET[OPENPOSE_BODY25.names]))
    out = []
    for n in convention.names:
        m = detected[n] if convention.names == SPIN_OPENPOSE.names and n in SPIN_DETECTED_ONLY else BY_NAME.get(n, n)
        out.append(m if m in index else None)
    return out


def to_human_data(keypoints_2d: np.ndarray, convention: KeypointConvention) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Keypoints ``(N, K, 3)`` (x, y, confidence; px) in ``convention`` -> ``human_data``.

    Returns:
        ``(keypoints2d (N, 190, 3), keypoints2d_mask (190,) uint8, names of the input points
        that human_data has no place for, or whose place an earlier point of ``convention`` took
        (e.g. ``upper_neck`` beside ``neck``)``; points without a source are zeros, mask 0;
        a point with a non-finite value, beyond :data:`~fit3d.data.keypoints.MAX_KEYPOINT_PX` or at
        the placeholder ``(0, 0)`` becomes ``(0, 0, 0)``, unlabelled, so that no NaN and no point at
        the image origin marked as seen reaches a loss.
    Raises:
        ValueError: ``keypoints_2d`` does not have ``len(convention)`` points.
    """
    keypoints_2d = np.asarray(keypoints_2d, dtype=np.float32)
    if keypoints_2d.ndim != 3 or keypoints_2d.shape[1] != len(convention):
        raise ValueError(f"keypoints of shape {keypoints_2d.shape} are not (N, {len(convention)}, 3)")
    keypoints_2d = unlabel_unusable(keypoints_2d, clip_confidence=False)[0]  # unusable points: (0, 0, 0)
    out = np.zeros((keypoints_2d.shape[0], len(HUMAN_DATA), 3), np.float32)
    mask = np.zeros(len(HUMAN_DATA), np.uint8)
    dropped = []
    for k, name in enumerate(human_data_names(convention)):
        if name is None:
            dropped.append(convention.names[k])
            continue
        j = HUMAN_DATA.index(name)
        if mask[j]:  # (never overwritten: the second point is named as not placed)
            dropped.append(convention.names[k])
            continue
        out[:, j] = keypoints_2d[:, k]
        mask[j] = 1
    return out, mask, dropped
