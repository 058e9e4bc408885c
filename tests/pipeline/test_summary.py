from fit3d.pipeline.summary import RunCounts


def test_summary_lists_failures_by_image_then_annotation_id_whatever_the_finishing_order():
    # worker processes finish batches in any order: the summary must not depend on it
    c = RunCounts()
    c.failures.extend([dict(image="b.jpg", annot_id=10, reason="x"), dict(image="a.jpg", annot_id=-1, reason="y"),
                       dict(image="b.jpg", annot_id=9, reason="z"), dict(image="a.jpg", annot_id="p2", reason="w")])
    listed = [(f["image"], f["annot_id"]) for f in c.as_dict()["failures"]]
    assert listed == [("a.jpg", -1), ("a.jpg", "p2"), ("b.jpg", 9), ("b.jpg", 10)]
    assert [f["image"] for f in c.failures] == ["b.jpg", "a.jpg", "b.jpg", "a.jpg"]  # the record itself is kept
