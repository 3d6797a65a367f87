"""torch.compile is optional: where it cannot work, training carries on eagerly and says so in the log."""

from __future__ import annotations

import dataclasses

import torch

from gptui.core import events as ev
from gptui.core.trainer import TrainJob


def _train(ws, config):
    logs = []
    job = TrainJob(ws, "tiny", config, on_event=lambda e: logs.append(e.line) if isinstance(e, ev.Log) else None)
    return job.run(), logs


def test_compile_unavailable_falls_back_to_eager(monkeypatch, small_workspace, small_config):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    result, logs = _train(small_workspace, dataclasses.replace(small_config, compile=True))
    assert result.status == "completed" and result.step == small_config.max_iters
    assert any("torch.compile unavailable" in line for line in logs)


def test_compile_failing_at_first_step_falls_back_to_eager(monkeypatch, small_workspace, small_config):
    def compile_that_fails_when_called(model, *args, **kwargs):
        def forward(*a, **k):
            raise RuntimeError("inductor backend crashed")

        return forward

    monkeypatch.setattr(torch, "compile", compile_that_fails_when_called)
    result, logs = _train(small_workspace, dataclasses.replace(small_config, compile=True))
    assert result.status == "completed" and result.step == small_config.max_iters
    assert any("torch.compile failed" in line for line in logs)
