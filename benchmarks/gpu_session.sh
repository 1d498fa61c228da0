#!/usr/bin/env bash
# The GPU checks, run on a lent GPU machine by the `device` tool (see the closing notes):
#   1. the training test suite with device=auto, i.e. on CUDA;
#   2. fast94 on the GPU, whole `cnnlab train` process, two seeds;
#   3. the accuracy sweeps of benchmarks/grids/*.yaml (used to choose the CPU configs).
# Expects CIFAR-10 under $CNNLAB_DATA and writes a summary to $OUT (default ./gpu-out).
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src
log="$OUT/gpu_session.txt"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  echo "== tests on CUDA"
  timeout "${TEST_TIMEOUT:-180}" python3 -m pytest -q -x -p no:cacheprovider tests/test_train.py tests/test_engine.py \
    tests/test_models.py tests/test_augment.py tests/test_config.py tests/test_cli.py 2>&1 | tail -8
  echo "== fast94 on the GPU (whole process)"
  for seed in 0 1; do
    start=$(date +%s.%N)
    python3 -m cnnlab train --config configs/fast94.yaml --seed $seed --out /tmp/gpu-fast94-s$seed --no-progress \
      | tail -2
    python3 -c "import json,sys; s=json.load(open('/tmp/gpu-fast94-s$seed/summary.json')); \
print(f\"fast94 seed $seed: test {100*s['test_accuracy']:.2f} %, train {s['train_seconds']:.1f} s, \
process {float(sys.argv[2])-float(sys.argv[1]):.1f} s\")" "$start" "$(date +%s.%N)"
  done
  for grid in ${GRIDS:-fast-sweep muon-sweep}; do
    echo "== sweep $grid"
    timeout "${SWEEP_TIMEOUT:-240}" python3 -m cnnlab ablate benchmarks/grids/$grid.yaml --out /tmp/$grid --no-progress \
      > /tmp/$grid.log 2>&1
    cat /tmp/$grid/comparison.md 2>/dev/null || tail -5 /tmp/$grid.log
  done
} 2>&1 | tee "$log"
