"""The regressor interface and the full-frame camera of CLIFF."""

from __future__ import annotations

import torch
from torch import nn

from fit3d.data.batching import PersonBatch
from fit3d.data.boxes import KEYPOINT_BOX_PAD
from fit3d.geometry import keypoint_extent


def crop_cam_to_transl(cam: torch.Tensor, bbox: torch.Tensor, focal_length: torch.Tensor,
                       principal_point: torch.Tensor) -> torch.Tensor:
    """CLIFF's conversion (Li et al., ECCV 2022) of a crop camera to a full-frame root translation.

    ``cam = (s, tx, ty)``: the body seen in the square crop around the box
    (side ``b = max(w, h)``, centre ``c``) under weak perspective, in crop units
    ``[-1, 1]``. With a full-frame focal ``f``: ``z = 2 f / (b s)``,
    ``x = tx + 2 (c_x - p_x) / (b s)``, ``y = ty + 2 (c_y - p_y) / (b s)``.

    Args:
        cam: ``(B, 3)``. bbox: ``(B, 4)`` ``x, y, w, h`` px. focal_length: ``(B, 2)``. principal_point: ``(B, 2)``.
    Returns:
        ``(B, 3)`` metres, the root's camera-frame position.
    """
    b = bbox[:, 2:].max(-1).values.clamp(min=1.0)
    c = bbox[:, :2] + 0.5 * bbox[:, 2:]
    s = cam[:, 0].clamp(min=1e-3)
    bs = b * s
    z = 2 * focal_length.mean(-1) / bs
    xy = cam[:, 1:] + 2 * (c - principal_point) / bs[:, None]
    return torch.cat([xy, z[:, None]], -1)


#: The regressor's box around a person's labelled keypoints grows by this share of its size on every side:
#: :data:`fit3d.data.boxes.KEYPOINT_BOX_PAD`, as the synthetic people it trains on are boxed
#: (:func:`fit3d.training.synthetic.make_people`).
REGRESSOR_BOX_PAD = KEYPOINT_BOX_PAD


def regressor_box(batch: PersonBatch) -> torch.Tensor:
    """``(B, 4)`` ``x, y, w, h`` pixels: the box a keypoint regressor reads a person in, the labelled
    keypoints' (confidence > 0) box grown by :data:`REGRESSOR_BOX_PAD` on every side, as in its
    training, whatever box the input gave (``batch.bbox``: an annotation's box around the whole
    silhouette, a detector's, which the network never saw; kept where no point is labelled).
    On COCO's annotated people the two differ by 13-46 % in size for a quarter of them; using the
    given box cost the regressor 0.8 mm PA-MPJPE-12 on synthetic people boxed by their silhouette,
    and 1.1-1.4 px of reprojection on ``coco_mini`` (``docs/experiments.md``, twenty-eighth session)."""
    kp = batch.keypoints_2d
    labelled = (kp[..., 2] > 0) & torch.isfinite(kp[..., :2]).all(-1)
    lo, hi = keypoint_extent(kp[..., :2], labelled)
    size = hi - lo
    box = torch.cat([lo - REGRESSOR_BOX_PAD * size, size * (1 + 2 * REGRESSOR_BOX_PAD)], -1)
    return torch.where(labelled.any(-1, keepdim=True), box, batch.bbox)


class Regressor(nn.Module):
    """Base class: ``features(batch)`` then ``forward(features)``.

    ``forward`` returns ``global_orient (B, 3)``, ``body_pose (B, J, 3)`` axis-angle,
    ``betas (B, S)`` and ``cam (B, 3)`` (see :func:`crop_cam_to_transl`).
    """

    num_joints: int
    num_betas: int

    def features(self, batch: PersonBatch) -> torch.Tensor:
        """``(B, F)`` network inputs of a batch (B people); subclasses define F.

        Raises:
            NotImplementedError: in this base class.
        """
        raise NotImplementedError

    def predict(self, batch: PersonBatch) -> dict[str, torch.Tensor]:
        """The regressed parameters of a batch of B people, with their full-frame position.

        Returns:
            ``global_orient (B, 3)`` and ``body_pose (B, J, 3)`` axis-angle, ``betas (B, S)``,
            ``cam (B, 3)`` the weak-perspective crop camera and ``transl (B, 3)`` metres in the
            photo's OpenCV camera frame (:func:`crop_cam_to_transl`), as the network's forward
            gives them (with their graph)."""
        out = self(self.features(batch))
        out["transl"] = crop_cam_to_transl(out["cam"], regressor_box(batch), batch.focal_length, batch.principal_point)
        return out
