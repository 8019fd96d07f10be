#!/usr/bin/env bash
# Builds the isolated virtualenv that runs the AIMET peer benchmark.
#
# AIMET (aimet-torch) pins nothing on torch but pulls torchvision, cvxpy, bokeh,
# tensorboard, ... — far too much for the edgecomp environment (which must not
# depend on torchvision), so it lives in its own venv outside the repository.
#
# Usage: bash benchmarks/aimet/setup_venv.sh [VENV_DIR]   (default /work/aimet-venv)
set -euo pipefail

VENV="${1:-/work/aimet-venv}"
PY="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Every transitive version pinned to what the published numbers were measured with.
LOCK=(-c "$HERE/requirements-lock.txt")

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# torch/torchvision first and pinned, so aimet-torch's unpinned "torch"/"torchvision"
# requirements are satisfied by exactly these builds.
"$VENV/bin/python" -m pip install "${LOCK[@]}" "torch==2.14.1" "torchvision==0.29.1"
"$VENV/bin/python" -m pip install "${LOCK[@]}" "aimet-torch==2.42.0" "torch==2.14.1" "torchvision==0.29.1" \
    numpy safetensors
"$VENV/bin/python" -m pip freeze > "$VENV/pip-freeze.txt"
"$VENV/bin/python" - <<'PY'
import aimet_torch, torch, torchvision
from aimet_torch.compress import ModelCompressor  # noqa: F401  (fails loudly if the install is broken)
print("aimet_torch", getattr(aimet_torch, "__version__", "?"), "torch", torch.__version__,
      "torchvision", torchvision.__version__)
PY
echo "venv ready: $VENV (frozen requirements in $VENV/pip-freeze.txt)"
