"""Shared fixtures for the engine (tests/unit) and command-line (tests/cli) suites.

Nothing here imports torch at module level: tests/functional (the TUI) checks that the app starts without it.
Every fixture works in pytest's tmp_path, never in the repository's own inputs/ or models/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_CORPUS = "tiny"

# The brief's tiny model: one block, 32 wide, 32 tokens of context; trains 20 steps in well under a second.
TINY_OVERRIDES = {
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "batch_size": 4,
    "max_iters": 20,
    "warmup_iters": 2,
    "eval_interval": 10,
    "eval_iters": 2,
    "sample_interval": 10,
    "sample_tokens": 10,
    "tokenizer": "char",
    "device": "cpu",
    "dtype": "float32",
}

_LINES = [
    "First Citizen: Before we proceed any further, hear me speak.",
    "All: Speak, speak.",
    "First Citizen: You are all resolved rather to die than to famish?",
    "All: Resolved. resolved.",
    "First Citizen: First, you know Caius Marcius is chief enemy to the people.",
    "All: We know't, we know't.",
    "Second Citizen: Would you proceed especially against Caius Marcius?",
    "MENENIUS: What work's, my countrymen, in hand? where go you",
]


def corpus_text(n_lines: int = 150) -> str:
    """A few KB of deterministic Shakespeare-like text (about 40 characters of vocabulary)."""
    return "\n".join(f"{_LINES[i % len(_LINES)]} {i % 7}" for i in range(n_lines)) + "\n"


@pytest.fixture
def workspace(tmp_path):
    from gptui.core.workspace import Workspace

    return Workspace(tmp_path).ensure()


@pytest.fixture
def corpus(workspace) -> Path:
    """inputs/tiny.txt in the test workspace (about 8 KB)."""
    path = workspace.inputs / f"{TINY_CORPUS}.txt"
    path.write_text(corpus_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_overrides() -> dict:
    return dict(TINY_OVERRIDES)


@pytest.fixture(scope="session")
def make_corpus_text():
    """The corpus generator, for fixtures and tests that need the text itself (or a longer one)."""
    return corpus_text


@pytest.fixture
def tiny_config():
    from gptui.core.config import apply_overrides, check, preset_config

    return check(apply_overrides(preset_config("tiny-classic"), TINY_OVERRIDES))


@pytest.fixture
def small_workspace(workspace, corpus):
    """A workspace whose inputs/ holds the tiny corpus, ready to train on."""
    return workspace


@pytest.fixture
def small_config(tiny_config):
    """The tiny model evaluated (and checkpointed) at steps 6 and 12, without samples: a run in a blink."""
    import dataclasses

    return dataclasses.replace(tiny_config, max_iters=12, eval_interval=6, sample_interval=0)
