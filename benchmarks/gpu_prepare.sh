#!/usr/bin/env bash
# Gather what benchmarks/gpu_check.sh needs on a GPU machine that has no internet, run HERE (a machine
# with PyPI and the Fashion-MNIST files), from anywhere in the repository:
#   .whl/    the wheels that machine lacks (its Python 3.12 has torch, numpy, scipy, onnx, onnxruntime,
#            click, pyyaml, safetensors, tqdm, matplotlib, attrs, typing-extensions; not jsonschema and
#            its dependencies), for cp312 manylinux x86-64, at the versions of constraints.txt;
#   .fmnist/ the four Fashion-MNIST .gz files (EDGECOMP_FASHION_MNIST_DIR there), 30 MB.
# Both are ignored through the repository's info/exclude (never committed); both travel with the run
# (name them in its carry list). Together about 31 MiB of the 64 MiB a run may carry.
set -euo pipefail

cd "$(git rev-parse --show-toplevel)"
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
for entry in /.whl/ /.fmnist/; do
    grep -qxF "$entry" "$exclude" 2>/dev/null || echo "$entry" >>"$exclude"
done

PACKAGES=(jsonschema jsonschema-specifications referencing rpds-py)
pins=()
for name in "${PACKAGES[@]}"; do
    pin=$(grep -i "^${name}==" constraints.txt || true)
    pins+=("${pin:-$name}")
done

rm -rf .whl
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"

source_dir="${EDGECOMP_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
mkdir -p .fmnist
for split in train t10k; do
    for kind in images-idx3 labels-idx1; do
        cp "$source_dir/$split-$kind-ubyte.gz" .fmnist/
    done
done

ls -l .whl .fmnist
du -ch .whl .fmnist | tail -1
echo "ready: run benchmarks/gpu_check.sh on the GPU machine with .whl and .fmnist carried"
