"""Engine tests: one CPU thread (the machine has two, shared), and one trained run reused read-only."""

from __future__ import annotations

import shutil

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory, tiny_overrides, make_corpus_text):
    """A workspace holding one completed tiny run (20 steps, char tokenizer). Treat it as read-only: copy the
    run folder (see `run_copy`) before damaging or changing it."""
    from gptui.core.config import apply_overrides, check, preset_config
    from gptui.core.trainer import TrainJob
    from gptui.core.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("trained")).ensure()
    (ws.inputs / "tiny.txt").write_text(make_corpus_text(), encoding="utf-8")
    config = check(apply_overrides(preset_config("tiny-classic"), tiny_overrides))
    finished = TrainJob(ws, "tiny", config, name="trained").run()
    assert finished.status == "completed"
    return ws


@pytest.fixture(scope="session")
def trained_run(trained_workspace):
    from gptui.core.runs import RunStore

    (run,) = RunStore(trained_workspace).runs()
    return run


@pytest.fixture
def run_copy(trained_run, workspace):
    """A private copy of the trained run inside this test's own workspace."""
    from gptui.core.runs import Run

    dest = workspace.models / trained_run.id
    shutil.copytree(trained_run.path, dest)
    return Run(dest)
