"""A mocap clip as named 3D points, whatever the source skeleton."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Points every reader provides (metres, the capture's world frame, Y up).
MOCAP_POINTS = (
    "pelvis", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_toe", "right_toe", "spine_top", "neck", "head", "head_top",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)  # fmt: skip

#: CMU lengths: ASF/BVH units are (1/0.45) inches.
CMU_UNIT_TO_M = 2.54 / 100.0 / 0.45


@dataclass
class MocapClip:
    """One trial.

    Attributes:
        name: trial id (``"01_01"``).
        subject: subject id (``"01"``).
        fps: frames per second.
        points: ``(F, P, 3)`` metres, in :data:`MOCAP_POINTS` order.
        rest: ``(P, 3)`` metres, the same points in the skeleton's rest pose (every joint rotation
            zero: the pose its calibration calls neutral; only directions are read), or None where
            the source does not define one. Retargeting matches the spine's and head's directions
            relative to it (:func:`fit3d.mocap.retarget.rest_offsets`).
    """

    name: str
    subject: str
    fps: float
    points: np.ndarray
    rest: np.ndarray | None = None

    def subsample(self, fps: float) -> "MocapClip":
        """Every ``round(self.fps / fps)``-th frame."""
        step = max(1, int(round(self.fps / fps)))
        return MocapClip(self.name, self.subject, self.fps / step, self.points[::step], self.rest)
