"""Fuzzing the COCO reader (hypothesis): whatever a JSON file holds, read_coco either
refuses the file with a ValueError or accounts for every annotation exactly once."""

import json
import re
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fit3d.data.readers import read_coco

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=3))
JSON = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                    max_leaves=6)
NUMBER = st.one_of(st.floats(-50, 700), st.integers(-10, 700), st.just(float("nan")), st.none())
IMAGE_IDS = st.one_of(st.sampled_from([1, 2, 3]), JSON)


def _annotation():
    keypoints = st.one_of(st.lists(NUMBER, min_size=51, max_size=51), st.lists(NUMBER, max_size=60), JSON)
    return st.one_of(
        st.fixed_dictionaries(
            dict(id=st.one_of(st.integers(0, 4), JSON), image_id=IMAGE_IDS, keypoints=keypoints),
            optional=dict(bbox=st.one_of(st.lists(NUMBER, min_size=4, max_size=4), JSON), iscrowd=st.sampled_from([0, 1]),
                          num_keypoints=JSON, category_id=st.one_of(st.just(1), JSON))),
        JSON,
    )


def _image(i):
    return st.fixed_dictionaries(dict(id=st.just(i), file_name=st.sampled_from(["a.png", "sub/b.png", "missing.png"])),
                                 optional=dict(width=NUMBER, height=NUMBER))


FILES = st.fixed_dictionaries(dict(
    images=st.one_of(st.tuples(_image(1), _image(2), _image(3)).map(list), st.lists(JSON, max_size=2)),
    annotations=st.lists(_annotation(), max_size=6)),
    optional=dict(categories=st.one_of(JSON, st.just([dict(id=1, name="person", keypoints=["nose", "head", "l hip"])]))))


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(FILES, JSON))
def test_every_annotation_is_a_person_or_a_problem(data):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "sub").mkdir()
        Image.new("RGB", (64, 48)).save(d / "a.png")
        Image.new("RGB", (64, 48)).save(d / "sub" / "b.png")
        f = d / "ann.json"
        f.write_text(json.dumps(data, allow_nan=True))
        try:
            images, problems = read_coco(f, d)
        except ValueError as e:  # refused as a whole, with a reason
            assert "COCO" in str(e)
            return
    anns = data["annotations"]
    people = [p for r in images for p in r.people]
    about_annotations = [p for p in problems if "#annotations[" in p.source]
    lost = sum(int(m) for p in problems for m in re.findall(r"\((\d+) annotations not fitted", p.reason))
    assert len(people) + len(about_annotations) + lost == len(anns)
    for p in people:
        assert p.keypoints_2d.shape[1] == 3 and np.isfinite(p.bbox).all() and p.image_size == (64, 48)
        assert set(np.unique(p.keypoints_2d[:, 2])) <= {0.0, 1.0}


def _openpose_person():
    values = st.one_of(st.lists(NUMBER, min_size=75, max_size=75), st.lists(NUMBER, min_size=54, max_size=54),
                       st.lists(NUMBER, max_size=80), JSON)
    return st.one_of(st.fixed_dictionaries({}, optional=dict(pose_keypoints_2d=values, person_id=JSON)), JSON)


OPENPOSE_FILES = st.one_of(st.fixed_dictionaries(dict(people=st.lists(_openpose_person(), max_size=4)),
                                                 optional=dict(version=JSON)), JSON)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(OPENPOSE_FILES, min_size=1, max_size=3), raw=st.binary(max_size=8))
def test_every_openpose_person_is_a_person_or_a_problem(files, raw):
    """Whatever the OpenPose files hold, each file is a record or one problem, and each entry
    of a readable file's ``people`` is a person or exactly one problem."""
    from fit3d.data.readers import read_openpose

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        kp_dir, img_dir = d / "kp", d / "img"
        kp_dir.mkdir()
        img_dir.mkdir()
        for i, data in enumerate(files):
            Image.new("RGB", (64, 48)).save(img_dir / f"f{i}.png")
            (kp_dir / f"f{i}_keypoints.json").write_text(json.dumps(data, allow_nan=True))
        (kp_dir / "bytes_keypoints.json").write_bytes(raw)  # undecodable or empty: a problem, not a crash
        Image.new("RGB", (64, 48)).save(img_dir / "bytes.png")
        images, problems = read_openpose(kp_dir, img_dir)
        per_file = {r.image_key: r for r in images}
        for i, data in enumerate(files):
            src = str(kp_dir / f"f{i}_keypoints.json")
            file_problems = [p for p in problems if p.source == src]
            entries = [p for p in problems if p.source.startswith(src + "#")]
            readable = isinstance(data, dict) and isinstance(data.get("people"), list)
            if not readable:
                assert len(file_problems) == 1 and f"f{i}.png" not in per_file
                continue
            rec = per_file[f"f{i}.png"]
            assert len(rec.people) + len(entries) == len(data["people"])
            assert rec.dropped == [p.source for p in entries]  # its output is marked incomplete
            for p in rec.people:
                assert p.keypoints_2d.shape in ((25, 3), (18, 3)) and np.isfinite(p.bbox).all()
                assert ((p.keypoints_2d[:, 2] >= 0) & (p.keypoints_2d[:, 2] <= 1)).all()
