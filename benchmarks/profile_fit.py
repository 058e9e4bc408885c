"""Where a fit's time goes: ``torch.profiler`` over one SMPLify or EFT fit.

Prints the wall time and the number of kernel launches, then the top operators by self
device time (its footer gives the total kernel time: wall >> kernel time means a launch-
or host-bound run) and by self CPU time. The profiler's own cost grows with the number of
operator calls: a whole SMPLify fit of 4,096 people on an H200 took over 100 s under it
(2026-11-30), EFT at 16,384 people 6.5 s (4.1 s unprofiled).
The people are :func:`bench_smplify.synthetic_batch`'s (random anny poses, 1 px noise).

    python benchmarks/profile_fit.py [--device cuda] [--fitter smplify|eft] [--batch-size 4096] [--top 15] \
        [--iterations 10]

``--iterations N`` runs every SMPLify stage for N iterations (EFT: N steps) instead of the
schedule's, so that the profiler's cost stays bounded at large batches; the per-iteration
mix of operators is the same.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from bench_smplify import synthetic_batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fitter", choices=["smplify", "eft"], default="smplify")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--iterations", type=int, default=None, help="per stage (SMPLify) or steps (EFT)")
    a = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from fit3d.body_models.anny_model import AnnyModel
    from fit3d.fitters.build import build_eft, build_smplify

    model = AnnyModel(device=a.device)
    batch = synthetic_batch(model, a.batch_size, a.device)
    fitter = build_smplify(model) if a.fitter == "smplify" else build_eft(model)
    if a.iterations is not None and a.fitter == "smplify":
        fitter.schedule = [replace(st, iterations=a.iterations) for st in fitter.schedule]
    elif a.iterations is not None:
        fitter.steps = a.iterations
    cuda = a.device.startswith("cuda")
    fitter(batch.index(slice(0, min(8, len(batch)))))  # warm-up
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t = time.perf_counter()
    with profile(activities=activities) as prof:
        res = fitter(batch)
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - t
    events = prof.key_averages()
    iterations = float(res.iterations.float().mean())
    line = f"{a.fitter} B={a.batch_size} {a.device}: wall {wall:.2f} s (profiled), mean iterations {iterations:.0f}"
    if cuda:
        launches = sum(e.count for e in events if "LaunchKernel" in e.key)
        line += f", kernel launches {launches} ({launches / max(iterations, 1):.0f} per iteration)"
    print(line)
    if cuda:
        print(events.table(sort_by="self_device_time_total", row_limit=a.top, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=a.top, max_name_column_width=60))


if __name__ == "__main__":
    main()
