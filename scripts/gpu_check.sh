#!/usr/bin/env bash
# The GPU checks, run on a lent machine with an NVIDIA card (installs nothing): the `gpu` tests, then training
# throughput at the lecture and seed presets (eager and compiled) and the generation benchmark, as one table;
# last, a 1-GPU run through torchrun and NCCL.
# Usage: bash scripts/gpu_check.sh   (expects torch with CUDA and the project importable)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
python -m pytest -q -m gpu tests/device -p no:cacheprovider 2>&1 | tail -15
python scripts/gpu_bench.py --device cuda --steps "${STEPS:-30}"
# One GPU through torchrun and NCCL (issue 10): `gptui train --nproc-per-node 1` on the tiny preset, 60 steps,
# in a scratch workspace; one line with the status, the backend and tokens/s (skipped without CUDA).
if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  ddp_home=$(mktemp -d)
  python -m gptui --home "$ddp_home" train --input tinyshakespeare --preset tiny --set max_iters=60 \
    --set eval_interval=60 --set eval_iters=5 --set sample_interval=0 --set device=cuda --nproc-per-node 1 \
    >"$ddp_home/out.json" 2>"$ddp_home/err.txt"
  code=$?
  python - "$ddp_home" "$code" <<'PY'
import glob, json, sys
home, code = sys.argv[1], int(sys.argv[2])
backend = next((line.split("distributed: ", 1)[1].strip() for path in glob.glob(f"{home}/models/*/train.log")
                for line in open(path) if "distributed: " in line), "no distributed line in train.log")
try:
    s = json.loads(open(f"{home}/out.json").read().strip().splitlines()[-1])
    print(f"ddp 1 GPU: exit {code}, {s['status']} ({s['reason']}), {s['steps']} steps, "
          f"{s['tokens_per_sec']:,} tokens/s, val bpb {s['best_val_bpb']}; {backend}")
except (OSError, ValueError, IndexError, KeyError):
    err = open(f"{home}/err.txt").read().strip().splitlines()
    print(f"ddp 1 GPU: exit {code}, FAILED: {err[-1] if err else 'no output'}")
PY
  rm -rf "$ddp_home"
else
  echo "ddp 1 GPU: skipped (no CUDA device)"
fi
