"""How much ``torch.compile`` could save in SMPLify's largest stage: one iteration, eager vs compiled.

SMPLify on a GPU is launch-bound up to a few thousand people and memory-bound beyond
(README, "GPU"): an iteration is ~1,500 small operators, each reading and writing whole
tensors. Fusing them is the way past that. This probe times the work of one iteration of the
``body_clean`` stage (the stage with the most row-iterations: 10 rows per person, the two kept
hypotheses and their 8 limb depth flips, for 80 iterations) -- pose-only forward kinematics of
anny, placing, projection and the stage's losses with the default prior (GMM), then the
backward -- once as fit3d runs it (eager) and once through ``torch.compile`` (inductor,
static shapes, one compilation), on the same tensors. It reports milliseconds per iteration,
the compilation time and the largest difference of loss and gradients. Adam's update is not
included (eager in both). Nothing in fit3d uses ``torch.compile`` (README: on the CPU every
stage's row count recompiled); this measures what it would buy before anyone builds on it.

    python benchmarks/compile_probe.py [--device cuda] [--people 4096,16384] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

from bench_smplify import synthetic_batch

ROWS_PER_PERSON = 10  # body_clean: 2 hypotheses + 8 depth flips


def timed(fn, repeats: int, sync) -> float:
    """Seconds per call of ``fn`` (after one untimed call)."""
    fn()
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t) / repeats


def probe(model, fitter, people: int, device: str, repeats: int) -> dict:
    import torch

    from fit3d.body_models.base import BodyOutput

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    stage = next(st for st in fitter.schedule if st.name == "body_clean")
    batch = synthetic_batch(model, people, device).repeat_interleave(ROWS_PER_PERSON)
    n = len(batch)
    g = torch.Generator(device="cpu").manual_seed(1)
    betas = (torch.randn(people, model.num_betas, generator=g) * 0.5).to(device)
    with torch.no_grad():
        terms = model._rest_skeleton(betas)
    params = dict(global_orient=(torch.randn(n, 3, generator=g) * 0.3).to(device),
                  body_pose=(torch.randn(n, model.num_body_joints, 3, generator=g) * 0.2).to(device),
                  transl=torch.tensor([0.0, 0.0, 4.0]).repeat(n, 1).to(device),
                  betas=betas.repeat_interleave(ROWS_PER_PERSON, 0))
    from fit3d.fitters import losses as L
    from fit3d.fitters.smplify import face_evidence

    ctx = dict(scale=L.person_scale(batch.keypoints_2d, batch.bbox),
               evidence=face_evidence(batch.keypoints_2d, batch.convention))
    leaves = [params[k].requires_grad_(True) for k in ("global_orient", "body_pose", "transl")]

    def loss_fn(go, bp, tr):
        joints, kp = model.kinematics(bp, terms, model.joint_bones)
        body = model.place(BodyOutput(None, joints, kp), go, tr)
        p = dict(params, global_orient=go, body_pose=bp, transl=tr)
        return fitter.losses(stage, body, p, batch, ctx).sum()

    def step(fn):
        for t in leaves:
            t.grad = None
        loss = fn(*leaves)
        loss.backward()
        return loss.detach(), [t.grad.clone() for t in leaves]

    eager_s = timed(lambda: step(loss_fn), repeats, sync)
    ref_loss, ref_grads = step(loss_fn)
    compiled = torch.compile(loss_fn, dynamic=False)
    t = time.perf_counter()
    step(compiled)
    sync()
    compile_s = time.perf_counter() - t
    comp_s = timed(lambda: step(compiled), repeats, sync)
    loss, grads = step(compiled)
    rel = float((loss - ref_loss).abs() / ref_loss.abs().clamp(min=1e-12))
    grad = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)) for a, b in zip(grads, ref_grads))
    return dict(people=people, rows=n, eager_ms=round(eager_s * 1e3, 2), compiled_ms=round(comp_s * 1e3, 2),
                speedup=round(eager_s / comp_s, 2), compile_s=round(compile_s, 1), loss_rel_diff=rel,
                grad_rel_diff=grad)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--people", default="64")
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()

    from fit3d.body_models.anny_model import AnnyModel
    from fit3d.fitters.build import build_smplify

    model = AnnyModel(device=a.device)
    fitter = build_smplify(model)
    print("device     people     rows   eager ms  compiled ms  speedup  compile s  loss diff  grad diff")
    for n in (int(x) for x in a.people.split(",")):
        r = probe(model, fitter, n, a.device, a.repeats)
        print(f"{a.device:8} {r['people']:8} {r['rows']:8} {r['eager_ms']:10.2f} {r['compiled_ms']:12.2f} "
              f"{r['speedup']:8.2f} {r['compile_s']:10.1f} {r['loss_rel_diff']:10.1e} {r['grad_rel_diff']:10.1e}",
              flush=True)


if __name__ == "__main__":
    main()
