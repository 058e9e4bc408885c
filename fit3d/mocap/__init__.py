"""Motion capture: CMU ASF/AMC and BVH readers, retargeting to a body model, pose-set preparation."""

from pathlib import Path


def bundled_pose_set() -> Path:
    """The CMU poses retargeted to anny that ship with fit3d (``fit3d prepare-mocap`` output)."""
    return Path(__file__).resolve().parents[1] / "assets" / "cmu_anny_poses.npz"
