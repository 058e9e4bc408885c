"""Inputs: keypoint conventions by name, the COCO / OpenPose / SPIN readers, batching for the
fitters and the atomic writers of the outputs."""
