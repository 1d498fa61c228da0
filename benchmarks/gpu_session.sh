#!/usr/bin/env bash
# The GPU checks, run on a lent GPU machine by the `device` tool (see the closing notes):
#   1. the pinned venv (make venv: torch 2.14.1, torchvision 0.29.1), never the machine's system Python;
#   2. the training test suite with device=auto, i.e. on CUDA (TESTS=0 skips it);
#   3. each of $CONFIGS (default: fast94) on the GPU, whole `cnnlab train` process, for each of $SEEDS;
#   4. the sweeps of benchmarks/grids/$GRIDS.yaml (GRIDS="" skips them), which rank on validation.
# Expects CIFAR-10 under $CNNLAB_DATA and writes a summary to $OUT (default ./gpu-out), headed by the GPU,
# the torch version and the commit.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
make venv >/dev/null || { echo "make venv failed"; exit 1; }
PY=.venv/bin/python
log="$OUT/gpu_session.txt"
{
  date -u +%F
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  if [ "${TESTS:-1}" != 0 ]; then
    echo "== tests on CUDA"
    timeout "${TEST_TIMEOUT:-180}" $PY -m pytest -q -x -p no:cacheprovider tests/test_train.py tests/test_engine.py \
      tests/test_resume.py tests/test_models.py tests/test_augment.py tests/test_config.py 2>&1 | tail -8
  fi
  for config in ${CONFIGS:-fast94}; do
    echo "== $config on the GPU (whole process)"
    for seed in ${SEEDS:-0 1}; do
      start=$(date +%s.%N)
      $PY -m cnnlab train --config configs/$config.yaml --seed $seed --out /tmp/gpu-$config-s$seed --no-progress \
        | tail -1
      $PY -c "import json,sys; s=json.load(open('/tmp/gpu-$config-s$seed/summary.json')); \
print(f\"$config seed $seed: test {100*s['test_accuracy']:.2f} %, {s['precision']}, train {s['train_seconds']:.1f} s, \
process {float(sys.argv[2])-float(sys.argv[1]):.1f} s\")" "$start" "$(date +%s.%N)"
    done
  done
  for grid in ${GRIDS-}; do
    echo "== sweep $grid (ranked on validation)"
    timeout "${SWEEP_TIMEOUT:-240}" $PY -m cnnlab ablate benchmarks/grids/$grid.yaml --out /tmp/$grid --no-progress \
      > /tmp/$grid.log 2>&1
    cat /tmp/$grid/comparison.md 2>/dev/null || tail -5 /tmp/$grid.log
  done
} 2>&1 | tee "$log"
