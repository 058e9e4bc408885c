from fit3d.pipeline.summary import RunCounts


def test_summary_lists_failures_by_image_then_annotation_id_whatever_the_finishing_order():
    # worker processes finish batches in any order: the summary must not depend on it
    c = RunCounts()
    c.failures.extend([dict(image="b.jpg", annot_id=10, reason="x"), dict(image="a.jpg", annot_id=-1, reason="y"),
                       dict(image="b.jpg", annot_id=9, reason="z"), dict(image="a.jpg", annot_id="p2", reason="w")])
    listed = [(f["image"], f["annot_id"]) for f in c.as_dict()["failures"]]
    assert listed == [("a.jpg", -1), ("a.jpg", "p2"), ("b.jpg", 9), ("b.jpg", 10)]
    assert [f["image"] for f in c.failures] == ["b.jpg", "a.jpg", "b.jpg", "a.jpg"]  # the record itself is kept


def test_the_exit_code_says_a_rerun_is_needed_before_it_says_inputs_were_unreadable():
    """A dataset with one unreadable annotation and one failed image exited 3 ('the rest was
    fitted'), so scripts that retry on 5 never retried (found by a helper)."""
    c = RunCounts(images=4, images_written=3, people_fitted=9, input_errors=1)
    assert c.exit_code() == 3
    c.images_failed, c.people_failed = 1, 1
    assert c.exit_code() == 5 and c.as_dict()["input_errors"] == 1
    c.interrupted = 2
    assert c.exit_code() == 130
    assert RunCounts(images=2, input_errors=2).exit_code() == 4
