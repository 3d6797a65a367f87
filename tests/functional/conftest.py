"""Fixtures for the app tests: a temporary workspace with a short corpus, and a prebuilt run folder with fixed
contents (no weights worth loading, but valid enough to be listed), so snapshots are the same every time."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest

# A model small enough to train a few dozen steps in about a second on two CPU cores.
TINY = {
    "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 4, "max_iters": 30,
    "eval_interval": 10, "eval_iters": 2, "sample_interval": 10, "sample_tokens": 20, "tokenizer": "char",
    "warmup_iters": 5, "device": "cpu", "dtype": "float32",
}
FAKE_RUN = "20240102-030405-small-12.3K"
SMALL_CORPUS_CHARS = 40_000


def sample_text() -> str:
    return (resources.files("gptui") / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A workspace whose only corpus is `small.txt` (the first 40k characters of the sample)."""
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "small.txt").write_text(sample_text()[:SMALL_CORPUS_CHARS], encoding="utf-8")
    return tmp_path


def write_fake_run(home: Path, run_id: str = FAKE_RUN, *, steps: int = 200, seed: int = 0,
                   created: str = "2024-01-02T03:04:05") -> Path:
    """A completed run folder with fixed config, state, metrics and log; its weights file holds only a
    header (enough for the run to count as loadable in listings)."""
    from gptui.core.config import Config, config_to_dict, estimate_params

    run = home / "models" / run_id
    run.mkdir(parents=True)
    chars = sorted(set(sample_text()[:SMALL_CORPUS_CHARS]))
    settings = config_to_dict(Config(**{**TINY, "max_iters": steps, "eval_interval": 50}))
    (run / "config.json").write_text(json.dumps({
        "settings": settings, "corpus": "small", "corpus_sha256": "0" * 64, "corpus_bytes": SMALL_CORPUS_CHARS,
        "vocab_size": len(chars), "params": 12_345, "gptui_version": "0.1.0", "torch_version": "2.x",
        "created": created,
    }))
    (run / "state.json").write_text(json.dumps({
        "status": "completed", "step": steps, "best_val_loss": 2.1234 + seed / 10, "best_val_bpb": 3.0635 + seed / 10,
        "duration": 83.0, "updated": "2024-01-02T03:05:28", "stop_reason": "reached max_iters",
    }))
    lines = []
    for step in range(0, steps + 1, 10):
        loss = 4.2 - 2.0 * step / steps + 0.05 * ((step // 10) % 3) + seed / 10
        lines.append({"type": "train", "step": step, "elapsed": step * 0.4, "loss": loss, "lr": 1e-3,
                      "tokens_per_sec": 3200.0, "memory": {"kind": "process", "allocated": 300 << 20,
                                                           "reserved": 300 << 20, "peak": 310 << 20}})
        if step and step % 50 == 0:
            val = 4.3 - 2.1 * step / steps + seed / 10
            lines.append({"type": "eval", "step": step, "elapsed": step * 0.4, "train_loss": loss - 0.05,
                          "val_loss": val, "val_bpb": val / 0.693, "best": True})
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    (run / "train.log").write_text(
        "2024-01-02 03:04:05  gptui 0.1.0; run " + run_id + "\n"
        "2024-01-02 03:04:05  device cpu, precision float32, 12,345 parameters\n"
        "2024-01-02 03:05:28  finished: completed (reached max_iters) after 200 steps\n"
    )
    (run / "tokenizer.json").write_text(json.dumps({"type": "gptui-char", "version": 1, "chars": chars}))
    # zeros in the shapes the settings give (an embedding, and the rest in one tensor): as many weights as the
    # model has, so the run counts as loadable in listings (issue 21 checks the count against config.json)
    config = Config(**settings)
    emb, total = len(chars) * config.n_embd, estimate_params(config, len(chars))
    header = json.dumps({
        "lm_head.weight": {"dtype": "F32", "shape": [len(chars), config.n_embd],
                           "data_offsets": [0, 4 * emb]},
        "rest": {"dtype": "F32", "shape": [total - emb], "data_offsets": [4 * emb, 4 * total]},
    }).encode()
    (run / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(4 * total))
    return run


@pytest.fixture
def fake_run(home: Path) -> Path:
    return write_fake_run(home)


async def wait_for(pilot, condition: Callable[[], bool], what: str, tries: int = 600, step: float = 0.1) -> None:
    """Let the app run until `condition()` holds; fail (naming `what`) after `tries` pauses."""
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(step)
    raise AssertionError(f"timed out waiting for {what}")


async def started(pilot) -> None:
    """Wait for the tabs that mount just after the first frame."""
    await wait_for(pilot, lambda: pilot.app.tabs_mounted, "every tab to mount")


async def on_runs_tab(pilot, run_id: str):
    """Wait for the tabs, open the Runs tab, wait for `run_id` to be listed, select it and focus the table."""
    from textual.widgets import DataTable

    await started(pilot)
    await pilot.press("f5")
    table = pilot.app.query_one("#runs-table", DataTable)
    await wait_for(pilot, lambda: run_id in table.rows, "the run listed")
    table.move_cursor(row=table.get_row_index(run_id))
    table.focus()
    await pilot.pause()
    return table
