#!/usr/bin/env bash
# The GPU checks, run on a lent machine with an NVIDIA card (installs nothing): the `gpu` tests, then training
# throughput at the lecture and seed presets (eager and compiled), decoding of the lecture and default models
# (graph captured or not), the gpu preset's time to quality and the training samples' share, as tables; last, a
# 1-GPU run through torchrun and NCCL. Every failed check prints a line starting with FAIL and makes the exit
# status 1; anything else that goes wrong (no interpreter, no torch, a crash) stops the script there (set -eu).
# Without CUDA it runs the same on the CPU (bench --quick) so the script itself can be tried anywhere.
# Usage: [PYTHON=python3] [STEPS=30] bash scripts/gpu_check.sh   (torch, tokenizers, safetensors, numpy, psutil
# and pytest; Textual is not needed)
set -eu -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=()

# run NAME FAILED_STATUS CMD...: when CMD exits FAILED_STATUS (its checks ran and some failed: pytest 1,
# gpu_bench 3) that is recorded and the next check runs; any other non-zero status (a crash, a usage error, an
# interrupted run) stops the script
run() {
  local name=$1 failed_status=$2 code=0
  shift 2
  "$@" || code=$?
  if [ "$code" -eq 0 ]; then
    return 0
  elif [ "$code" -eq "$failed_status" ]; then
    echo "FAIL: $name"
    failed+=("$name")
  else
    echo "ERROR: $name exited $code; stopping" >&2
    exit "$code"
  fi
}

command -v "$PY" >/dev/null || { echo "ERROR: no interpreter $PY (set PYTHON)" >&2; exit 2; }
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
cuda=$("$PY" -c "import torch; print(1 if torch.cuda.is_available() else 0)")

run "tests/device" 1 "$PY" -m pytest -q -m gpu tests/device -p no:cacheprovider
if [ "$cuda" = 1 ]; then
  run "gpu_bench" 3 "$PY" scripts/gpu_bench.py --device cuda --steps "${STEPS:-30}"
else
  echo "no CUDA device: the bench runs on the CPU (--quick) to try the script"
  run "gpu_bench (cpu, quick)" 3 "$PY" scripts/gpu_bench.py --device cpu --quick --no-compile
fi

# One GPU through torchrun and NCCL (issue 10): `gptui train --nproc-per-node 1` on the tiny preset, 60 steps,
# in a scratch workspace; one line with the status, the backend and tokens/s.
if [ "$cuda" = 1 ]; then
  ddp_home=$(mktemp -d)
  code=0
  "$PY" -m gptui --home "$ddp_home" train --input tinyshakespeare --preset tiny --set max_iters=60 \
    --set eval_interval=60 --set eval_iters=5 --set sample_interval=0 --set device=cuda --nproc-per-node 1 \
    >"$ddp_home/out.json" 2>"$ddp_home/err.txt" || code=$?
  run "ddp 1 GPU" 3 "$PY" - "$ddp_home" "$code" <<'PY'
import glob, json, sys
home, code = sys.argv[1], int(sys.argv[2])
backend = next((line.split("distributed: ", 1)[1].strip() for path in glob.glob(f"{home}/models/*/train.log")
                for line in open(path) if "distributed: " in line), "no distributed line in train.log")
try:
    s = json.loads(open(f"{home}/out.json").read().strip().splitlines()[-1])
    print(f"ddp 1 GPU: exit {code}, {s['status']} ({s['reason']}), {s['steps']} steps, "
          f"{s['tokens_per_sec']:,} tokens/s, val bpb {s['best_val_bpb']}; {backend}")
    ok = code == 0 and s["status"] == "completed"
except (OSError, ValueError, IndexError, KeyError):
    err = open(f"{home}/err.txt").read().strip().splitlines()
    print(f"ddp 1 GPU: exit {code}, no summary: {err[-1] if err else 'no output'}")
    ok = False
sys.exit(0 if ok else 3)
PY
  rm -rf "$ddp_home"
else
  echo "ddp 1 GPU: skipped (no CUDA device)"
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAIL: ${#failed[@]} check(s) failed: ${failed[*]}"
  exit 1
fi
echo "all checks passed"
