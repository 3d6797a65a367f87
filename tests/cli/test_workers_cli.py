"""`--workers N` on `gptui prepare` and `gptui train`: any number of encoding threads writes the same tokens;
a bad count is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import assert_one_line_error, gptui


def make_home(root: Path, make_corpus_text) -> Path:
    notes = root / "inputs" / "notes"
    notes.mkdir(parents=True)
    for i in range(30):
        (notes / f"{i:02d}.txt").write_text(f"Note {i}.\n{make_corpus_text(5 + i % 7)}", encoding="utf-8")
    (root / "inputs" / "tiny.txt").write_text(make_corpus_text(), encoding="utf-8")
    return root


def cached_tokens(home: Path) -> bytes:
    (tokens,) = (home / ".cache").rglob("tokens.bin")
    return tokens.read_bytes()


def test_prepare_with_any_number_of_workers_writes_the_same_tokens(tmp_path, make_corpus_text):
    outputs = []
    for workers in ("1", "3"):
        home = make_home(tmp_path / workers, make_corpus_text)
        result = gptui(home, "prepare", "--input", "notes", "--vocab-size", "300", "--workers", workers)
        assert result.returncode == 0, result.stderr
        outputs.append(cached_tokens(home))
    assert outputs[0] == outputs[1] and len(outputs[0]) > 1000


def test_train_takes_workers(tmp_path, make_corpus_text):
    home = make_home(tmp_path, make_corpus_text)
    settings = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 2, "max_iters": 2,
                "warmup_iters": 1, "eval_interval": 2, "eval_iters": 1, "sample_interval": 0, "tokenizer": "char",
                "device": "cpu", "dtype": "float32"}
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    result = gptui(home, "train", "--input", "notes", "--workers", "1", *sets)
    assert result.returncode == 0, result.stderr
    assert cached_tokens(home)


@pytest.mark.parametrize("command", ["prepare", "train"])
@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_a_bad_worker_count_is_one_line(tmp_path, make_corpus_text, command, value):
    home = make_home(tmp_path, make_corpus_text)
    result = gptui(home, command, "--input", "tiny", "--workers", value)
    assert_one_line_error(result, 2, "--workers", value)
    assert not (home / ".cache").exists() or not list((home / ".cache").rglob("tokens.bin"))
