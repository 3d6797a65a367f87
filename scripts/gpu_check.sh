#!/usr/bin/env bash
# The GPU checks, run on a lent machine with an NVIDIA card (installs nothing): the `gpu` tests, then training
# throughput at the lecture and seed presets (eager and compiled) and the generation benchmark, as one table.
# Usage: bash scripts/gpu_check.sh   (expects torch with CUDA and the project importable)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
python -m pytest -q -m gpu tests/device -p no:cacheprovider 2>&1 | tail -15
python scripts/gpu_bench.py --device cuda --steps "${STEPS:-30}"
