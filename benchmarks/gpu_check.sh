#!/usr/bin/env bash
# Everything fit3d checks on a CUDA machine, in one call with a bounded time:
#   A. (in parallel) the CUDA smoke tests (tests/test_cuda.py: every fitter, prior, fitting
#      command and training command on the GPU, anny and a SMPL-family stand-in), and the
#      accuracy of EFT and SMPLify on the GPU on the held-out-subject benchmark (300 people,
#      the README's protocol), to compare with the CPU numbers;
#   B. SMPLify throughput per batch size (benchmarks/bench_smplify.py);
#   C. EFT throughput per batch size, both fine-tuning presets with flip averaging (`fit3d eft`'s
#      default since 2026-12-01; benchmarks/bench_eft.py);
#   D. whole-process throughput of `fit3d eft|smplify --device cuda` (benchmarks/bench_process.py);
#   E. what torch.compile would save in SMPLify's largest stage (benchmarks/compile_probe.py).
# Each phase has a time limit; a batch size that runs out of memory or time ends its sweep
# with a "stopped:" line instead of ending the script. Logs go to $OUT (default gpu_out/). The
# exit status is non-zero when the tests or the accuracy check failed.
#
#     OUT=gpu_out [BENCH=file.npz] bash benchmarks/gpu_check.sh [smplify batch sizes] [eft batch sizes] [people] \
#         [compile-probe people]
# BENCH: a benchmark made on the CPU (to compare CPU and GPU on the same people); default: made here.
set -u
OUT=${OUT:-gpu_out}
SMPLIFY_SIZES=${1:-1,256,4096,16384}
EFT_SIZES=${2:-1,256,4096,16384}
PROCESS_PEOPLE=${3:-2048}
PROBE_PEOPLE=${4:-16384,4096}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)  # absolute: the script runs from the repository root
BENCH=$(realpath -m "${BENCH:-$OUT/bench.npz}")
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

echo "== A: CUDA smoke tests and GPU accuracy (parallel)"
t0=$SECONDS
timeout 140 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py >"$OUT/test_cuda.log" 2>&1 &
tests=$!
# (its fits/s share the GPU and CPUs with the tests: only the accuracy is comparable)
timeout 140 bash -c '
  test -f "$1" || python3 -m fit3d.cli.main benchmark make --count 300 --out "$1" &&
  python3 -m fit3d.cli.main benchmark run --bench "$1" --fitter eft --device cuda --batch-size 300 \
      --out "$2/acc_eft.json" &&
  python3 -m fit3d.cli.main benchmark run --bench "$1" --fitter smplify --device cuda --batch-size 300 \
      --out "$2/acc_smplify.json"' _ "$BENCH" "$OUT" >"$OUT/accuracy.log" 2>&1
arc=$?
echo "accuracy: exit $arc ($((SECONDS - t0)) s)"
wait $tests
trc=$?
echo "tests: exit $trc ($((SECONDS - t0)) s)"
tail -3 "$OUT/test_cuda.log"
python3 - "$OUT" <<'EOF'
import json, sys, pathlib
for f in ("acc_eft.json", "acc_smplify.json"):
    p = pathlib.Path(sys.argv[1]) / f
    if p.is_file():
        s = json.loads(p.read_text())
        keys = ("pa_mpjpe", "pa_mpjpe_common", "pa_mpjpe_rare", "mpjpe", "share_valid", "reproj_median_px")
        print(f, {k: s[k] for k in keys if k in s})
EOF

echo "== B: SMPLify throughput"
timeout 120 python3 benchmarks/bench_smplify.py --device cuda --batch-sizes "$SMPLIFY_SIZES" --timeout 50 \
  2>&1 | tee "$OUT/smplify.txt"
echo "== C: EFT throughput"
timeout 100 python3 benchmarks/bench_eft.py --device cuda --batch-sizes "$EFT_SIZES" --configs flip,fast-flip --timeout 40 \
  2>&1 | tee "$OUT/eft.txt"
echo "== D: whole process (fit3d eft / smplify --device cuda on $PROCESS_PEOPLE people, model load and I/O included)"
timeout 110 python3 benchmarks/bench_process.py --people "$PROCESS_PEOPLE" \
  --commands "eft --device cuda --batch-size $PROCESS_PEOPLE;smplify --device cuda --batch-size $PROCESS_PEOPLE" \
  2>&1 | tee "$OUT/process.txt"
echo "== E: torch.compile of SMPLify's body_clean iteration (people: $PROBE_PEOPLE)"
(cd benchmarks && timeout 110 python3 compile_probe.py --device cuda --people "$PROBE_PEOPLE" --repeats 10) \
  2>&1 | tee "$OUT/compile.txt"
echo "== done in $SECONDS s"
exit $((trc || arc))  # the sweeps report their own failures as "stopped:" lines
