"""Batched ``@`` against :func:`fit3d.geometry.broadcast_matmul` for fitting's tiny products.

The shapes are those of one SMPLify body-stage iteration at ``--people`` people x 10 rows
(the ``body_clean`` stage): a depth level of anny's chain (4 bones, 3x3 by 3x4), the
articulated rotations (19 bones, 3x3 by 3x3), the axis change of ``body_pose`` (1x3 by 3x3)
and the placing of 23 keypoints (by 3x3). Each is timed forward and backward, milliseconds
per call, best of ``--repeats``.

    python benchmarks/small_matmul_probe.py [--device cuda] [--people 16384] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

ROWS_PER_PERSON = 10


def best_ms(fn, repeats: int, sync) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--people", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()

    import torch

    from fit3d.geometry import broadcast_matmul

    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    R = a.people * ROWS_PER_PERSON
    cases = {"chain level (R,4,3,3)@(R,4,3,4)": ((R, 4, 3, 3), (R, 4, 3, 4)),
             "rotations (19,3,3)@(R,19,3,3)": ((19, 3, 3), (R, 19, 3, 3)),
             "axes (R,19,1,3)@(19,3,3)": ((R, 19, 1, 3), (19, 3, 3)),
             "placing (R,23,3)@(R,3,3)": ((R, 23, 3), (R, 3, 3))}
    print(f"{a.device}, {R} rows: forward + backward, ms per call (best of {a.repeats})")
    print(f"{'product':40} {'@':>9} {'broadcast':>10} {'ratio':>7}")
    for name, (sa, sb) in cases.items():
        x = torch.randn(sa, device=a.device, requires_grad=True)
        y = torch.randn(sb, device=a.device, requires_grad=True)

        def run(f):
            out = f(x, y)
            out.backward(torch.ones_like(out))

        ms = [best_ms(lambda f=f: run(f), a.repeats, sync) for f in (torch.matmul, broadcast_matmul)]
        print(f"{name:40} {ms[0]:9.3f} {ms[1]:10.3f} {ms[0] / ms[1]:7.2f}", flush=True)


if __name__ == "__main__":
    main()
