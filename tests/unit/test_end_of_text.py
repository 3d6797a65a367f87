"""Generation stops at the end-of-text token; a run whose tokenizer has none generates as before."""

from __future__ import annotations

import json

import pytest
import torch

import gptui.core.generate as generate
from gptui.core.generate import generate_samples, generate_text, load_model
from gptui.core.runs import TOKENIZER, tokenizer_vocab_size
from gptui.core.sampling import SamplingSettings


@pytest.fixture(scope="module")
def loaded(trained_run):
    return load_model(trained_run, "cpu")


def script(monkeypatch, loaded, *rows: str | list[int]):
    """Make sampling pick these tokens, one row per sample: text, or ids (None stands for end-of-text)."""
    tok = loaded.tokenizer
    ids = [[tok.eot_id if i is None else i for i in r] if isinstance(r, list) else tok.encode(r) for r in rows]
    steps = iter(zip(*ids, strict=True))
    # _pick gives the tokens and whether the logits they were drawn from were finite
    monkeypatch.setattr(generate, "_pick", lambda *a, **k: (torch.tensor(next(steps)), torch.tensor(True)))


def test_a_new_run_has_an_end_of_text_id_after_its_characters(loaded, trained_run):
    tok = loaded.tokenizer
    assert tok.eot_id == len(tok.chars) == tok.vocab_size - 1
    assert tokenizer_vocab_size(trained_run.file(TOKENIZER)) == tok.vocab_size == loaded.model.config.vocab_size


def test_generation_stops_at_the_end_of_text_token(monkeypatch, loaded):
    tok = loaded.tokenizer
    script(monkeypatch, loaded, tok.encode("All: ") + [None] + tok.encode("speak"))
    assert generate_text(loaded, "First", SamplingSettings(max_new_tokens=11, seed=1)) == "All: "


def test_each_sample_stops_at_its_own_end_of_text(monkeypatch, loaded):
    tok = loaded.tokenizer
    script(monkeypatch, loaded, tok.encode("Al") + [None] + tok.encode("ls"), tok.encode("speak"))
    assert generate_samples(loaded, "First", SamplingSettings(max_new_tokens=5, seed=1), 2) == ["Al", "speak"]


def test_text_held_back_for_the_stop_string_is_given_at_the_end_of_text(monkeypatch, loaded):
    tok = loaded.tokenizer
    script(monkeypatch, loaded, tok.encode("All: Sp") + [None, 0, 0])
    settings = SamplingSettings(max_new_tokens=10, seed=1, stop="Speak")
    assert generate_text(loaded, "First", settings) == "All: Sp"


def test_a_run_from_before_the_end_of_text_token_generates_as_before(monkeypatch, run_copy):
    # its tokenizer.json has no end-of-text id and its model one row fewer: it loads, and nothing stops early
    data = json.loads(run_copy.file(TOKENIZER).read_text(encoding="utf-8"))
    data.pop("eot")
    data["version"] = 1
    run_copy.file(TOKENIZER).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    from safetensors.torch import load_file, save_file

    weights = load_file(str(run_copy.file("model.safetensors")))
    weights = {k: (v[:-1].contiguous() if v.shape[0] == len(data["chars"]) + 1 else v) for k, v in weights.items()}
    save_file(weights, str(run_copy.file("model.safetensors")))
    old = load_model(run_copy, "cpu")
    assert old.tokenizer.eot_id is None and old.model.config.vocab_size == len(data["chars"])
    text = generate_text(old, "First", SamplingSettings(max_new_tokens=30, seed=5))
    assert len(text) == 30  # char-level: every token a character, none the end
