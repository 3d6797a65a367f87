"""Checks that need a real NVIDIA GPU; skipped without one (CI has none). Run by scripts/gpu_check.sh."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gptui.core import events as ev
from gptui.core.device import memory_reading, pick_device, pick_dtype
from gptui.core.runs import RunStore
from gptui.core.trainer import TrainJob

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_auto_picks_cuda_with_bf16_where_supported():
    assert pick_device("auto") == "cuda"
    assert pick_dtype("auto", "cuda") == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")


def test_training_on_cuda_learns_and_reports_torch_memory(small_workspace, small_config):
    config = dataclasses.replace(small_config, device="auto", dtype="auto", max_iters=60, eval_interval=30)
    steps, evals = [], []
    job = TrainJob(small_workspace, "tiny", config,
                   on_event=lambda e: (steps if isinstance(e, ev.Step) else evals).append(e))
    result = job.run()
    assert result.status == "completed"
    started = [e for e in evals if isinstance(e, ev.Started)][0]
    assert started.device == "cuda"
    mem = [e for e in steps][-1].memory
    assert mem["kind"] == "cuda" and mem["allocated"] > 0 and mem["reserved"] >= mem["allocated"]
    assert mem["peak"] >= mem["allocated"]
    losses = [e.val_loss for e in evals if isinstance(e, ev.Eval)]
    assert losses[-1] < losses[0] or losses[-1] < 3.0


def test_memory_reading_matches_torch_cuda():
    x = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")
    reading = memory_reading("cuda")
    assert reading.allocated == torch.cuda.memory_allocated()
    assert reading.reserved == torch.cuda.memory_reserved()
    assert reading.peak == torch.cuda.max_memory_allocated()
    del x


def test_generation_on_cuda_is_deterministic_with_a_seed(small_workspace, small_config):
    from gptui.core.generate import generate_text, load_model
    from gptui.core.sampling import SamplingSettings

    result = TrainJob(small_workspace, "tiny", dataclasses.replace(small_config, device="cuda")).run()
    loaded = load_model(RunStore(small_workspace).resolve(result.run_id), "cuda")
    settings = SamplingSettings(max_new_tokens=40, seed=3)
    assert generate_text(loaded, "All:", settings) == generate_text(loaded, "All:", settings)


def test_compiled_training_on_cuda(small_workspace, small_config):
    config = dataclasses.replace(small_config, device="cuda", compile=True)
    logs = []
    result = TrainJob(small_workspace, "tiny", config,
                      on_event=lambda e: logs.append(e) if isinstance(e, ev.Log) else None).run()
    assert result.status == "completed"


def test_training_batches_for_cuda_are_pinned_and_contiguous():
    """A pinned strided view would be copied through a pageable temporary: non_blocking would overlap nothing."""
    import numpy as np

    from gptui.core.data import BatchSampler

    x, y = BatchSampler(np.arange(1000, dtype=np.uint16), 8, 4, 0, pin_memory=True).next()
    assert x.is_pinned() and y.is_pinned() and x.is_contiguous() and y.is_contiguous()
    assert torch.equal(x.to("cuda", non_blocking=True)[:, 1:].cpu(), y[:, :-1])


def test_a_resume_with_dropout_on_cuda_continues_the_cuda_random_stream(small_workspace, small_config):
    """Dropout on CUDA draws from the CUDA generator: a resumed run starts from the state the stopped one had
    (the uninterrupted run's state at that step), not from a fresh seed."""
    config = dataclasses.replace(small_config, device="cuda", dtype="float32", dropout=0.2)
    at_step: dict = {}

    def record(name):
        def on_event(e):
            if isinstance(e, ev.Eval) and e.step == 6:
                at_step[name] = torch.cuda.get_rng_state()
                if name == "parted":
                    job.stop()
            elif isinstance(e, ev.Started) and e.start_step == 6:
                at_step["resumed"] = torch.cuda.get_rng_state()
        return on_event

    whole = TrainJob(small_workspace, "tiny", config, name="whole", on_event=record("whole")).run()
    job = TrainJob(small_workspace, "tiny", config, name="parted", on_event=record("parted"))
    stopped = job.run()
    assert stopped.status == "stopped" and stopped.step == 6
    resumed = TrainJob(small_workspace, None, None, resume=stopped.run_id, on_event=record("resumed")).run()
    assert resumed.status == "completed" and resumed.step == whole.step
    assert torch.equal(at_step["resumed"], at_step["whole"])
    assert resumed.best_val_loss == pytest.approx(whole.best_val_loss, rel=1e-3)
