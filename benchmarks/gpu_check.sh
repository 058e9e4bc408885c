#!/usr/bin/env bash
# Everything fit3d checks on a CUDA machine, in one call with a bounded time:
#   A. (in parallel) the CUDA smoke tests (tests/test_cuda.py: every fitter, prior, fitting
#      command and training command on the GPU, anny and a SMPL-family stand-in), and the
#      accuracy of EFT and SMPLify on the GPU on the held-out-subject benchmark (300 people,
#      the README's protocol), to compare with the CPU numbers;
#   B. SMPLify throughput per batch size (benchmarks/bench_smplify.py);
#   C. EFT throughput per batch size, both fine-tuning presets (benchmarks/bench_eft.py).
# Each phase has a time limit; a batch size that runs out of memory or time ends its sweep
# with a "stopped:" line instead of ending the script. Logs go to $OUT (default gpu_out/).
#
#     OUT=gpu_out [BENCH=file.npz] bash benchmarks/gpu_check.sh [smplify batch sizes] [eft batch sizes]
# BENCH: a benchmark made on the CPU (to compare CPU and GPU on the same people); default: made here.
set -u
OUT=${OUT:-gpu_out}
SMPLIFY_SIZES=${1:-1,256,4096,16384}
EFT_SIZES=${2:-1,256,4096,16384}
mkdir -p "$OUT"
BENCH=${BENCH:-$OUT/bench.npz}
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

echo "== A: CUDA smoke tests and GPU accuracy (parallel)"
t0=$SECONDS
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py >"$OUT/test_cuda.log" 2>&1 &
tests=$!
(
  timeout 170 bash -c "
    test -f \"$BENCH\" || python3 -m fit3d.cli.main benchmark make --count 300 --out \"$BENCH\" &&
    python3 -m fit3d.cli.main benchmark run --bench \"$BENCH\" --fitter eft --device cuda --batch-size 300 \
        --out $OUT/acc_eft.json &&
    python3 -m fit3d.cli.main benchmark run --bench \"$BENCH\" --fitter smplify --device cuda --batch-size 300 \
        --out $OUT/acc_smplify.json"
) >"$OUT/accuracy.log" 2>&1
echo "accuracy: exit $? ($((SECONDS - t0)) s)"
wait $tests
echo "tests: exit $? ($((SECONDS - t0)) s)"
tail -3 "$OUT/test_cuda.log"
python3 - "$OUT" <<'EOF'
import json, sys, pathlib
for f in ("acc_eft.json", "acc_smplify.json"):
    p = pathlib.Path(sys.argv[1]) / f
    if p.is_file():
        s = json.loads(p.read_text())
        print(f, {k: s[k] for k in s if k in ("pa_mpjpe", "pa_mpjpe_common", "pa_mpjpe_rare", "mpjpe", "share_valid", "fits_per_s", "reproj_median_px")})
EOF

echo "== B: SMPLify throughput"
timeout 150 python3 benchmarks/bench_smplify.py --device cuda --batch-sizes "$SMPLIFY_SIZES" --timeout 70 \
  2>&1 | tee "$OUT/smplify.txt"
echo "== C: EFT throughput"
timeout 170 python3 benchmarks/bench_eft.py --device cuda --batch-sizes "$EFT_SIZES" --configs all,fast --timeout 45 \
  2>&1 | tee "$OUT/eft.txt"
echo "== done in $SECONDS s"
