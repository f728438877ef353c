#!/usr/bin/env bash
# Issue #20's GPU measurements, sized for a lent device machine (docs/benchmarks.md, "On a GPU"): it reaches no
# package registry and takes 64 MiB a call, and its Python has PyTorch and transformers' other needs. Here first:
# `make device-kit` (fills .device/). There, from the repository root, with .device carried:
#   benchmarks/device_check.sh
# It writes versions.txt, scheduler.{json,md} and batch_exactness.{json,md} into $OUT (else
# benchmarks/results/device/), both on SmolLM2-135M's shape with random weights (its 98 MB of weights do not fit in
# a call). 9 minutes on 2 CPU cores (tried in a virtual environment like the device's); a few on an H200, untried.
set -euo pipefail
kit=.device
out=${OUT:-benchmarks/results/device}
site=$(mktemp -d)
python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$kit"/wheels/*.whl
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1
mkdir -p "$out"
python3 -c 'import torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())' \
	| tee "$out/versions.txt"
python3 -m benchmarks.scheduler --random-weights-like "$kit/smollm2-shape" --out "$out"
python3 -m benchmarks.batch_exactness --random-weights-like "$kit/smollm2-shape" --out "$out"
