#!/usr/bin/env bash
# The compile benchmarks on a CUDA GPU (a few minutes): writes the "compile_gpu" section of
# docs/benchmarks.md, which names the card. Needs torch with CUDA and the MNIST and bbc_news
# data (`make data`), e.g. `make data && bash benchmarks/gpu.sh`.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-../.venv/bin/python}
"$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU visible"; print(torch.cuda.get_device_name())'
"$PYTHON" compile.py
