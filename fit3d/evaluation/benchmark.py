"""Development benchmarks: synthetic people with 3D truth, fitted by any fitter and scored.

Protocols (:func:`make_benchmark`):

* ``"subjects"`` (the development benchmark): people from the held-out *subjects*
  (:mod:`fit3d.mocap.splits`: ``split="test"``; ``"val"`` for tuning), the realistic
  annotator noise of :class:`~fit3d.training.synthetic.NoiseModel` scaled by ``noise``
  (0: noise-free keypoints, 2: twice the noise), and focal lengths from 0.6x to 1.6x
  the image diagonal that the fitter is not told (it uses its default, the diagonal).
  Each person's rarity (:mod:`fit3d.evaluation.rarity`) is measured against every
  pose the shipped weights trained on; the rarest tenth is the ``rare`` subset.
  ``framing="closeup"`` frames every person from the waist or chest up (upper-body photos).
* ``"trials-v1"``: the earlier benchmark (trials of subjects seen in training, known focal
  length, COCO-calibrated noise), kept for comparison. It held those trials out of training
  when it was made; since the split by subject (``prepare-mocap``) the shipped weights train on
  every trial of the training subjects, so for them its people are mostly poses they trained on
  (only its test-subject people are held out): an in-distribution check, not a held-out score.
"""

from __future__ import annotations

import time
import zipfile

import numpy as np
import torch

from fit3d.data.batching import PersonBatch
from fit3d.data.conventions import LIMBS12, KeypointConvention, convert
from fit3d.devices import MemoryLimit, is_out_of_memory
from fit3d.evaluation import metrics as M


PROTOCOLS = ("subjects", "trials-v1")
#: Fitter extras that say which hypothesis won; summarised as shares by :func:`run_benchmark`.
HYPOTHESIS_EXTRAS = ("prototype", "depth_flip", "noisy_keypoints", "fallback", "followed")


FRAMINGS = ("full", "closeup")
#: How the people of a ``subjects`` benchmark are boxed (:func:`make_benchmark`).
BOXES = ("keypoints", "silhouette")


def _check_subjects(subjects: tuple[str, ...], frame_subject: np.ndarray, frame_split: np.ndarray, split: str) -> None:
    """Refuse requested subjects that are not of ``split`` (a typo was left out in silence, another
    split's subject said only "no poses"), naming the split they are in and the split's own.

    Raises:
        ValueError: a requested subject not in ``split`` (or not in the pose set).
    """
    from fit3d.mocap.splits import canonical_subject

    own = sorted(set(frame_subject[frame_split == split]))
    splits_of: dict[str, set] = {}  # canonical subject -> the splits its frames are in
    for raw, sp in set(zip(frame_subject.tolist(), frame_split.tolist())):
        splits_of.setdefault(canonical_subject(raw), set()).add(sp)
    for s in subjects:
        elsewhere = sorted(splits_of.get(canonical_subject(s), ()))
        if split in elsewhere:
            continue
        where = f"a {'/'.join(elsewhere)} subject" if elsewhere else "not in the pose set"
        raise ValueError(f"subject {s!r} is {where}, not of the {split} split (its subjects: {', '.join(own)})")


def make_benchmark(pose_set: dict, body_model, n: int = 500, seed: int = 0, protocol: str = "subjects",
                   split: str = "test", noise: float = 1.0, with_vertices: bool = True,
                   subjects: tuple[str, ...] | None = None, framing: str = "full", scores: str = "labels",
                   boxes: str = "keypoints") -> dict:
    """Synthetic people for a protocol (see module docstring).

    Args:
        pose_set: a ``fit3d prepare-mocap`` pose set for ``body_model``.
        n: people. seed: random seed (the same seed and ``n`` give the same people, whatever
            ``noise``; another ``n`` draws other people).
        split: ``"test"`` (held-out subjects; default), ``"val"`` (tuning subjects, with
            rarity against ``"train"`` only) or ``"train"`` (poses the weights trained on: an
            in-distribution tuning check); for ``trials-v1``: ``"test"`` or ``"train"`` trials.
        noise: scale of the annotator noise (``subjects`` protocol; 0 = noise-free); ``trials-v1``
            has one noise model: 1 (with it) or 0 (noise-free).
        subjects: ``subjects`` protocol: only these subjects of ``split`` (e.g. ``("35",)``,
            the val split's ordinary motions); None: all of them.
        framing: ``subjects`` protocol: ``"full"`` (people placed as the module docstring says)
            or ``"closeup"``: every person framed from the waist or chest up
            (:class:`~fit3d.training.synthetic.CameraModel` ``p_closeup=1``), the people with at
            least :data:`fit3d.pipeline.skips.MIN_VISIBLE_KEYPOINTS` labelled keypoints kept (the
            ones the fitting commands fit; the image cuts the rest off): what upper-body photos ask of a fitter, which the full framing never does.
        scores: ``subjects`` protocol: ``"labels"`` (confidence 1 for every labelled point, as
            annotations give) or ``"detector"`` (graded, detector-like confidences,
            :class:`~fit3d.training.synthetic.NoiseModel`).
        boxes: ``subjects`` protocol: ``"keypoints"`` (each person's ``bbox`` is their labelled
            keypoints' box padded 10 %, as OpenPose input gets) or ``"silhouette"`` (the box around the
            whole projected mesh, cut to the image, as COCO's annotations give:
            :func:`~fit3d.training.synthetic.silhouette_boxes`).
    Returns:
        the arrays of :func:`fit3d.training.synthetic.make_people` plus ``rarity_mm (N,)``,
        ``rare (N,)`` (``subjects`` protocol), ``protocol``, ``split``, ``noise_scale``, ``scores``, ``boxes``.
    Raises:
        ValueError: unknown protocol/split/framing/scores/boxes, no poses in the split (or of ``subjects`` in it),
            or a pose set of another model.
    """
    from fit3d.evaluation.rarity import pose_rarity, rare_mask
    from fit3d.mocap.splits import training_mask
    from fit3d.training.synthetic import CameraModel, NoiseModel, make_people, make_synthetic_benchmark, silhouette_boxes

    if protocol == "trials-v1":
        if framing != "full":
            raise ValueError("the trials-v1 protocol has one framing; framing= is for the subjects protocol")
        if subjects is not None:
            raise ValueError("the trials-v1 protocol splits by trial; subjects= is for the subjects protocol")
        if scores != "labels" or boxes != "keypoints":
            raise ValueError("the trials-v1 protocol has annotators' labels and keypoint boxes; scores= and boxes= are "
                             "for the subjects protocol")
        if noise not in (0, 1):  # (any other scale gave the noise of 1 without a word)
            raise ValueError(f"the trials-v1 protocol has one noise model: noise 1 (with it) or 0 (noise-free), "
                             f"not {noise:g}")
        out = make_synthetic_benchmark(pose_set, body_model, n=n, seed=seed, split=split, noise=noise > 0,
                                       with_vertices=with_vertices)
        return dict(out, protocol=np.str_(protocol), split=np.str_(split), noise_scale=np.float32(noise))
    if protocol != "subjects":
        raise ValueError(f"unknown benchmark protocol {protocol!r}; choose from {PROTOCOLS}")
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}; choose from {FRAMINGS}")
    if split not in ("test", "val", "train"):
        raise ValueError(f"the subjects protocol makes 'test', 'val' or 'train' benchmarks, not {split!r}")
    if str(pose_set.get("model", body_model.name)) != body_model.name:
        raise ValueError(f"pose set is for {pose_set['model']}, not {body_model.name}")
    keep = np.asarray(pose_set["split"]).astype(str) == split
    if isinstance(subjects, (str, int)):
        subjects = (subjects,)
    if subjects is not None:
        from fit3d.mocap.splits import canonical_subject

        subjects = tuple(str(s) for s in subjects)
        names = np.asarray([canonical_subject(s) for s in np.asarray(pose_set["subject_names"]).astype(str)])
        _check_subjects(subjects, np.asarray(pose_set["subject_names"]).astype(str)[pose_set["trial"]],
                        np.asarray(pose_set["split"]).astype(str), split)
        keep &= np.isin(names[pose_set["trial"]], [canonical_subject(s) for s in subjects])
    sel = np.nonzero(keep)[0]
    if len(sel) == 0:
        raise ValueError(f"no {split} poses" + (f" of subjects {', '.join(subjects)}" if subjects else "")
                         + " in the pose set")
    model = NoiseModel(scale=noise, scores=scores)
    if boxes not in BOXES:
        raise ValueError(f"unknown benchmark boxes {boxes!r}; choose from {BOXES}")
    posed = with_vertices or boxes == "silhouette"
    if framing == "full":
        out = make_people(pose_set["body_pose"][sel], pose_set["global_orient"][sel], body_model, n, seed=seed,
                          noise=model, with_vertices=posed)
    else:  # three times as many drawn: about a tenth of close-ups show fewer than 6 keypoints
        from fit3d.pipeline.skips import MIN_VISIBLE_KEYPOINTS

        out = make_people(pose_set["body_pose"][sel], pose_set["global_orient"][sel], body_model, 3 * n, seed=seed,
                          camera=CameraModel(p_closeup=1.0), noise=model, with_vertices=posed)
        keep = np.nonzero((out["keypoints_2d"][..., 2] > 0).sum(1) >= MIN_VISIBLE_KEYPOINTS)[0][:n]
        if len(keep) < n:
            raise ValueError(f"only {len(keep)} of {3 * n} close-up people show {MIN_VISIBLE_KEYPOINTS} keypoints")
        out = {k: v[keep] if isinstance(v, np.ndarray) and v.ndim and len(v) == 3 * n else v for k, v in out.items()}
    if boxes == "silhouette":
        out["bbox"] = silhouette_boxes(out)
    if not with_vertices:
        out.pop("vertices", None)
    out["pose_index"] = sel[out["pose_index"]]
    out["trial"] = pose_set["trial"][out["pose_index"]]
    ref = training_mask(pose_set, include_val=split == "test")
    out["rarity_mm"] = pose_rarity(body_model, out["body_pose"], pose_set["global_orient"][out["pose_index"]],
                                   pose_set["body_pose"][ref], pose_set["global_orient"][ref])
    out["rare"] = rare_mask(out["rarity_mm"])
    return dict(out, protocol=np.str_(protocol), split=np.str_(split), noise_scale=np.float32(noise),
                framing=np.str_(framing), scores=np.str_(scores),
                boxes=np.str_(boxes))


#: What every ``fit3d benchmark make`` file holds, with the number of axes of each (N people first).
BENCHMARK_FIELDS = {"keypoints_2d": 3, "keypoints_2d_clean": 3, "keypoints_3d": 3, "keypoint_names": 1, "bbox": 2,
                    "focal_length": 2, "principal_point": 2, "image_size": 2}


def load_benchmark(path) -> dict[str, np.ndarray]:
    """A ``fit3d benchmark make`` ``.npz`` as a dict of arrays.

    Raises:
        ValueError: the file is no ``.npz``, or not a benchmark (a field of
            :data:`BENCHMARK_FIELDS` missing or of another shape: a fit file, a pose set), one line.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        why = "another format" if "pickle" in str(e) else (str(e).splitlines()[0][:120] or type(e).__name__)
        raise ValueError(f"{path} is not a benchmark file of 'fit3d benchmark make' (not a readable .npz: {why})") from e
    if not isinstance(data, dict):  # (np.load of a plain .npy gives an array)
        raise ValueError(f"{path} is not a benchmark file of 'fit3d benchmark make' (a single array)")
    wrong = [k for k, nd in BENCHMARK_FIELDS.items() if k not in data or data[k].ndim != nd]
    if wrong:
        raise ValueError(f"{path} is not a benchmark file of 'fit3d benchmark make': {', '.join(wrong)} missing or "
                         "of another shape")
    return data


def benchmark_batch(bench: dict, idx: np.ndarray, convention: KeypointConvention, device="cpu") -> PersonBatch:
    """The benchmark people ``idx`` as a :class:`PersonBatch` in ``convention`` (mapped by keypoint name)."""
    src = KeypointConvention("benchmark", tuple(str(n) for n in bench["keypoint_names"]))
    kp = convert(bench["keypoints_2d"][idx], src, convention)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)  # noqa: E731
    return PersonBatch(t(kp), t(bench["bbox"][idx]), t(bench["focal_length"][idx]), t(bench["principal_point"][idx]),
                       t(bench["image_size"][idx]), convention)


def _by_name(points: np.ndarray, names, wanted) -> np.ndarray:
    names = [str(n) for n in names]
    return points[:, [names.index(w) for w in wanted]]


def score(bench: dict, idx: np.ndarray, pred_keypoints_3d: np.ndarray, pred_names, pred_2d: np.ndarray | None = None,
          pred_vertices: np.ndarray | None = None, pred_root: np.ndarray | None = None,
          joints: tuple[str, ...] = LIMBS12) -> dict[str, np.ndarray]:
    """Per-person metrics of predictions for benchmark people ``idx``.

    MPJPE / PA-MPJPE (mm) on ``joints`` (by name; root = mid-hips), the torso's direction error
    ``torso_deg`` (camera frame, no alignment: a body lying where it stands shows here, not in
    PA-MPJPE), 2D error (px)
    and PCK@0.05/0.1 against the benchmark's *clean* 2D keypoints on the labelled
    ones, PVE (mm) when vertices are given and the benchmark has them.
    """
    gt = torch.as_tensor(_by_name(bench["keypoints_3d"][idx], bench["keypoint_names"], joints))
    pr = torch.as_tensor(_by_name(pred_keypoints_3d, pred_names, joints))
    hips = (joints.index("left_hip"), joints.index("right_hip"))
    out = dict(mpjpe=M.mpjpe(pr, gt, hips).numpy(), pa_mpjpe=M.pa_mpjpe(pr, gt).numpy())
    if all(j in joints for j in ("left_shoulder", "right_shoulder")):
        shoulders = (joints.index("left_shoulder"), joints.index("right_shoulder"))
        out["torso_deg"] = M.torso_angle_deg(pr, gt, hips, shoulders).numpy()
    if pred_2d is not None:
        names = [str(n) for n in bench["keypoint_names"]]
        common = [n for n in names if n in [str(p) for p in pred_names]]
        gt2 = bench["keypoints_2d_clean"][idx][:, [names.index(n) for n in common]]
        lab = bench["keypoints_2d"][idx][:, [names.index(n) for n in common], 2:]
        gt2 = torch.as_tensor(np.concatenate([gt2, lab], -1))
        p2 = torch.as_tensor(_by_name(pred_2d, pred_names, common))
        box = torch.as_tensor(bench["bbox"][idx])
        out.update(error_2d_px=M.reprojection_px(p2, gt2).numpy(), pck_05=M.pck(p2, gt2, box, 0.05).numpy(),
                   pck_10=M.pck(p2, gt2, box, 0.1).numpy())
    if pred_vertices is not None and "vertices" in bench and pred_root is not None:
        groot = torch.as_tensor(bench["joints_3d"][idx][:, 0])
        gv = torch.as_tensor(bench["vertices"][idx].astype(np.float32)) + groot[:, None]  # stored root-relative
        out["pve"] = M.pve(torch.as_tensor(pred_vertices), gv, torch.as_tensor(pred_root), groot).numpy()
    return out


def benchmark_subset(bench: dict, n: int) -> dict:
    """The first ``n`` people of a benchmark (every per-person array cut; the shared fields,
    e.g. ``keypoint_names`` and ``joint_names``, as they are, whatever their length)."""
    N = len(bench["keypoints_2d"])
    shared = {"keypoint_names", "joint_names"}
    return {k: (v[:n] if k not in shared and getattr(v, "ndim", 0) and len(v) == N else v) for k, v in bench.items()}


def mean_interval(values: np.ndarray, level: float = 0.95, seed: int = 0,
                  groups: np.ndarray | None = None) -> tuple[float, float]:
    """Bootstrap confidence interval of the mean of ``values`` ``(N,)``; NaN entries are left out.

    Without ``groups``: over people (BCa, :func:`scipy.stats.bootstrap`, 2,000 resamples). With
    ``groups`` ``(N,)`` (each person's mocap trial): a cluster bootstrap, whole groups resampled
    (percentile, 2,000 resamples; :func:`_cluster_resamples`). A benchmark's people are frames of a
    few dozen trials, alike within a trial, so an interval over people as if independent is about
    3x too narrow (found by a review, 2026-12-04: regressor alone, 300 test people in 37 trials,
    [55.7, 62.6] over people, [47.1, 68.0] over trials). ``(nan, nan)`` with fewer than 2 values
    (or groups) or when all are equal (no spread to resample)."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=np.float64)
    if groups is not None:
        codes = np.unique(np.asarray(groups), return_inverse=True)[1]
        sums, counts = _group_sums(v, codes, codes.max() + 1 if len(codes) else 0)
        if (counts > 0).sum() < 2 or np.ptp(v[np.isfinite(v)]) == 0:
            return float("nan"), float("nan")
        idx = _cluster_resamples(len(sums), seed)
        return _percentiles(sums[idx].sum(1) / counts[idx].sum(1), level)
    v = v[np.isfinite(v)]
    if len(v) < 2 or np.ptp(v) == 0:
        return float("nan"), float("nan")
    ci = bootstrap((v,), np.mean, confidence_level=level, n_resamples=2000, batch=256,  # (BCa's jackknife: N x N)
                   rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def ratio_interval(rare: np.ndarray, common: np.ndarray, level: float = 0.95, seed: int = 0,
                   rare_groups: np.ndarray | None = None,
                   common_groups: np.ndarray | None = None) -> tuple[float, float]:
    """Bootstrap confidence interval (percentile, 2,000 resamples) of ``mean(rare) / mean(common)``,
    the rare-to-common ratio of issue 10's target; NaN entries left out; ``(nan, nan)`` with fewer
    than 2 values in a group or a common mean of 0.

    Without groups each subset is resampled on its own, person by person; with ``rare_groups`` and
    ``common_groups`` (each person's mocap trial) whole trials are resampled, a trial's rare and
    common people together (:func:`mean_interval`; resamples without a rare person are left out)."""
    from scipy.stats import bootstrap

    a, b = (np.asarray(x, dtype=np.float64) for x in (rare, common))
    if rare_groups is not None and common_groups is not None:
        labels = np.concatenate([np.asarray(rare_groups), np.asarray(common_groups)])
        _, inv = np.unique(labels, return_inverse=True)
        ra, rc = _group_sums(a, inv[:len(a)], inv.max() + 1)
        ca, cc = _group_sums(b, inv[len(a):], inv.max() + 1)
        if rc.sum() < 2 or cc.sum() < 2 or not ca.any() or (rc + cc > 0).sum() < 2:
            return float("nan"), float("nan")
        idx = _cluster_resamples(len(ra), seed)
        with np.errstate(invalid="ignore", divide="ignore"):
            return _percentiles((ra[idx].sum(1) / rc[idx].sum(1)) / (ca[idx].sum(1) / cc[idx].sum(1)), level)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2 or not b.any():
        return float("nan"), float("nan")
    ci = bootstrap((a, b), lambda x, y, axis=-1: np.mean(x, axis=axis) / np.mean(y, axis=axis), paired=False,
                   confidence_level=level, n_resamples=2000, method="percentile", vectorized=True, batch=256,
                   rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def _group_sums(values: np.ndarray, codes: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the sum of the finite ``values`` and their count: ``((G,), (G,))`` for ``codes``
    ``(N,)``, each value's group as an integer ``0..groups-1``."""
    finite = np.isfinite(values)
    return (np.bincount(codes, weights=np.where(finite, values, 0.0), minlength=groups),
            np.bincount(codes, weights=finite.astype(np.float64), minlength=groups))


def _cluster_resamples(groups: int, seed: int, n: int = 2000) -> np.ndarray:
    """``(n, groups)`` indices of ``n`` resamples of ``groups`` clusters, with replacement."""
    return np.random.default_rng(seed).integers(0, groups, (n, groups))


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` interval of the finite bootstrap ``stats`` (``(nan, nan)`` with fewer than 2)."""
    stats = stats[np.isfinite(stats)]
    if len(stats) < 2:
        return float("nan"), float("nan")
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def default_benchmark_batch(fitter, device) -> int:
    """People per call of a benchmark run: 64 on a CPU (the numbers of the README's tables), the
    fitter's GPU batch on a CUDA device (:func:`~fit3d.fitters.base.batch_size_for`)."""
    from fit3d.fitters.base import batch_size_for

    return batch_size_for(fitter, device) if torch.device(device).type == "cuda" else 64


def run_benchmark(bench: dict, fitter, body_model, batch_size: int | None = None, limit: int | None = None,
                  with_pve: bool = True, progress: bool = False, label: str | None = None) -> dict:
    """Fit every benchmark person and score.

    Args:
        bench: :func:`load_benchmark`'s arrays. fitter: ``fitter(PersonBatch) -> FitResult``.
        body_model: the fitter's model. batch_size: people per call (None: 64 on a CPU, the fitter's
        GPU batch on a GPU, :func:`~fit3d.fitters.base.batch_size_for`); after a batch runs out of GPU
        memory, its people and the later batches are fitted at most half as many at a time
        (:class:`~fit3d.devices.MemoryLimit`). limit: the first people only.
        with_pve: score vertices too (same model as the benchmark's). progress: a progress bar,
        named ``label`` (default: the fitter's ``name``).
    Returns:
        ``{"summary": {...}, "per_person": {...}}``: means over people of every metric,
        ``reproj_median_px`` (the fitter's own reprojection error against its input
        keypoints, median over people), ``share_valid``, ``fits_per_s`` and ``seconds``
        (fitting only). Every fitted person counts in the means, fits marked invalid included;
        ``unscored`` counts people without a score (a non-finite prediction: left out of the
        means, so a fitter with any is not comparable). ``pa_mpjpe_ci95``: a bootstrap 95 %
        interval of the PA-MPJPE mean (:func:`mean_interval`), whole mocap trials resampled when the
        benchmark records each person's ``trial`` (then also ``trials``, their number), and
        ``pa_mpjpe_ci95_people``: people resampled as if independent. With a ``rare`` mask in the
        benchmark also ``pa_mpjpe_common``, ``pa_mpjpe_rare``, ``mpjpe_common``, ``mpjpe_rare``,
        ``share_valid_rare``, ``rare_ratio`` (rare / common PA-MPJPE) and ``rare_ratio_ci95``
        (:func:`ratio_interval`, by trial as above; ``rare_ratio_ci95_people`` by person;
        ``trials_rare``: the trials the rare people come from); with the
        fitters' hypothesis extras, ``share_prototype`` (a prototype start won / was picked),
        ``share_prototype_rare``, ``share_depth_flip``, ``share_noisy`` (keypoints judged noisy) and
        ``share_fallback`` (:class:`~fit3d.fitters.fallback.Fallback`'s secondary fit kept) and
        ``share_followed`` (:mod:`fit3d.fitters.follow`'s refinement kept); ``batch_size_lowered_to``
        when a batch ran out of GPU memory.
    Raises:
        Exception: what the fitter raises, except running out of GPU memory with more than one
            person in the batch.
    """
    n = len(bench["keypoints_2d"]) if limit is None else min(limit, len(bench["keypoints_2d"]))
    if batch_size is None:
        batch_size = default_benchmark_batch(fitter, body_model.device)
    conv = body_model.keypoint_convention
    rows: dict[str, list] = {}
    fit_time = 0.0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=f"benchmark {label or getattr(fitter, 'name', '')}", unit="person")
    valid = []
    memory, s = MemoryLimit(), 0
    while s < n:
        idx = np.arange(s, min(s + memory.cap(batch_size), n))
        batch = benchmark_batch(bench, idx, conv, body_model.device)
        t0 = time.perf_counter()
        try:
            res = fitter(batch).cpu()
            oom = False
        except Exception as exc:  # noqa: BLE001 - only running out of GPU memory is retried
            if len(idx) == 1 or not is_out_of_memory(exc):
                raise
            oom = True  # (the exception, and the failed fit's tensors with it, is let go here)
        fit_time += time.perf_counter() - t0  # (a batch that ran out of memory counts: the run took it)
        if oom:
            batch = None
            memory.lower(len(idx))
            continue
        s += len(idx)
        if bar is not None:
            bar.update(len(idx))
        verts = root = None
        same_model = str(bench.get("model", "")) == body_model.name
        if with_pve and same_model and "vertices" in bench:
            with torch.no_grad():
                o = body_model(*(t.to(body_model.device) for t in (res.global_orient, res.body_pose, res.betas,
                                                                 res.transl)), return_vertices=True)
            verts, root = o.vertices.cpu().numpy(), res.joints_3d[:, 0].numpy()
        sc = score(bench, idx, res.keypoints_3d.numpy(), conv.names, res.keypoints_2d_fit.numpy(), verts, root)
        for k, v in sc.items():
            rows.setdefault(k, []).append(v)
        valid.append(res.valid.numpy())
        rows.setdefault("reproj_error_px", []).append(res.reproj_error_px.numpy())
        for k in HYPOTHESIS_EXTRAS:
            if k in res.extras:
                rows.setdefault(k, []).append(res.extras[k].numpy())
    if bar is not None:
        bar.close()
    per = {k: np.concatenate(v) for k, v in rows.items()}
    per["valid"] = np.concatenate(valid)
    summary = {k: float(np.nanmean(v)) for k, v in per.items() if k not in ("valid",) + HYPOTHESIS_EXTRAS}
    summary["reproj_median_px"] = float(np.nanmedian(per["reproj_error_px"]))
    if "prototype" in per:  # which starting point won (SMPLify) or was picked (PM-Net regressor)
        summary["share_prototype"] = float((per["prototype"] >= 0).mean())
    if "depth_flip" in per:
        summary["share_depth_flip"] = float((per["depth_flip"] >= 0).mean())
    if "noisy_keypoints" in per:
        summary["share_noisy"] = float(per["noisy_keypoints"].mean())
    if "fallback" in per:
        summary["share_fallback"] = float(per["fallback"].mean())
    if "followed" in per:
        summary["share_followed"] = float(per["followed"].mean())
    trials = np.asarray(bench["trial"][:n]).astype(str) if "trial" in bench else None
    if "rare" in bench:
        rare = np.asarray(bench["rare"][:n], dtype=bool)
        for k in ("pa_mpjpe", "mpjpe"):
            summary[f"{k}_common"] = float(np.nanmean(per[k][~rare])) if (~rare).any() else float("nan")
            summary[f"{k}_rare"] = float(np.nanmean(per[k][rare])) if rare.any() else float("nan")
        summary["share_valid_rare"] = float(per["valid"][rare].mean()) if rare.any() else float("nan")
        common = summary["pa_mpjpe_common"]
        summary["rare_ratio"] = summary["pa_mpjpe_rare"] / common if common else float("nan")
        summary["rare_ratio_ci95"] = ratio_interval(per["pa_mpjpe"][rare], per["pa_mpjpe"][~rare],
                                                    rare_groups=None if trials is None else trials[rare],
                                                    common_groups=None if trials is None else trials[~rare])
        summary["rare_ratio_ci95_people"] = ratio_interval(per["pa_mpjpe"][rare], per["pa_mpjpe"][~rare])
        if trials is not None:
            summary["trials_rare"] = int(len(np.unique(trials[rare])))
        if "prototype" in per and rare.any():
            summary["share_prototype_rare"] = float((per["prototype"][rare] >= 0).mean())
    summary["pa_mpjpe_ci95"] = mean_interval(per["pa_mpjpe"], groups=trials)
    summary["pa_mpjpe_ci95_people"] = mean_interval(per["pa_mpjpe"])
    if trials is not None:
        summary["trials"] = int(len(np.unique(trials)))
    summary.update(count=n, unscored=int((~np.isfinite(per["pa_mpjpe"])).sum()),
                   share_valid=float(per["valid"].mean()), seconds=round(fit_time, 2),
                   fits_per_s=round(n / fit_time, 3) if fit_time > 0 else 0.0)
    if memory.size is not None:  # (the fits/s are of batches this size, after running out of GPU memory)
        summary["batch_size_lowered_to"] = memory.size
    return dict(summary=summary, per_person=per)
