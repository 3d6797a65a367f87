"""Soak checks: memory must not grow beyond the first minutes.

  python bench/soak.py generations [--count 200]      200 generations in one process
  python bench/soak.py training [--minutes 30]         one long training run (the tiny preset, time budget)

Each prints resident memory early and late and the growth between; exit 1 when growth exceeds the bound.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import psutil

from gptui.core.workspace import Workspace

MB = 1 << 20


def rss() -> int:
    return psutil.Process(os.getpid()).memory_info().rss


def soak_generations(count: int, bound_mb: float) -> bool:
    from gptui.core.config import apply_overrides, preset_config
    from gptui.core.generate import SamplingSettings, load_model, stream_text
    from gptui.core.runs import RunStore
    from gptui.core.trainer import TrainJob

    with tempfile.TemporaryDirectory() as home:
        ws = Workspace(home).ensure()
        config = apply_overrides(preset_config("tiny"), {"max_iters": 20, "warmup_iters": 2, "eval_interval": 20,
                                                         "eval_iters": 2, "sample_interval": 0})
        result = TrainJob(ws, "tinyshakespeare", config).run()
        loaded = load_model(RunStore(ws).resolve(result.run_id), "cpu")
        readings = []
        for i in range(count):
            settings = SamplingSettings(max_new_tokens=100, seed=i, top_k=50, top_p=0.95, stop="\n\n\n")
            "".join(stream_text(loaded, "ROMEO:", settings))
            readings.append(rss())
    warm = readings[min(19, count - 1)]
    growth = (readings[-1] - warm) / MB
    print(f"generations: {count} x 100 tokens; RSS after 20: {warm / MB:.1f} MB, after {count}: "
          f"{readings[-1] / MB:.1f} MB, growth {growth:+.1f} MB (bound {bound_mb} MB)")
    return growth <= bound_mb


def soak_training(minutes: float, bound_mb: float) -> bool:
    from gptui.core import events as ev
    from gptui.core.config import apply_overrides, preset_config
    from gptui.core.trainer import TrainJob

    samples: list[tuple[float, int]] = []

    def on_event(e):
        if isinstance(e, ev.Step) and (not samples or e.elapsed - samples[-1][0] >= 30):
            samples.append((e.elapsed, e.memory.get("allocated", 0)))

    with tempfile.TemporaryDirectory() as home:
        ws = Workspace(home).ensure()
        config = apply_overrides(preset_config("tiny"), {"max_iters": 10_000_000, "max_minutes": minutes})
        t0 = time.time()
        result = TrainJob(ws, "tinyshakespeare", config, on_event=on_event).run()
    early = next((m for t, m in samples if t >= min(180, minutes * 60 / 3)), samples[0][1])
    late = samples[-1][1]
    growth = (late - early) / MB
    print(f"training: {result.step} steps in {(time.time() - t0) / 60:.1f} min; RSS at "
          f"{min(3, minutes / 3):.1f} min: {early / MB:.1f} MB, at the end: {late / MB:.1f} MB, peak "
          f"{max(m for _, m in samples) / MB:.1f} MB, growth {growth:+.1f} MB (bound {bound_mb} MB)")
    for t, m in samples[:: max(1, len(samples) // 12)]:
        print(f"  {t / 60:6.1f} min  {m / MB:8.1f} MB")
    return growth <= bound_mb


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("generations", "training"))
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--bound-mb", type=float, default=50.0)
    args = p.parse_args()
    ok = soak_generations(args.count, args.bound_mb) if args.what == "generations" else soak_training(
        args.minutes, args.bound_mb)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
