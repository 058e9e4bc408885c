"""Motion capture: CMU ASF/AMC and BVH readers, retargeting to a body model, pose-set preparation."""

from pathlib import Path


def bundled_pose_set() -> Path:
    """The CMU poses retargeted to anny that ship with fit3d (``fit3d prepare-mocap`` output;
    :func:`fit3d.body_models.weights.bundled_weights`)."""
    from fit3d.body_models.weights import bundled_weights

    return bundled_weights("pose_set", "anny")
