#!/usr/bin/env bash
# Every GPU figure of benchmarks/gpu.md in one go, for a machine lent for a few minutes:
#   bash benchmarks/gpu.sh OUT_DIR [DEVICE]      (DEVICE: cuda by default; cpu to try the script)
# Each step has its own time limit, so a slow step costs its limit and no more; one log per step
# lands in OUT_DIR with the command, its output, its wall time and its exit status.
set -u
out=${1:?usage: bash benchmarks/gpu.sh OUT_DIR [DEVICE]}
dev=${2:-cuda}
mkdir -p "$out"
runs=$(mktemp -d)  # the smoke runs' records (their figures are in smoke.log)
export PYTHONUNBUFFERED=1

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  { echo "\$ $*"; timeout "$limit" "$@" 2>&1; rc=$?
    echo "wall $((SECONDS - t0)) s, exit $rc$([ "$rc" = 124 ] && echo " (stopped at its $limit s limit)")"
  } | tee "$out/$name.log"
}

{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__,
  'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
} | tee "$out/machine.log"

# correctness first: the README's main job end to end on the device (smoke profile)
step smoke 120 dfml-bench run --method bidf_mkd,random --scenario SS --profile smoke --device "$dev" \
  --results "$runs" --no-progress
# its records carry the IEEE float32 stamp: compare refuses (exit 2) a CUDA record without it
step smoke_compare 30 dfml-bench compare "$runs" --format csv
# the ZO estimate needs IEEE float32: its cosine to the exact gradient with TF32 convolutions on and off
step zo_rounding 40 python3 benchmarks/zo_rounding.py --device "$dev"
# headline ratios: ZO step / bare API forward at the profiles' step sizes; a quick run over its floor
step zo_headline 60 python3 benchmarks/zo_estimator.py --device "$dev" --archs '' --headline-repeats 5 --threads 0
step end_to_end 180 python3 benchmarks/end_to_end.py --device "$dev" --meta-iterations 10 --threads 0
step zo_memory 45 python3 benchmarks/zo_memory.py --device "$dev" --api-width 64
step inner_loop 40 python3 benchmarks/inner_loop.py --device "$dev" --steps 10
step zo_ablate 50 python3 benchmarks/zo_estimator.py --device "$dev" --batch 150 --q 100 --resnet-width 64 \
  --ablate --threads 0 --headline ''
step zo_bf16 40 python3 benchmarks/zo_estimator.py --device "$dev" --batch 150 --q 100 --resnet-width 64 --bf16 \
  --threads 0 --headline ''
