"""Helpers shared by the tests of fit3d.data's readers (tests/data/test_*.py)."""

import json

from fit3d.data.coco import read_coco
from fit3d.data.conventions import COCO17, OPENPOSE_BODY25, convert


def _openpose_from_coco(sample_dir, out_dir, layout=OPENPOSE_BODY25):
    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    for r in images:
        people = [
            {"person_id": [-1], "pose_keypoints_2d": convert(p.keypoints_2d, COCO17, layout).ravel().tolist()}
            for p in r.people
        ]
        (out_dir / (r.image_path.stem + "_keypoints.json")).write_text(json.dumps({"version": 1.3, "people": people}))
    return images
