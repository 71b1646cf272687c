#!/usr/bin/env bash
# The GPU checks and benchmarks (about 7 minutes on one H200): the numerics tests' CUDA cases,
# then the "compile_gpu" and "seed_cnn_speed_gpu" sections of docs/benchmarks.md, which name
# the card. Needs torch with CUDA and the MNIST and bbc_news data:
# `make data && bash benchmarks/gpu.sh`.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-../.venv/bin/python}
"$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU visible"; print(torch.cuda.get_device_name())'
"$PYTHON" -m pytest ../tests/test_kernels.py -k cuda -q -p no:cacheprovider
"$PYTHON" compile.py
"$PYTHON" seed_cnn_speed.py
