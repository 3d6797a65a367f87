"""Recipe sweep: train named recipes on the sample corpus, each under the same wall-clock budget, one after the
other, and print the best validation bits per byte each reached.

    python bench/sweep.py [--minutes M | --steps N] [--only NAME ...] [--json FILE]

Each recipe is the `tiny-classic` preset plus the overrides listed in RECIPES. With a time budget (the default,
4 minutes), max_iters is set per recipe so its learning-rate schedule ends near 92% of the budget on a quiet
2-core machine (steps per minute measured on an AMD EPYC with AVX512-BF16; `--steps-per-minute` scales them).
With `--steps N` every recipe trains exactly N steps whatever the time: quality per step, which a busy machine
cannot skew. Runs live in a
temporary workspace removed at exit. The results of the sweep behind the presets are in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODERN = {"pos_embedding": "rope", "norm": "rmsnorm", "mlp": "relu2", "qk_norm": True, "tie_embeddings": False,
          "logit_softcap": 15.0}
TINY = {"optimizer": "muon", "muon_lr": 0.02, "vocab_size": 2048}
# name: (overrides on tiny-classic, steps per minute of budget on 2 cores)
RECIPES: dict[str, tuple[dict, int]] = {
    "tiny-classic": ({}, 207),
    "modern-adamw": (MODERN, 180),
    "modern-muon": ({**MODERN, "optimizer": "muon", "muon_lr": 0.02}, 165),
    "modern-muon-lr05": ({**MODERN, "optimizer": "muon", "muon_lr": 0.05}, 165),
    "modern-muon-swiglu": ({**MODERN, "mlp": "swiglu", "optimizer": "muon", "muon_lr": 0.02}, 160),
    "modern-muon-bpe1024": ({**MODERN, "optimizer": "muon", "muon_lr": 0.02, "vocab_size": 1024}, 160),
    "modern-muon-wide": ({**MODERN, "optimizer": "muon", "muon_lr": 0.02, "n_embd": 256, "n_head": 4}, 108),
    "modern-muon-lr4e-3": ({**MODERN, "optimizer": "muon", "muon_lr": 0.02, "lr": 4e-3}, 165),
    "modern-muon-bpe2048": ({**MODERN, "optimizer": "muon", "muon_lr": 0.02, "vocab_size": 2048}, 126),
    # the tiny preset as each transformers class computes it exactly (issue 16): nanochat's norm after the
    # embedding (NanoChatForCausalLM); SwiGLU and no soft-cap, with QK-norm (Qwen3ForCausalLM) or without
    # (LlamaForCausalLM)
    "tiny-nanochat": ({**MODERN, **TINY, "embed_norm": True}, 126),
    "tiny-qwen3": ({**MODERN, **TINY, "mlp": "swiglu", "logit_softcap": 0.0}, 126),
    "tiny-llama": ({**MODERN, **TINY, "mlp": "swiglu", "logit_softcap": 0.0, "qk_norm": False}, 126),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--steps", type=int, help="train every recipe exactly this many steps (no time budget)")
    p.add_argument("--only", nargs="+", choices=list(RECIPES), metavar="NAME")
    p.add_argument("--steps-per-minute", type=float, default=1.0, help="scale every recipe's steps per minute")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from gptui.core import events as ev
    from gptui.core.config import apply_overrides, preset_config
    from gptui.core.trainer import TrainJob
    from gptui.core.workspace import Workspace

    rows = []
    with tempfile.TemporaryDirectory(prefix="gptui-sweep-") as tmp:
        ws = Workspace(Path(tmp)).ensure()
        for name in args.only or list(RECIPES):
            overrides, per_minute = RECIPES[name]
            steps = args.steps or max(100, int(per_minute * args.steps_per_minute * args.minutes))
            config = apply_overrides(preset_config("tiny-classic"), {
                **overrides, "max_iters": steps, "eval_interval": max(50, steps // 4),
                "max_minutes": 0 if args.steps else args.minutes, "sample_interval": 0,
            })
            evals: list = []
            budget = "no time budget" if args.steps else f"{args.minutes:g} min budget"
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {steps} steps, {budget}", file=sys.stderr, flush=True)
            result = TrainJob(ws, "tinyshakespeare", config, name=name,
                              on_event=lambda e, evals=evals: evals.append(e) if isinstance(e, ev.Eval) else None).run()
            rows.append({"recipe": name, "overrides": overrides, "max_iters": steps, "steps": result.step,
                         "seconds": round(result.duration, 1), "best_val_bpb": result.best_val_bpb,
                         "tokens_per_sec": round(result.tokens_per_sec), "reason": result.reason,
                         "curve": [(e.step, round(e.elapsed), round(e.val_bpb, 4)) for e in evals]})
            print(f"  {name}: best {result.best_val_bpb:.4f} bpb, {result.step} steps in {result.duration:.0f}s "
                  f"({result.reason}), {result.tokens_per_sec:,.0f} tok/s", file=sys.stderr, flush=True)
    print(f"{'recipe':<22} {'steps':>6} {'seconds':>8} {'tok/s':>8} {'val bpb':>8}")
    for r in rows:
        print(f"{r['recipe']:<22} {r['steps']:>6} {r['seconds']:>8} {r['tokens_per_sec']:>8,} "
              f"{r['best_val_bpb']:>8.4f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
