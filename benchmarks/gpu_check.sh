#!/usr/bin/env bash
# GPU measurements of COBLA (issue 15), in under 8 minutes, on a machine without internet. Run from the
# repository root with .whl/ and .fmnist/ beside it (benchmarks/gpu_prepare.sh makes them, elsewhere):
#   bash benchmarks/gpu_check.sh            # results in $OUT (default benchmarks/results/gpu/)
# Steps (each with its own timeout; seconds at most): install the carried wheels (15); the CUDA tests of
# tests/test_torch_device.py (45); COBLA end to end on zoo:resnet18 at 224x224, 5% of the 60000
# Fashion-MNIST training images per gradient, on the GPU (170: 90 s of COBLA time budget); the same run on
# the CPU for 2 SQP iterations (230: 170 s budget); then the comparison (gpu_check.json). Both runs start
# the SQP without the pos-cvx warm start: that is a CPU MILP (about 30 s at its time limit on resnet18),
# the same work on both devices, which would only eat the budgets. Each bench JSON is rewritten after
# every SQP iteration, so a run stopped by its timeout still reports what it measured.
set -uo pipefail

OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1
started=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - started ))s] $*"; }

stamp "installing the carried wheels into /tmp/site"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 2
# edgecomp maps the top-level runtime/, exporters/ and device_profiles/ into the package (pyproject's
# package-dir), which a plain checkout on PYTHONPATH lacks: an overlay copy of edgecomp/ links them in.
rm -rf /tmp/src && mkdir -p /tmp/src && cp -r edgecomp /tmp/src/
for sub in runtime exporters device_profiles; do ln -sfn "$PWD/$sub" "/tmp/src/edgecomp/$sub"; done
export PYTHONPATH="/tmp/site:/tmp/src:$PWD"
export PYTHONSAFEPATH=1  # `python3 -m pytest` / `-c` would put the checkout's own edgecomp/ first (Python >= 3.11)
export EDGECOMP_FASHION_MNIST_DIR="$PWD/.fmnist"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import torch, edgecomp.runtime, jsonschema; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 2

stamp "CUDA tests (tests/test_torch_device.py)"
timeout 45 python3 -m pytest -q -p no:cacheprovider tests/test_torch_device.py 2>&1 | tee "$OUT/pytest.log" | tail -15

stamp "COBLA on cuda"
timeout 170 python3 benchmarks/bench_gpu.py "$OUT/cuda.json" --device cuda --max-iter 40 --time-budget 90 \
    --warm-start none --sample 0.05
stamp "COBLA on the CPU, 2 SQP iterations"
timeout 230 python3 benchmarks/bench_gpu.py "$OUT/cpu.json" --device cpu --max-iter 2 --time-budget 170 \
    --warm-start none --sample 0.05

stamp "comparison"
python3 benchmarks/bench_gpu.py --compare "$OUT/cuda.json" "$OUT/cpu.json" "$OUT/gpu_check.json"
stamp "done"
