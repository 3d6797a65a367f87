from __future__ import annotations

import pytest

from gptui.core.config import apply_overrides, preset_config
from gptui.core.workspace import Workspace

LINES = [
    "First Citizen: Before we proceed any further, hear me speak.",
    "All: Speak, speak.",
    "First Citizen: You are all resolved rather to die than to famish?",
    "All: Resolved. resolved.",
    "MENENIUS: What work's, my countrymen, in hand? where go you?",
]


@pytest.fixture
def small_workspace(tmp_path) -> Workspace:
    ws = Workspace(tmp_path)
    ws.inputs.mkdir(parents=True)
    (ws.inputs / "small.txt").write_text("\n".join(LINES * 60) + "\n", encoding="utf-8")
    return ws.ensure()


@pytest.fixture
def small_config():
    config = apply_overrides(preset_config("tiny"), dict(
        n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4, max_iters=12, warmup_iters=2,
        eval_interval=6, eval_iters=2, sample_interval=0, tokenizer="char", device="cpu", dtype="float32",
    ))
    return config



def gptui(home, *args, timeout=120, **kwargs):
    """Run the CLI in a subprocess, as a user would."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "gptui", "--home", str(home), *args], capture_output=True,
                          text=True, timeout=timeout, **kwargs)
