#!/usr/bin/env bash
# The compile benchmarks on a GPU: the "compile_gpu" section of docs/benchmarks.md, which names
# the card and says how long compile.py ran (the Triton recurrence's layer and train-step rows
# and goals among them). With --all, first the tests' CUDA cases (compiled cells, the Triton
# kernels and their registers and shared memory against the card's limits, MNIST kept on the
# GPU) and after it the seed CNN's training runs ("seed_cnn_speed_gpu") and the epoch against a
# hand-written loop ("epoch_time_gpu"), minutes more.
# Needs torch with CUDA and the MNIST and bbc_news data: `make data && bash benchmarks/gpu.sh`.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-../.venv/bin/python}
ALL=${1:-}
"$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU visible"; print(torch.cuda.get_device_name())'
if [[ $ALL == --all ]]; then "$PYTHON" -m pytest ../tests/test_kernels.py ../tests/test_triton_recurrent.py ../tests/test_triton_aot.py ../tests/test_data.py -k cuda -q -p no:cacheprovider; fi
"$PYTHON" compile.py
if [[ $ALL == --all ]]; then "$PYTHON" seed_cnn_speed.py && "$PYTHON" epoch_time.py; fi
