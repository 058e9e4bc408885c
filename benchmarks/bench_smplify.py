"""SMPLify throughput: fits/s, iterations/s and peak memory per batch size.

Synthetic people (random anny poses and shapes, full-frame 640x480 camera,
1 px keypoint noise), the default schedule and 4 orientation hypotheses.
Each configuration runs in a fresh subprocess so that the CPU peak memory
(max RSS) belongs to it alone; on CUDA the peak is torch's allocator peak.

    python benchmarks/bench_smplify.py [--device cpu|cuda] [--batch-sizes 1,16,64,256]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fit3d.data.batching import PersonBatch


def synthetic_batch(model, n: int, device: str) -> PersonBatch:
    """``n`` random anny people seen by a 640x480 camera (f = 800 px), 1 px keypoint noise."""
    import roma
    import torch

    from fit3d.data.batching import PersonBatch
    from fit3d.geometry import project

    g = torch.Generator().manual_seed(0)
    yaw = torch.rand(n, generator=g) * 2 * math.pi
    R = roma.rotvec_to_rotmat(torch.tensor([math.pi, 0.0, 0.0])) @ roma.rotvec_to_rotmat(
        torch.stack([torch.zeros(n), yaw, torch.zeros(n)], -1))
    params = dict(
        global_orient=roma.rotmat_to_rotvec(R),
        body_pose=torch.randn(n, model.num_body_joints, 3, generator=g) * 0.2,
        betas=torch.randn(n, model.num_betas, generator=g) * 0.5,
        transl=torch.stack([torch.zeros(n), torch.zeros(n), 3 + 3 * torch.rand(n, generator=g)], -1),
    )
    params = {k: v.to(device) for k, v in params.items()}
    with torch.no_grad():
        out = model(**params)
    f = torch.full((n, 2), 800.0, device=device)
    pp = torch.tensor([[320.0, 240.0]], device=device).repeat(n, 1)
    kp = project(out.keypoints_3d, f, pp)
    kp = kp + torch.randn(kp.shape, generator=g).to(device)
    lo, hi = kp.min(1).values, kp.max(1).values
    return PersonBatch(torch.cat([kp, torch.ones_like(kp[..., :1])], -1), torch.cat([lo, hi - lo], -1), f, pp,
                       torch.tensor([[640.0, 480.0]], device=device).repeat(n, 1), model.keypoint_convention)


def one(device: str, batch_size: int, threads: int | None) -> dict:
    import torch

    from fit3d.body_models.anny_model import AnnyModel
    from fit3d.fitters import SMPLify

    if threads:
        torch.set_num_threads(threads)
    model = AnnyModel(device=device)
    n = batch_size
    batch = synthetic_batch(model, n, device)
    fitter = SMPLify(model)
    if device.startswith("cuda"):
        fitter(batch.index(slice(0, 1)))  # warm-up (kernels, allocator)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    res = fitter(batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dt = time.perf_counter() - t
    steps = float(res.iterations.float().mean())
    return dict(device=device, batch_size=n, seconds=round(dt, 3), fits_per_s=round(n / dt, 3),
                iterations_per_s=round(steps / dt, 2), mean_iterations=round(steps, 1),
                median_reproj_px=round(float(res.reproj_error_px.median()), 2), peak_memory_mb=round(peak_mb, 1))


def run_one(cmd: list[str], timeout: float | None) -> dict:
    """One configuration in a fresh process: its JSON line, or ``{"error": why}`` (time-out, crash,
    out of memory) so that a sweep reports what it reached instead of dying."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(error=f"over {timeout:.0f} s")
    if proc.returncode:
        return dict(error=f"exit {proc.returncode}: " + (proc.stderr.strip().splitlines() or [""])[-1][:200])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", default="1,16,64,256")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per batch size; larger batch sizes are skipped after one times out or fails")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one(a.device, a.one, a.threads)))
        return
    print(f"{'device':8} {'B':>5} {'fits/s':>8} {'iter/s':>8} {'s':>8} {'peak MiB':>9} {'2D px':>6}")
    for b in (int(x) for x in a.batch_sizes.split(",")):
        cmd = [sys.executable, __file__, "--device", a.device, "--one", str(b)]
        if a.threads:
            cmd += ["--threads", str(a.threads)]
        r = run_one(cmd, a.timeout)
        if "error" in r:
            print(f"{a.device:8} {b:>5} stopped: {r['error']}", flush=True)
            break
        print(f"{r['device']:8} {b:>5} {r['fits_per_s']:>8.2f} {r['iterations_per_s']:>8.1f} {r['seconds']:>8.2f} "
              f"{r['peak_memory_mb']:>9.0f} {r['median_reproj_px']:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
