"""GPU training and generation speed at the `lecture` and `seed` presets, eager and compiled.

Prints one table: tokens/s, MFU against a bf16 matmul peak measured here, peak memory, time per step, and the
KV-cache generation speed-up. Runs on CPU too (`--device cpu --quick`) so the script itself is tested here.
Usage: python scripts/gpu_bench.py [--device cuda] [--quick] [--steps N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gptui.core.config import apply_overrides, flops_per_token, preset_config
from gptui.core.data import BatchSampler
from gptui.core.device import autocast, pick_dtype, setup_backend
from gptui.core.generate import sample_ids
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
    batches = BatchSampler(data, config.block_size, config.batch_size, 0)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        x, y = batches.next()
        if device == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
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


def generation_speed(device: str, tokens: int) -> tuple[float, float]:
    config = preset_config("lecture")
    torch.manual_seed(0)
    model = GPT(ModelConfig.from_config(config, 65)).to(device).eval()
    out = {}
    for use_cache in (True, False):
        gen = torch.Generator(device=device).manual_seed(0)
        with autocast(device, pick_dtype("auto", device)):
            list(sample_ids(model, [0], 8, 1.0, 0, 1.0, gen, use_cache))  # warm-up
            sync(device)
            t = time.perf_counter()
            list(sample_ids(model, [0], tokens, 1.0, 0, 1.0, gen, use_cache))
            sync(device)
        out[use_cache] = tokens / (time.perf_counter() - t)
    return out[True], out[False]


def main() -> None:
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
                print(f"{preset:<8} {'compiled' if compiled else 'eager':<9} failed: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:80]}")
                continue
            print(f"{r['preset']:<8} {r['mode']:<9} {r['dtype']:<9} {r['tok_s']:>12,.0f} "
                  f"{r['flops'] / peak:>6.1%} {r['ms_step']:>9.1f} {r['peak_mem'] / 2**30:>8.2f}GB")
    cached, full = generation_speed(device, 50 if args.quick else 500)
    print(f"generation (lecture, {50 if args.quick else 500} tokens): KV cache {cached:,.0f} tok/s, "
          f"full recompute {full:,.0f} tok/s, speed-up {cached / full:.1f}x")


if __name__ == "__main__":
    main()
