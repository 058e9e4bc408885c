import json

import numpy as np
import pytest
from click.testing import CliRunner

from fit3d.cli.main import cli
from fit3d.data.conventions import COCO17, SPIN24, convert
from fit3d.data.readers import read_coco
from fit3d.data.spin import load_spin_npz, read_spin, spin_bbox
from fit3d.data.writers import write_npz
from fit3d.evaluation.evaluate import evaluate


def _spin_fixture(tmp_path, sample_dir):
    """A SPIN-format npz for the bundled images: 2D from COCO, 3D made up but consistent."""
    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    names, centers, scales, parts, S = [], [], [], [], []
    rng = np.random.default_rng(0)
    for r in images:
        for p in r.people:
            if p.num_visible == 0:  # SPIN sets hold annotated people only
                continue
            names.append(r.image_key)
            x, y, w, h = p.bbox
            centers.append([x + w / 2, y + h / 2])
            scales.append(max(w, h) / 200)
            parts.append(convert(np.asarray(p.keypoints_2d), COCO17, SPIN24))
            s3 = np.zeros((24, 4), np.float32)
            s3[:, :3] = rng.normal(0, 0.3, (24, 3))
            s3[:, 3] = 1
            S.append(s3)
    f = tmp_path / "spin_test.npz"
    write_npz(f, dict(imgname=np.asarray(names), center=np.asarray(centers, np.float32),
                      scale=np.asarray(scales, np.float32), part=np.asarray(parts, np.float32),
                      S=np.asarray(S, np.float32)))
    return f


def test_spin_reader(tmp_path, sample_dir):
    f = _spin_fixture(tmp_path, sample_dir)
    d = load_spin_npz(f)
    assert d["part"].shape == (12, 24, 3)
    box = spin_bbox(d["center"][:1], d["scale"][:1])[0]
    assert box[2] == pytest.approx(200 * d["scale"][0]) and box[0] + box[2] / 2 == pytest.approx(d["center"][0, 0])
    images, problems = read_spin(f, sample_dir)
    assert problems == [] and sum(len(r.people) for r in images) == 12
    p = images[0].people[0]
    assert p.convention is SPIN24 and p.annot_id == 0
    bad = tmp_path / "bad.npz"
    write_npz(bad, dict(imgname=np.asarray(["a.jpg"])))
    with pytest.raises(ValueError, match="missing"):
        load_spin_npz(bad)


def test_evaluate_coco_2d_and_spin_3d(tmp_path, sample_dir, anny_model):
    from fit3d.fitters import SMPLify, Stage
    from fit3d.pipeline import RunConfig, run

    fast = [Stage("camera", ("global_orient", "transl"), 20, 0.05, dict(reprojection=1.0, depth=100.0), "torso"),
            Stage("body", ("global_orient", "body_pose", "betas", "transl"), 30, 0.04,
                  dict(reprojection=1.0, pose_prior=5.0, bend=100.0, shape=1.0))]
    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    fits = tmp_path / "fits"
    run(images, SMPLify(anny_model, schedule=fast), anny_model, RunConfig(fits, progress=False))
    summary, rows = evaluate(fits, sample_dir / "test_coco.json")
    assert summary["count"] == 14 and summary["fitted"] == 12  # 2 annotations without keypoints: not fitted
    assert summary["error_2d_px"] < 30 and 0.3 < summary["pck_10"] <= 1.0
    assert summary["mpjpe"] is None  # 2D-only ground truth
    # CLI, with per-sample rows
    r = CliRunner().invoke(cli, ["evaluate", "--fits", str(fits), "--gt", str(sample_dir / "test_coco.json"),
                                 "--per-sample", str(tmp_path / "rows.csv")])
    assert r.exit_code == 0, r.output
    assert json.loads((fits / "metrics.json").read_text())["count"] == 14
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == 15
    (tmp_path / "file").write_text("x")  # --per-sample where no folder can be made: said before anything is written
    (fits / "metrics.json").unlink()
    r = CliRunner().invoke(cli, ["evaluate", "--fits", str(fits), "--gt", str(sample_dir / "test_coco.json"),
                                 "--per-sample", str(tmp_path / "file" / "rows.csv")])
    assert r.exit_code == 2 and "cannot be made" in r.output and not (fits / "metrics.json").exists()
    # an unreadable fit (found by a helper: its people silently counted as not fitted, exit 0)
    broken = sorted(fits.glob("*.npz"))[0]
    broken.write_bytes(b"")
    r = CliRunner().invoke(cli, ["evaluate", "--fits", str(fits), "--gt", str(sample_dir / "test_coco.json")])
    assert r.exit_code == 3 and f"unreadable fit {broken.name}" in r.output, r.output
    metrics = json.loads((fits / "metrics.json").read_text())
    assert metrics["unreadable_fits"] == [broken.name]
    assert metrics["images_without_fits"] == 1 and metrics["ground_truth_without_fit"] >= 1
    assert "have no fit in" in r.output or "has no fit in" in r.output, r.output
    r = CliRunner().invoke(cli, ["report", "--fits", str(fits), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 3 and f"unreadable fit {broken.name}" in r.output, r.output

    # SPIN input: fit it, then evaluate in 3D
    spin = _spin_fixture(tmp_path, sample_dir)
    simages, _ = read_spin(spin, sample_dir)
    sfits = tmp_path / "sfits"
    run(simages, SMPLify(anny_model, schedule=fast), anny_model, RunConfig(sfits, progress=False))
    s3, rows3 = evaluate(sfits, spin)
    assert s3["fitted"] == 12 and s3["mpjpe"] > 0 and s3["pa_mpjpe"] <= s3["mpjpe"]
    assert all(r["pa_mpjpe"] <= r["mpjpe"] + 1e-3 for r in rows3 if "mpjpe" in r)
    # 3D by value (a mutation check: the root at joint 0 instead of the hips passed): ground truth that
    # is the fits' own joints scores 0; one hip moved by 20 mm moves the hips' midpoint, the root, by
    # 10 mm, so every joint is 10 mm off after root alignment: MPJPE 10 mm
    d = dict(np.load(spin))
    for f in sorted(sfits.glob("*.npz")):
        fit = np.load(f)
        names = [str(n) for n in fit["keypoint_names"]]
        for a, kp3 in zip(fit["annot_id"], fit["keypoints_3d"]):
            row = next(i for i, n in enumerate(d["imgname"]) if str(n) == f.name[:-4] and i == int(a))
            S = np.zeros((24, 4), np.float32)
            for j, n in enumerate(SPIN24.names):
                if n in names and np.isfinite(kp3[names.index(n)]).all():
                    S[j] = [*kp3[names.index(n)], 1.0]
            d["S"][row] = S
    own = tmp_path / "own.npz"
    write_npz(own, d)
    s_own, _ = evaluate(sfits, own)
    assert s_own["mpjpe"] < 1e-3 and s_own["pa_mpjpe"] < 1e-3
    d["S"][:, SPIN24.index("left_hip"), 0] += 0.020
    write_npz(own, d)
    s_hip, rows_hip = evaluate(sfits, own)
    assert s_hip["mpjpe"] == pytest.approx(10.0, abs=1e-2) and all(
        r["mpjpe"] == pytest.approx(10.0, abs=1e-2) for r in rows_hip if "mpjpe" in r)
    # fits whose people are numbered per image scored against COCO ids: nothing matches, an error
    # that says why (a trial: "fitted 0" read as failed fits; a later one: a metrics file of n/a
    # written over a good one, exit 0)
    (tmp_path / "m.json").write_text('{"kept": true}')
    r = CliRunner().invoke(cli, ["evaluate", "--fits", str(sfits), "--gt", str(sample_dir / "test_coco.json"),
                                 "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 1 and "none of the 12 fitted people" in r.output and "--match keypoints" in r.output
    assert json.loads((tmp_path / "m.json").read_text()) == {"kept": True}
    # a HumanData file is not SPIN ground truth: said so, not numpy's pickle message
    hd = tmp_path / "hd.npz"
    np.savez(hd, smpl=np.asarray({"betas": np.zeros((1, 10))}, dtype=object), image_path=np.asarray(["a.jpg"]))
    r = CliRunner().invoke(cli, ["evaluate", "--fits", str(sfits), "--gt", str(hd)])
    assert r.exit_code == 1 and "not a SPIN dataset file: it holds pickled objects" in r.output, r.output


def test_ground_truth_from_a_messy_coco_file(tmp_path, sample_dir):
    from fit3d.evaluation.evaluate import load_ground_truth

    data = json.loads((sample_dir / "test_coco.json").read_text())
    a0 = next(a for a in data["annotations"] if a.get("num_keypoints", 0) > 0)
    data["images"].append(dict(id=[1, 2], file_name="list_id.jpg", width=640, height=480))  # unhashable id
    data["images"][0]["file_name"] = "./" + data["images"][0]["file_name"]  # keyed as the reader keys it
    data["annotations"] += [
        dict(a0, id="seven"),  # not an integer id: not ground truth (fit3d would not fit it either)
        dict(a0, id=10**9, bbox="wide"),  # malformed box: rebuilt from the keypoints
        dict(a0, id=10**9 + 1, image_id=[1, 2]),  # the image with a list id
        dict(a0, id=10**9 + 2, image_id=-5),  # unknown image
    ]
    f = tmp_path / "gt.json"
    f.write_text(json.dumps(data))
    rows = load_ground_truth(f)
    assert len(rows) == 14 + 2
    by_id = {r["annot_id"]: r for r in rows}
    assert by_id[10**9 + 1]["image"] == "list_id.jpg"
    assert not any(r["image"].startswith("./") for r in rows)
    assert np.isfinite(by_id[10**9]["bbox"]).all() and by_id[10**9]["bbox"][2] > 1
    other = tmp_path / "fits"  # fits of another image, and of one ground-truth person
    first = next(i["file_name"] for i in data["images"] if i["id"] == a0["image_id"]).removeprefix("./")
    for image, annot_id in (("other.jpg", 1), (first, a0["id"])):
        write_npz(other / f"{image}.npz", dict(
            image=np.str_(image), keypoint_names=np.asarray(SPIN24.names), annot_id=np.array([annot_id]),
            status=np.asarray(["fitted"]), valid=np.ones(1, bool), keypoints_2d_fit=np.zeros((1, 24, 2), np.float32),
            keypoints_3d=np.zeros((1, 24, 3), np.float32)))
    summary, _ = evaluate(other, f)
    assert summary["count"] == 16 and summary["fitted"] == 1 and summary["fitted_not_in_ground_truth"] == 1
    left_out = summary["ground_truth_left_out"]  # said (found by a helper: dropped without a word)
    assert len(left_out) == 2 and any("seven" in t for t in left_out) and any("-5" in t for t in left_out)


def test_spin_ids_that_repeat_across_images_are_matched_by_image_and_id(tmp_path):
    """An export of fits from OpenPose numbers people per image: (image, id) is the key, not the id."""
    rng = np.random.default_rng(0)
    names = ["a.jpg", "a.jpg", "b.jpg", "b.jpg", "b.jpg"]
    ids = np.array([0, 1, 0, 1, 1])  # b.jpg #1 twice: a real duplicate
    part = np.concatenate([rng.uniform(50, 400, (5, 24, 2)), np.ones((5, 24, 1))], -1).astype(np.float32)
    gt = tmp_path / "spin.npz"
    write_npz(gt, dict(imgname=np.asarray(names), annot_id=ids, center=np.full((5, 2), 200, np.float32),
                       scale=np.ones(5, np.float32), part=part))
    fits = tmp_path / "fits"
    for image, rows in (("a.jpg", [0, 1]), ("b.jpg", [2, 3])):
        write_npz(fits / f"{image}.npz", dict(
            image=np.str_(image), keypoint_names=np.asarray(SPIN24.names), annot_id=ids[rows],
            status=np.asarray(["fitted"] * 2), valid=np.ones(2, bool), keypoints_2d_fit=part[rows, :, :2],
            keypoints_3d=np.zeros((2, 24, 3), np.float32)))
    summary, rows = evaluate(fits, gt)
    assert summary["count"] == 3 and summary["fitted"] == 3 and summary["duplicate_ids"] == 2
    assert summary["error_2d_px"] == pytest.approx(0, abs=1e-4) and summary["mpjpe"] is None  # no S: 2D only
    r = CliRunner().invoke(cli, ["evaluate", "--fits", str(fits), "--gt", str(gt), "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    assert "fit3d: 2 ground-truth people left out: their image and annotation id are used more than once" in r.output


def test_fits_of_a_detectors_keypoints_are_matched_to_the_annotations_by_where_they_lie(tmp_path, sample_dir):
    """A MediaPipe user's trial: fits of detections (numbered per image, as OpenPose's) matched no
    ground-truth id and nothing was scored."""
    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    rng = np.random.default_rng(1)
    fits = tmp_path / "fits"
    truth = {}
    for r in images:
        people = [p for p in r.people if p.num_visible >= 5]
        if not people:
            continue
        order = rng.permutation(len(people))  # detections come in another order, numbered 0, 1, ...
        kp = np.stack([np.asarray(people[i].keypoints_2d, np.float32) for i in order])
        noisy = kp.copy()
        noisy[..., :2] += rng.normal(0, 2.0, noisy[..., :2].shape) * (kp[..., 2:] > 0)
        fit_2d = kp[..., :2] + 3.0  # each fit 3 px off its own person in x and y
        for n, i in enumerate(order):
            truth[(r.image_key, people[i].annot_id)] = n
        write_npz(fits / f"{r.image_key}.npz", dict(
            image=np.str_(r.image_key), keypoint_names=np.asarray(COCO17.names), annot_id=np.arange(len(people)),
            status=np.asarray(["fitted"] * len(people)), valid=np.ones(len(people), bool), keypoints_2d=noisy,
            keypoints_2d_fit=fit_2d, keypoints_3d=np.zeros((len(people), 17, 3), np.float32)))
    gt = sample_dir / "test_coco.json"
    with pytest.raises(ValueError, match="--match keypoints"):  # by ids: none matches
        evaluate(fits, gt)
    by_place, rows = evaluate(fits, gt, match="keypoints")
    assert by_place["fitted"] == len(truth) > 3
    assert by_place["error_2d_px"] == pytest.approx(np.hypot(3, 3), abs=1e-3)  # each matched to its own person
    assert by_place["fitted_not_in_ground_truth"] == 0
    r = CliRunner().invoke(cli, ["evaluate", "--fits", str(fits), "--gt", str(gt), "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 1 and "--match keypoints" in r.output
    r = CliRunner().invoke(cli, ["evaluate", "--fits", str(fits), "--gt", str(gt), "--match", "keypoints",
                                 "--out", str(tmp_path / "m.json")])
    assert r.exit_code in (0, 3) and json.loads((tmp_path / "m.json").read_text())["fitted"] == len(truth)
    assert f"{len(truth)} of the {len(truth)} fitted are valid" in r.output
    with pytest.raises(ValueError, match="match must be"):
        evaluate(fits, gt, match="boxes")


def test_a_fit_with_non_finite_points_is_counted_not_silently_dropped(tmp_path):
    """Found by a review: a fitted person with NaN 3D joints left the 3D means without a trace (the score
    looked better), and NaN 2D points were left out of PCK instead of counting as misses."""
    rng = np.random.default_rng(1)
    part = np.concatenate([rng.uniform(50, 400, (2, 24, 2)), np.ones((2, 24, 1))], -1).astype(np.float32)
    S = np.concatenate([rng.normal(0, 0.3, (2, 24, 3)), np.ones((2, 24, 1))], -1).astype(np.float32)
    gt = tmp_path / "spin.npz"
    write_npz(gt, dict(imgname=np.asarray(["a.jpg", "a.jpg"]), annot_id=np.array([0, 1]),
                       center=np.full((2, 2), 200, np.float32), scale=np.ones(2, np.float32), part=part, S=S))
    fit2d, fit3d = part[:, :, :2].copy(), S[:, :, :3].copy()
    fit3d[1] = np.nan  # the second person's fit diverged
    fit2d[1, :12] = np.nan  # half of its 2D points too
    write_npz(tmp_path / "fits" / "a.jpg.npz", dict(
        image=np.str_("a.jpg"), keypoint_names=np.asarray(SPIN24.names), annot_id=np.array([0, 1]),
        status=np.asarray(["fitted"] * 2), valid=np.ones(2, bool), keypoints_2d_fit=fit2d, keypoints_3d=fit3d))
    summary, rows = evaluate(tmp_path / "fits", gt)
    assert summary["fitted"] == 2 and summary["unscored_3d"] == 1 and summary["nonfinite_points_2d"] == 12
    assert "mpjpe" in rows[0] and "mpjpe" not in rows[1]
    assert rows[1]["pck_05"] == pytest.approx(0.5)  # the 12 NaN points are misses, the 12 exact ones hits
    assert rows[1]["error_2d_px"] == pytest.approx(0, abs=1e-4)
    r = CliRunner().invoke(cli, ["evaluate", "--fits", str(tmp_path / "fits"), "--gt", str(gt), "--out",
                                 str(tmp_path / "m.json")])
    assert r.exit_code == 0 and "1 fitted person has 3D ground truth but no finite" in r.output, r.output


def test_ids_repeat_across_images_two_runs_in_one_folder_neighbours_and_spin_boxes(tmp_path, sample_dir):
    """A review: COCO ids used again in another image were taken as duplicates (2 of 92 people scored,
    exit 0); an image's people in two fit files (two runs in one folder) emptied the result; the
    keypoint matching moved an exact fit onto a neighbour to pair more people; a person whose 3D truth
    has too few labelled joints left the 3D means uncounted; PCK against a SPIN file used SPIN's 1.2x box."""
    from fit3d.evaluation.evaluate import MATCH_FRACTION, match_by_keypoints

    d = json.loads((sample_dir / "test_coco.json").read_text())
    per_image: dict = {}
    for a in d["annotations"]:  # ids numbered 0, 1, ... within each image: unique by image and id only
        a["id"] = per_image[a["image_id"]] = per_image.get(a["image_id"], -1) + 1
    gt = tmp_path / "renumbered.json"
    gt.write_text(json.dumps(d))
    images, _ = read_coco(gt, sample_dir)
    fits = tmp_path / "fits"
    for r in images:
        people = r.people
        write_npz(fits / f"{r.image_key}.npz", dict(
            image=np.str_(r.image_key), keypoint_names=np.asarray(COCO17.names),
            annot_id=np.asarray([p.annot_id for p in people]), status=np.asarray(["fitted"] * len(people)),
            valid=np.ones(len(people), bool), keypoints_2d=np.stack([p.keypoints_2d for p in people]),
            keypoints_2d_fit=np.stack([np.asarray(p.keypoints_2d)[:, :2] + 1.0 for p in people]),
            keypoints_3d=np.zeros((len(people), 17, 3), np.float32)))
    total = sum(p.num_visible > 0 for r in images for p in r.people)  # (annotations without keypoints: no 2D error)
    summary, _ = evaluate(fits, gt)
    assert summary["duplicate_ids"] == 0 and summary["fitted"] >= total > 10
    assert summary["people_per_metric"]["error_2d_px"] == total
    (fits / "again").mkdir()
    first = sorted(fits.glob("*.npz"))[0]
    (fits / "again" / first.name).write_bytes(first.read_bytes())
    with pytest.raises(ValueError, match="two fit files"):
        evaluate(fits, gt)
    # matching: fit 0 lies on A (0.0) and near B (0.1); fit 1 near A (0.12) and nowhere near B
    names = ["a", "b", "c"]

    def person(xy, aid):
        return dict(image="x.jpg", annot_id=aid, names=names, duplicate=False, bbox=np.array([0, 0, 100, 0.0]),
                    keypoints_2d=np.array([[x, 0, 1] for x in xy], float))

    A, B = person([0, 0, 0], 1), person([10, 10, 10], 2)
    fit0 = dict(names=names, keypoints_2d=A["keypoints_2d"])
    fit1 = dict(names=names, keypoints_2d=np.array([[12, 0, 1]] * 3, float))
    B["keypoints_2d"] = np.array([[10, 0, 1]] * 3, float)
    B["bbox"] = np.array([0, 0, 100, 0.0])
    fit1["keypoints_2d"] = np.array([[12, 0, 1]] * 3, float)
    assert MATCH_FRACTION == 0.15
    out = match_by_keypoints({("x.jpg", 0): fit0, ("x.jpg", 1): fit1}, [A, B])
    assert out[("x.jpg", 1)] is fit0  # A keeps its exact fit
    # SPIN truth: PCK's box is the person's (SPIN's scale is 1.2x it), and 3D truth without a score is counted
    spin = _spin_fixture(tmp_path, sample_dir)
    with np.load(spin) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["S"][0, :, 3] = 0  # no labelled 3D joint
    write_npz(spin, dict(arrays, scale=arrays["scale"] * 1.2))
    from fit3d.evaluation.evaluate import load_ground_truth

    boxes = np.stack([g["bbox"] for g in load_ground_truth(spin)])
    np.testing.assert_allclose(boxes[:, 2], arrays["scale"] * 200, rtol=1e-5)
