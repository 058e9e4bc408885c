import numpy as np
import pytest
import torch

from fit3d.evaluation.benchmark import run_benchmark
from fit3d.training.synthetic import make_synthetic_benchmark
from fit3d.fitters import SMPLify, Stage
from fit3d.fitters.result import FitResult


@pytest.fixture(scope="module")
def bench(anny_model):
    from fit3d.mocap import bundled_pose_set
    from fit3d.mocap.pose_set import load_pose_set

    return make_synthetic_benchmark(load_pose_set(bundled_pose_set()), anny_model, n=12, seed=0)


class Oracle:
    """A 'fitter' that returns the ground truth (or the neutral pose) without optimising."""

    name = "oracle"

    def __init__(self, model, bench, neutral=False):
        self.model, self.bench, self.neutral, self.i = model, bench, neutral, 0

    def __call__(self, batch):
        n = len(batch)
        sl = slice(self.i, self.i + n)
        self.i += n
        t = lambda k: torch.as_tensor(self.bench[k][sl])  # noqa: E731
        p = dict(global_orient=t("global_orient"), body_pose=t("body_pose"), betas=t("betas"), transl=t("transl"))
        if self.neutral:
            p["body_pose"] = torch.zeros_like(p["body_pose"])
            p["betas"] = torch.zeros_like(p["betas"])
            p["global_orient"] = torch.tensor([[np.pi, 0.0, 0.0]]).repeat(n, 1)
        out = self.model(**p)
        from fit3d.geometry import project

        kp2 = project(out.keypoints_3d, batch.focal_length, batch.principal_point)
        z = torch.zeros(n)
        return FitResult(**p, joints_3d=out.joints_3d, keypoints_3d=out.keypoints_3d, keypoints_2d_fit=kp2,
                         reproj_error_px=z, valid=torch.ones(n, dtype=torch.bool), loss=z,
                         iterations=z.long(), convention=self.model.keypoint_convention)


def test_ground_truth_scores_zero_and_neutral_scores_badly(anny_model, bench):
    gt = run_benchmark(bench, Oracle(anny_model, bench), anny_model)["summary"]
    assert gt["mpjpe"] < 1e-3 and gt["pa_mpjpe"] < 1e-3 and gt["pve"] < 0.5 and gt["error_2d_px"] < 1e-3
    bad = run_benchmark(bench, Oracle(anny_model, bench, neutral=True), anny_model)
    s, per = bad["summary"], bad["per_person"]
    assert s["mpjpe"] > 80 and s["pa_mpjpe"] > 40
    assert (per["pa_mpjpe"] <= per["mpjpe"] + 1e-3).all()


def test_smplify_on_benchmark_beats_neutral(anny_model, bench):
    fast = [Stage("camera", ("global_orient", "transl"), 20, 0.05, dict(reprojection=1.0, depth=100.0), "torso"),
            Stage("body", ("global_orient", "body_pose", "betas", "transl"), 40, 0.04,
                  dict(reprojection=1.0, pose_prior=5.0, bend=100.0, shape=1.0))]
    s = run_benchmark(bench, SMPLify(anny_model, schedule=fast), anny_model)["summary"]
    neutral = run_benchmark(bench, Oracle(anny_model, bench, neutral=True), anny_model)["summary"]
    assert s["pa_mpjpe"] < neutral["pa_mpjpe"] and s["error_2d_px"] < 25 and s["fits_per_s"] > 0


def test_subjects_protocol_holds_out_subjects_and_marks_rare_poses(anny_model):
    from fit3d.evaluation.benchmark import make_benchmark
    from fit3d.mocap import bundled_pose_set
    from fit3d.mocap.splits import TEST_SUBJECTS
    from fit3d.mocap.pose_set import load_pose_set

    ps = load_pose_set(bundled_pose_set())
    b = make_benchmark(ps, anny_model, n=40, seed=0, with_vertices=False)
    subjects = ps["subject_names"][ps["trial"][b["pose_index"]]]
    assert set(subjects) <= set(TEST_SUBJECTS)
    assert b["rare"].sum() == 4 and (b["rarity_mm"][b["rare"]].min() >= b["rarity_mm"][~b["rare"]].max())
    assert not np.allclose(b["focal_length"], b["focal_length_true"])
    free = make_benchmark(ps, anny_model, n=40, seed=0, noise=0.0, with_vertices=False)
    assert np.array_equal(free["keypoints_3d"], b["keypoints_3d"])  # same people, other 2D errors
    with pytest.raises(ValueError, match="protocol"):
        make_benchmark(ps, anny_model, n=4, protocol="nonsense")


def test_make_benchmark_of_some_val_subjects(anny_model):
    from fit3d.evaluation.benchmark import make_benchmark
    from fit3d.mocap import bundled_pose_set
    from fit3d.mocap.pose_set import load_pose_set

    ps = load_pose_set(bundled_pose_set())
    b = make_benchmark(ps, anny_model, n=12, seed=0, split="val", subjects=("35",), with_vertices=False)
    assert set(ps["subject_names"][ps["trial"][b["pose_index"]]]) == {"35"}
    with pytest.raises(ValueError, match="'02' is a test subject, not of the val split .its subjects: 01, 35"):
        make_benchmark(ps, anny_model, n=4, split="val", subjects=("02",))
    # found by a new user's trial: an unknown subject beside a known one was left out in silence
    with pytest.raises(ValueError, match="'999' is not in the pose set"):
        make_benchmark(ps, anny_model, n=4, split="val", subjects=("35", "999"))
    with pytest.raises(ValueError, match="trials-v1"):
        make_benchmark(ps, anny_model, n=4, protocol="trials-v1", subjects=("35",))
    scored = make_benchmark(ps, anny_model, n=12, seed=0, split="val", subjects=("35",), with_vertices=False,
                            scores="detector")
    assert str(scored["scores"]) == "detector" and str(b["scores"]) == "labels"
    conf = scored["keypoints_2d"][..., 2]
    np.testing.assert_array_equal(conf > 0, b["keypoints_2d"][..., 2] > 0)
    assert 0 < conf[conf > 0].mean() < 0.9
    with pytest.raises(ValueError, match="scores"):
        make_benchmark(ps, anny_model, n=4, protocol="trials-v1", scores="detector")
    boxed = make_benchmark(ps, anny_model, n=12, seed=0, split="val", subjects=("35",), with_vertices=False,
                           boxes="silhouette")
    assert "vertices" not in boxed and str(boxed["boxes"]) == "silhouette" and str(b["boxes"]) == "keypoints"
    np.testing.assert_allclose(boxed["keypoints_2d"], b["keypoints_2d"], atol=0.01)  # same people (posed with vertices)
    assert not np.allclose(boxed["bbox"], b["bbox"], atol=2.0)
    clean, lab = boxed["keypoints_2d_clean"], b["keypoints_2d"][..., 2] > 0  # (labelled: inside the image)
    lo, hi = boxed["bbox"][:, None, :2], boxed["bbox"][:, None, :2] + boxed["bbox"][:, None, 2:]
    assert ((clean >= lo - 2) & (clean <= hi + 2)).all(-1)[lab].all()  # the body's box holds its joints
    with pytest.raises(ValueError, match="boxes"):
        make_benchmark(ps, anny_model, n=4, protocol="trials-v1", boxes="silhouette")
    with pytest.raises(ValueError, match="boxes"):
        make_benchmark(ps, anny_model, n=4, boxes="detector")


def test_run_benchmark_reports_rare_and_common(anny_model, bench):
    sub = dict(bench)
    sub["rare"] = np.arange(len(bench["keypoints_2d"])) < 3
    s = run_benchmark(sub, Oracle(anny_model, sub), anny_model, batch_size=5, with_pve=False)["summary"]
    assert s["pa_mpjpe_rare"] < 1 and s["pa_mpjpe_common"] < 1 and s["reproj_median_px"] < 1e-2


class SmallGPU:
    """Runs out of GPU memory above ``most`` people (before fitting), recording each batch size."""

    def __init__(self, fitter, most, error=torch.cuda.OutOfMemoryError,
                 message="CUDA out of memory. Tried to allocate 2.00 GiB (simulated)"):
        self.fitter, self.most, self.error, self.message, self.tried = fitter, most, error, message, []

    def __call__(self, batch):
        self.tried.append(len(batch))
        if len(batch) > self.most:
            raise self.error(self.message)
        return self.fitter(batch)


def test_a_batch_that_runs_out_of_gpu_memory_is_fitted_again_smaller(anny_model, bench):
    """The benchmark's people of a batch that ran out of memory are fitted again at most half as
    many at a time, and so are the later batches; every person is scored once, as without it."""
    whole = run_benchmark(bench, Oracle(anny_model, bench), anny_model, batch_size=8, with_pve=False)
    small = SmallGPU(Oracle(anny_model, bench), 3)
    cut = run_benchmark(bench, small, anny_model, batch_size=8, with_pve=False)
    assert small.tried == [8, 4, 2, 2, 2, 2, 2, 2]  # 12 people: 8 and 4 ran out, then at most 2
    assert cut["summary"]["count"] == 12 and cut["summary"]["batch_size_lowered_to"] == 2
    assert "batch_size_lowered_to" not in whole["summary"]
    np.testing.assert_allclose(cut["per_person"]["pa_mpjpe"], whole["per_person"]["pa_mpjpe"], atol=1e-3)  # mm
    other = SmallGPU(Oracle(anny_model, bench), 3, RuntimeError, "linalg.svd: failed to converge (simulated)")
    with pytest.raises(RuntimeError, match="simulated"):  # any other failure stops the benchmark
        run_benchmark(bench, other, anny_model, with_pve=False)


def test_a_closeup_benchmark_keeps_people_a_fitter_would_fit(anny_model):
    from fit3d.evaluation.benchmark import make_benchmark
    from fit3d.mocap import bundled_pose_set
    from fit3d.pipeline.skips import MIN_VISIBLE_KEYPOINTS
    from fit3d.mocap.pose_set import load_pose_set

    ps = load_pose_set(bundled_pose_set())
    b = make_benchmark(ps, anny_model, n=20, split="val", subjects=("35",), framing="closeup", with_vertices=False)
    assert len(b["keypoints_2d"]) == len(b["rare"]) == 20 and str(b["framing"]) == "closeup"
    labelled = b["keypoints_2d"][..., 2] > 0
    assert (labelled.sum(1) >= MIN_VISIBLE_KEYPOINTS).all()
    names = list(b["keypoint_names"])
    assert labelled[:, [names.index("left_ankle"), names.index("right_ankle")]].any(1).mean() <= 0.1  # (a raised foot)
    with pytest.raises(ValueError, match="framing"):
        make_benchmark(ps, anny_model, n=5, framing="portrait")
    with pytest.raises(ValueError, match="trials-v1 protocol has one framing"):
        make_benchmark(ps, anny_model, n=5, protocol="trials-v1", framing="closeup")


class Broken(Oracle):
    """The oracle, with its second person's prediction non-finite."""

    def __call__(self, batch):
        res = super().__call__(batch)
        res.keypoints_3d[1] = float("nan")
        return res


def test_non_finite_predictions_are_counted_unscored_and_intervals_reported(anny_model, bench):
    bad = run_benchmark(bench, Oracle(anny_model, bench, neutral=True), anny_model, with_pve=False)["summary"]
    assert bad["unscored"] == 0
    lo, hi = bad["pa_mpjpe_ci95"]
    assert lo < bad["pa_mpjpe"] < hi and hi - lo < bad["pa_mpjpe"]
    sub = dict(bench, rare=np.arange(len(bench["keypoints_2d"])) < 4)
    s = run_benchmark(sub, Broken(anny_model, sub, neutral=True), anny_model, with_pve=False)["summary"]
    assert s["unscored"] == 1 and s["count"] == len(bench["keypoints_2d"])  # left out of the mean, said so
    assert s["rare_ratio"] == pytest.approx(s["pa_mpjpe_rare"] / s["pa_mpjpe_common"])
    assert s["rare_ratio_ci95"][0] < s["rare_ratio_ci95"][1]


def test_bootstrap_intervals_hold_their_means():
    from fit3d.evaluation.benchmark import mean_interval, ratio_interval

    rng = np.random.default_rng(1)
    common, rare = rng.gamma(4.0, 12.0, 270), rng.gamma(4.0, 20.0, 30)
    lo, hi = mean_interval(np.concatenate([common, [np.nan]]))
    assert lo < common.mean() < hi and hi - lo < 0.3 * common.mean()
    lo, hi = ratio_interval(rare, common)
    assert lo < rare.mean() / common.mean() < hi
    assert np.isnan(mean_interval(np.array([3.0]))).all() and np.isnan(ratio_interval(rare[:1], common)).all()


def test_intervals_resample_whole_trials_when_people_of_a_trial_are_alike():
    """Found by a review: a benchmark's people are frames of a few dozen trials, and an interval over
    people as if independent was ~3x too narrow."""
    from fit3d.evaluation.benchmark import mean_interval, ratio_interval

    rng = np.random.default_rng(2)
    trial = np.repeat(np.arange(30), 10)  # 30 trials of 10 alike people
    v = 50 + rng.normal(0, 10, 30)[trial] + rng.normal(0, 2, 300)
    people, trials = mean_interval(v), mean_interval(v, groups=trial.astype(str))
    assert trials[0] < v.mean() < trials[1] and (trials[1] - trials[0]) > 2 * (people[1] - people[0])
    alone = mean_interval(v, groups=np.arange(300))  # one person per trial: about the interval over people
    assert abs((alone[1] - alone[0]) - (people[1] - people[0])) < 0.25 * (people[1] - people[0])
    rare = trial < 3
    r = ratio_interval(v[rare], v[~rare], rare_groups=trial[rare], common_groups=trial[~rare])
    rp = ratio_interval(v[rare], v[~rare])
    assert r[0] < v[rare].mean() / v[~rare].mean() < r[1] and (r[1] - r[0]) > (rp[1] - rp[0])
    w = v.copy()
    w[:5] = np.nan  # NaN left out, not spread
    assert np.isfinite(mean_interval(w, groups=trial)).all()
    assert np.isnan(mean_interval(v[:10], groups=trial[:10])).all()  # one trial: no interval


def test_a_subset_keeps_the_shared_names_whatever_the_count(bench):
    from fit3d.evaluation.benchmark import benchmark_subset

    n_joints = len(bench["joint_names"])  # a benchmark of as many people as names: the names were cut
    big = {k: (np.concatenate([v] * 3)[:n_joints] if getattr(v, "ndim", 0) and len(v) == len(bench["keypoints_2d"])
               and k not in ("keypoint_names", "joint_names") else v) for k, v in bench.items()}
    sub = benchmark_subset(big, 5)
    assert len(sub["keypoints_2d"]) == 5 and len(sub["joints_3d"]) == 5
    assert np.array_equal(sub["joint_names"], bench["joint_names"])
    assert np.array_equal(sub["keypoint_names"], bench["keypoint_names"])


def test_the_old_protocol_refuses_a_noise_scale_it_does_not_have(anny_model):
    from fit3d.evaluation.benchmark import make_benchmark
    from fit3d.mocap import bundled_pose_set
    from fit3d.mocap.pose_set import load_pose_set

    with pytest.raises(ValueError, match="one noise model"):
        make_benchmark(load_pose_set(bundled_pose_set()), anny_model, n=4, protocol="trials-v1", noise=2.0)


def test_a_benchmark_runs_64_people_per_call_on_a_cpu_and_the_fitters_gpu_batch_on_a_gpu():
    from fit3d.evaluation.benchmark import default_benchmark_batch

    class Sized:
        default_batch_size, cuda_batch_size = 256, 4096

    assert default_benchmark_batch(Sized(), "cpu") == 64  # (the README tables' batches)
    assert default_benchmark_batch(Sized(), "cuda:1") == 4096
    assert default_benchmark_batch(lambda batch: batch, "cuda") == 64
