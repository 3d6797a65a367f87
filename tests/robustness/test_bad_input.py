"""Bad corpora, bad settings and bad names get a clear one-line refusal (exit 2), never a traceback."""

from __future__ import annotations

import re

import pytest
from support import assert_one_line_error, gptui

from gptui.core.data import TokenizerSpec, prepare
from gptui.core.errors import CorpusError
from gptui.core.runs import RunStore, slugify

TINY = ["--set", "n_layer=1", "--set", "n_head=2", "--set", "n_embd=32", "--set", "block_size=32",
        "--set", "batch_size=4", "--set", "max_iters=6", "--set", "warmup_iters=1", "--set", "eval_interval=3",
        "--set", "eval_iters=1", "--set", "sample_interval=0", "--set", "tokenizer=char"]


def refused(result, *words):
    assert_one_line_error(result, 2, *words)


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("n_layer=0", ["n_layer", "at least 1"]),
        ("batch_size=-4", ["batch_size", "at least 1"]),
        ("lr=0", ["lr", "greater than 0"]),
        ("lr=abc", ["lr", "number"]),
        ("n_head=2.5", ["n_head", "whole number"]),
        ("dropout=nan", ["dropout", "finite"]),
        ("bias=maybe", ["bias", "true or false"]),
        ("tokenizer=word", ["tokenizer", "bpe, char"]),
        ("n_head=5", ["n_embd", "divisible by n_head"]),
        ("vocab_size=256", ["vocab_size", "at least 257"]),
        ("vocab_size=99999999", ["vocab_size", "at most"]),
        ("min_lr=1", ["min_lr", "must not exceed lr"]),
        ("warmup_iters=5000", ["warmup_iters", "smaller than max_iters"]),
        ("n_layr=2", ["n_layr", "did you mean n_layer"]),
        ("n_layer", ["KEY=VALUE"]),
    ],
)
def test_every_invalid_setting_exits_2_with_the_reason(small_workspace, setting, words):
    refused(gptui(small_workspace.home, "train", "--input", "tiny", "--set", setting), *words)


def test_block_size_beyond_the_data_is_refused_with_the_numbers(small_workspace):
    result = gptui(small_workspace.home, "train", "--input", "tiny", *TINY, "--set", "block_size=4096")
    refused(result, "too short for block_size 4096", "tokens")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"caf\xe9 au lait\n" * 100, ["not valid UTF-8", "offset 3", "--replace-errors"]),
        (b"", ["empty"]),
        (b" \n\n  ", ["empty"]),
        (b"short text\n", ["too short"]),
    ],
)
def test_bad_corpora_are_refused(small_workspace, content, words):
    (small_workspace.inputs / "bad.txt").write_bytes(content)
    refused(gptui(small_workspace.home, "train", "--input", "bad", *TINY), *words)


def test_replace_errors_accepts_a_corpus_with_bad_bytes(small_workspace):
    (small_workspace.inputs / "latin.txt").write_bytes(b"caf\xe9 au lait, s'il vous pla\xeet.\n" * 200)
    result = gptui(small_workspace.home, "prepare", "--input", "latin", "--tokenizer", "char", "--replace-errors")
    assert result.returncode == 0, result.stderr


def test_an_empty_folder_named_like_a_corpus_is_refused(small_workspace):
    (small_workspace.inputs / "folder.txt").mkdir()  # a folder is a corpus of its files, whatever its name
    refused(gptui(small_workspace.home, "train", "--input", "folder", *TINY), "folder.txt/ is empty")


def test_a_corpus_that_cannot_be_read_is_refused(small_workspace, monkeypatch):
    from pathlib import Path

    real = Path.read_bytes

    def denied(self):
        if self.name == "tiny.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(CorpusError, match="permission denied"):
        from gptui.core.workspace import read_text

        read_text(small_workspace.inputs / "tiny.txt")


def test_a_corpus_edited_after_tokenizing_gets_a_fresh_cache(small_workspace):
    corpus = small_workspace.inputs / "tiny.txt"
    spec = TokenizerSpec("char", 0, "")
    first = prepare(corpus, spec, small_workspace.cache)
    assert prepare(corpus, spec, small_workspace.cache).cached
    corpus.write_text(corpus.read_text() + "Zebras! Quietly.\n" * 50, encoding="utf-8")
    edited = prepare(corpus, spec, small_workspace.cache)
    assert not edited.cached
    assert edited.tokenizer.vocab_size > first.tokenizer.vocab_size  # Z, Q, ! are new characters
    assert len(edited.tokens) > len(first.tokens)


def test_missing_corpus_and_unknown_run_are_input_errors(small_workspace):
    refused(gptui(small_workspace.home, "train", "--input", "nope", *TINY), "no corpus 'nope'")
    refused(gptui(small_workspace.home, "generate", "--run", "nope"), "no run 'nope'")
    refused(gptui(small_workspace.home, "train", "--input", "../etc/passwd"), "not a path")


@pytest.mark.parametrize("name", ["../../escape", "a/b/c", "..", ".hidden", "x" * 300, "ünïcödé name", "a\0b"])
def test_run_names_are_sanitised_into_models(small_workspace, name):
    store = RunStore(small_workspace)
    run = store.create("tiny", 1000, name)
    assert run.path.parent == small_workspace.models
    assert not run.id.startswith(".") and "/" not in run.id and "\0" not in run.id
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", run.id), run.id
    assert run.id.startswith(slugify(name)[:8]) or slugify(name)[:8] in run.id or slugify(name) == "run"


def test_a_hostile_name_on_the_command_line_stays_inside_models(small_workspace):
    result = gptui(small_workspace.home, "train", "--input", "tiny", *TINY, "--name", "../../../tmp/evil")
    assert result.returncode == 0, result.stderr
    created = [p for p in small_workspace.models.iterdir()]
    assert len(created) == 1 and created[0].name.endswith("tmp-evil")
    assert not (small_workspace.home.parent / "tmp" / "evil").exists()


def test_a_cache_built_with_replaced_bytes_does_not_hide_the_refusal(small_workspace):
    corpus = small_workspace.inputs / "latin.txt"
    corpus.write_bytes(b"caf\xe9 au lait, s'il vous pla\xeet.\n" * 200)
    spec = TokenizerSpec("char", 0, "")
    assert prepare(corpus, spec, small_workspace.cache, replace_errors=True).had_bad_bytes
    with pytest.raises(CorpusError, match="offset 3"):
        prepare(corpus, spec, small_workspace.cache)
    assert prepare(corpus, spec, small_workspace.cache, replace_errors=True).cached
