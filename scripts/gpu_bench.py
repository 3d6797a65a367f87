"""GPU training and generation speed at the `lecture` and `seed` presets, eager and compiled.

Prints three tables: training tokens/s, MFU against a bf16 matmul peak measured here, peak memory and time per
step; decoding speed of the lecture model and of the default preset's (`tiny`: the modern recipe) in float32 and
bfloat16, with and without the cache, ms per token over the first and last 50 tokens, 8 samples in one batch, and
whether the CUDA graph was captured; and the share of a training run spent in its samples. A row that failed (an
error, or on CUDA a decode step that fell back from its graph to eager) says FAIL, and the script then exits 3.
Runs on CPU too (`--device cpu --quick`) so the script itself is tested here.
Usage: python scripts/gpu_bench.py [--device cuda] [--quick] [--steps N]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from gptui.core import generate
from gptui.core.config import apply_overrides, flops_per_token, preset_config
from gptui.core.data import BatchSampler
from gptui.core.device import autocast, bf16_native, pick_dtype, setup_backend
from gptui.core.generate import Decoder, prepare_for_inference, sample_batch
from gptui.core.model import GPT, ModelConfig


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(device)
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - t))
    return best


def train_speed(preset: str, device: str, compiled: bool, steps: int, quick: bool) -> dict:
    config = preset_config(preset)
    if quick:
        config = apply_overrides(config, {"batch_size": 4})
    vocab = 65 if config.tokenizer == "char" else config.vocab_size
    dtype = pick_dtype("auto", device)
    torch.manual_seed(0)
    model = GPT(ModelConfig.from_config(config, vocab)).to(device)
    opt = model.configure_optimizer(config.weight_decay, config.lr, (config.beta1, config.beta2), device)
    forward = torch.compile(model) if compiled else model
    data = np.random.default_rng(0).integers(0, vocab, size=2_000_000).astype(np.uint16)
    batches = BatchSampler(data, config.block_size, config.batch_size, 0, pin_memory=device == "cuda")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        x, y = batches.next()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, dtype):
            _, loss = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(3 if not compiled else 5):  # warm-up (and compilation)
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss.detach())
    sync(device)
    per_step = (time.perf_counter() - t) / steps
    tokens = config.batch_size * config.block_size
    peak_mem = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    return {
        "preset": preset, "mode": "compiled" if compiled else "eager", "dtype": dtype,
        "tok_s": tokens / per_step, "flops": flops_per_token(config, vocab) * tokens / per_step,
        "ms_step": per_step * 1000, "peak_mem": peak_mem,
    }


DECODE_MODELS = ("lecture", "tiny")  # the lecture's model, and the default preset's (the modern recipe)
FAILED: list[str] = []  # what printed FAIL, for the exit status


def fail(what: str) -> str:
    FAILED.append(what)
    return "FAIL"


def decode_row(preset: str, device: str, dtype: str, use_cache: bool, tokens: int, batch: int = 1) -> dict:
    """The preset's model (random weights, prepared as `gptui generate` prepares a saved one) decoding `tokens`
    tokens from a 1-token prompt: tokens/s, the mean ms per token over the first and the last 50 (flat means no
    per-length cost), and why its CUDA graph capture failed, if it did."""
    config = preset_config(preset)
    vocab = 65 if config.tokenizer == "char" else config.vocab_size
    torch.manual_seed(0)
    model = prepare_for_inference(GPT(ModelConfig.from_config(config, vocab)), device, dtype)
    generate._graph_failure = None  # each row tries its own capture (a failure turns graphs off process-wide)
    decoder = Decoder(model, batch) if use_cache else None
    gen = torch.Generator(device=device).manual_seed(0)
    for _ in sample_batch(model, [0], 8, 1.0, 0, 1.0, gen, use_cache, batch, decoder):  # warm-up, capture
        pass
    times = []
    sync(device)
    t = time.perf_counter()
    for _ in sample_batch(model, [0], tokens, 1.0, 0, 1.0, gen, use_cache, batch, decoder):
        now = time.perf_counter()  # each step ends with reading the ids back: a sync
        times.append(now - t)
        t = now
    total = sum(times)
    edge = min(50, tokens // 2)
    return {
        "dtype": dtype, "cache": use_cache, "batch": batch, "tok_s": batch * tokens / total,
        "first_ms": 1000 * sum(times[:edge]) / edge, "last_ms": 1000 * sum(times[-edge:]) / edge,
        "graph": decoder is not None and decoder.graph is not None, "graph_failure": generate._graph_failure,
    }


def decode_table(device: str, tokens: int) -> None:
    dtypes = ["float32"] + (["bfloat16"] if bf16_native(device) else [])
    print(f"\ndecode, {tokens} tokens from a 1-token prompt (one refill past block_size where the block is shorter)")
    print(f"{'model':<8} {'dtype':<9} {'cache':<6} {'batch':>5} {'tok/s':>10} {'ms/tok first':>13} "
          f"{'ms/tok last':>12} {'flat':>5} {'graph':>6}")
    rows = [(d, c, 1) for d in dtypes for c in (True, False)] + [(dtypes[-1], True, 8)]
    for preset in DECODE_MODELS:
        for dtype, use_cache, batch in rows:
            head = f"{preset:<8} {dtype:<9} {str(use_cache):<6} {batch:>5}"
            try:
                r = decode_row(preset, device, dtype, use_cache, tokens, batch)
            except Exception as exc:
                print(f"{head} {fail(head)}: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
                continue
            flat = r["last_ms"] <= 1.25 * r["first_ms"]
            if device != "cuda" or not use_cache:
                graph = "n/a"
            elif r["graph"]:
                graph = "yes"
            else:  # on CUDA the cached step must replay its graph: falling back to eager is a defect
                graph = f"{fail(head)} (fell back to eager: {r['graph_failure']})"
            print(f"{head} {r['tok_s']:>10,.0f} {r['first_ms']:>13.2f} {r['last_ms']:>12.2f} "
                  f"{'yes' if flat else 'NO':>5} {graph:>6}")


def sample_overhead(device: str, preset: str, steps: int, quick: bool) -> dict:
    """A real TrainJob on the sample corpus with the preset's sampling settings: the share of wall time spent in
    the trainer's samples."""
    import tempfile

    from gptui.core import events as ev
    from gptui.core.trainer import TrainJob
    from gptui.core.workspace import Workspace

    quick_sets = {"batch_size": 4, "sample_tokens": 20, "warmup_iters": 0, "sample_interval": steps // 2}
    config = apply_overrides(preset_config(preset), {"max_iters": steps, "device": device, "eval_iters": 20}
                             | (quick_sets if quick else {}))
    spent: list[float] = []
    generate._graph_failure = None  # the trainer's samples capture their own graph
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        finished = TrainJob(Workspace(tmp).ensure(), "tinyshakespeare", config,
                            on_event=lambda e: spent.append(e.seconds) if isinstance(e, ev.Sample) else None).run()
        total = time.perf_counter() - t
    return {"preset": preset, "steps": finished.step, "samples": len(spent), "sample_s": sum(spent),
            "total_s": total, "share": 100 * sum(spent) / total, "status": finished.status,
            "graph_failure": generate._graph_failure}


def gpu_preset_quality(device: str, quick: bool) -> dict:
    """The `gpu` preset trained on the sample corpus as a user would (TrainJob, its own budget): best val bpb and
    the seconds it took. Target: at most 2.05 bits per byte in under 60 s on an H100 or H200."""
    import tempfile

    from gptui.core.trainer import TrainJob
    from gptui.core.workspace import Workspace

    sets = {"device": device} | ({"max_iters": 20, "eval_interval": 10, "batch_size": 4, "max_minutes": 0,
                                  "warmup_iters": 0, "sample_interval": 0, "eval_iters": 2} if quick else {})
    config = apply_overrides(preset_config("gpu"), sets)
    with tempfile.TemporaryDirectory() as tmp:
        f = TrainJob(Workspace(tmp).ensure(), "tinyshakespeare", config).run()
    return {"steps": f.step, "seconds": f.duration, "bpb": f.best_val_bpb, "reason": f.reason,
            "tok_s": f.tokens_per_sec}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="small batches and few steps (to test the script)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args()
    device = args.device
    setup_backend(device)
    steps = 2 if args.quick else args.steps
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = matmul_peak(device, torch.bfloat16, 1024 if args.quick else 8192)
    print(f"device: {name}; torch {torch.__version__}; bf16 matmul peak measured {peak / 1e12:.1f} TFLOP/s")
    print(f"{'preset':<8} {'mode':<9} {'dtype':<9} {'tokens/s':>12} {'MFU':>6} {'ms/step':>9} {'peak mem':>10}")
    for preset in ("lecture", "seed"):
        for compiled in (False, True):
            if compiled and args.no_compile:
                continue
            try:
                r = train_speed(preset, device, compiled, steps, args.quick)
            except Exception as exc:  # report and go on: one broken mode must not hide the others
                head = f"{preset:<8} {'compiled' if compiled else 'eager':<9}"
                print(f"{head} {fail(head)}: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
                continue
            print(f"{r['preset']:<8} {r['mode']:<9} {r['dtype']:<9} {r['tok_s']:>12,.0f} "
                  f"{r['flops'] / peak:>6.1%} {r['ms_step']:>9.1f} {r['peak_mem'] / 2**30:>8.2f}GB")
    decode_table(device, 60 if args.quick else 300)
    try:
        q = gpu_preset_quality(device, args.quick)
        ok = q["bpb"] is not None and q["bpb"] <= 2.05 and q["seconds"] < 60
        print(f"\ngpu preset: best val {q['bpb']:.4f} bits/byte after {q['steps']} steps in {q['seconds']:.1f}s "
              f"({q['reason']}), {q['tok_s']:,.0f} tok/s; target <= 2.05 in < 60 s: {'yes' if ok else 'NO'}")
    except Exception as exc:
        print(f"\ngpu preset: {fail('gpu preset')}: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
    print("\ntraining samples (tiny: 1000 steps, lecture: 500 steps, each with its preset's sample settings)")
    for preset, steps in (("tiny", 30 if args.quick else 1000), ("lecture", 10 if args.quick else 500)):
        steps_note = "quick: batch 4, two 20-token samples" if args.quick else "eval_iters 20"
        try:
            r = sample_overhead(device, preset, steps, args.quick)
        except Exception as exc:
            print(f"{preset:<8} {fail(preset + ' samples')}: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
            continue
        line = (f"{preset:<8} {r['steps']} steps in {r['total_s']:.1f}s, {r['samples']} sample(s) took "
                f"{r['sample_s']:.2f}s: {r['share']:.2f}% of the run ({steps_note})")
        if r["status"] != "completed" or not r["samples"]:
            line += f"; {fail(preset + ' samples')}: the run ended {r['status']} with {r['samples']} samples"
        elif device == "cuda" and r["graph_failure"]:
            line += f"; {fail(preset + ' samples')}: the samples fell back to eager ({r['graph_failure']})"
        print(line)
    if FAILED:
        print(f"\nFAIL: {len(FAILED)} row(s): {'; '.join(' '.join(f.split()) for f in FAILED)}")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
