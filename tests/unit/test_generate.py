"""Generation from a saved run: determinism, sampling filters, stop strings, streaming, transcripts."""

from __future__ import annotations

import json

import pytest
import torch

from gptui.core.errors import InputError
from gptui.core.generate import LoadedModel, generate_text, load_model, sample_ids, stream_text
from gptui.core.model import GPT, ModelConfig
from gptui.core.sampling import SamplingSettings, save_transcript

PROMPT = "First Citizen: "


@pytest.fixture(scope="module")
def loaded(trained_run):
    return load_model(trained_run, "cpu")


def gen(loaded, prompt: str = PROMPT, **kw) -> str:
    settings = dict(max_new_tokens=40, temperature=1.0, seed=1)
    settings.update(kw)
    return generate_text(loaded, prompt, SamplingSettings(**settings))


def test_load_model(loaded, trained_run):
    assert loaded.run.id == trained_run.id
    assert loaded.device == "cpu"
    assert not loaded.model.training
    assert loaded.block_size == 32
    assert loaded.tokenizer.kind == "char"


def test_same_seed_same_text(loaded):
    a = gen(loaded, seed=123)
    assert gen(loaded, seed=123) == a
    assert len(a) == 40  # char-level: one character per token
    assert any(gen(loaded, seed=s) != a for s in (124, 125, 126))


def test_temperature_zero_is_deterministic_without_a_seed(loaded):
    a = gen(loaded, temperature=0.0, seed=None)
    assert gen(loaded, temperature=0.0, seed=None) == a
    assert gen(loaded, temperature=0.0, seed=99) == a


def test_top_k_1_equals_greedy(loaded):
    greedy = gen(loaded, temperature=0.0)
    for seed in (1, 2, 3):
        assert gen(loaded, temperature=1.5, top_k=1, seed=seed) == greedy


def test_small_top_p_equals_greedy(loaded):
    greedy = gen(loaded, temperature=0.0)
    for seed in (1, 2):
        assert gen(loaded, temperature=1.5, top_p=1e-6, seed=seed) == greedy


def test_top_k_and_top_p_restrict_the_choices(loaded):
    prompt_ids = loaded.tokenizer.encode(PROMPT)
    logits, _ = loaded.model(torch.tensor([prompt_ids]))
    top3 = set(torch.topk(logits[0, -1], 3).indices.tolist())
    for seed in range(20):
        ids = list(sample_ids(loaded.model, prompt_ids, 1, 2.0, 3, 1.0, torch.Generator().manual_seed(seed)))
        assert ids[0] in top3


def test_stop_string_truncates(loaded):
    full = gen(loaded, temperature=0.0, max_new_tokens=60)
    stop = full[12:15]
    expected = full[: full.find(stop)]
    out = gen(loaded, temperature=0.0, max_new_tokens=60, stop=stop)
    assert out == expected
    assert stop not in out


def test_stop_string_absent_changes_nothing(loaded):
    full = gen(loaded, temperature=0.0, max_new_tokens=30)
    assert gen(loaded, temperature=0.0, max_new_tokens=30, stop="@@never@@") == full


def test_stop_string_at_the_very_start(loaded):
    full = gen(loaded, temperature=0.0, max_new_tokens=30)
    assert gen(loaded, temperature=0.0, max_new_tokens=30, stop=full[:2]) == ""


def test_streaming_pieces_join_to_the_full_text(loaded):
    settings = SamplingSettings(max_new_tokens=50, temperature=1.0, seed=7)
    pieces = list(stream_text(loaded, PROMPT, settings))
    assert len(pieces) > 1 and all(pieces)
    text = "".join(pieces)
    assert text == generate_text(loaded, PROMPT, settings)
    ids = list(sample_ids(loaded.model, loaded.tokenizer.encode(PROMPT), 50, 1.0, 0, 1.0,
                          torch.Generator().manual_seed(7)))
    assert text == loaded.tokenizer.decode(ids)


def test_streaming_without_cache_gives_the_same_text(loaded):
    # 15 prompt + 17 new tokens stay within block_size 32: past it the two refill their context differently
    settings = SamplingSettings(max_new_tokens=17, temperature=0.8, seed=3)
    assert "".join(stream_text(loaded, PROMPT, settings, use_cache=False)) == "".join(
        stream_text(loaded, PROMPT, settings))


def test_should_stop_ends_the_stream(loaded):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) >= 5

    pieces = list(stream_text(loaded, PROMPT, SamplingSettings(max_new_tokens=100, seed=1), should_stop))
    assert 1 <= len("".join(pieces)) <= 6


def test_generation_past_block_size(loaded):
    text = gen(loaded, max_new_tokens=3 * loaded.block_size)
    assert len(text) == 3 * loaded.block_size


def test_empty_prompt(loaded):
    assert len(gen(loaded, prompt="", max_new_tokens=10)) == 10


def test_prompt_with_unseen_characters_is_bad_input(loaded):
    with pytest.raises(InputError, match="never seen"):
        gen(loaded, prompt="Ω")


@pytest.mark.parametrize(
    "kw,match",
    [(dict(max_new_tokens=0), "max new tokens"), (dict(temperature=-1.0), "temperature"),
     (dict(top_k=-1), "top-k"), (dict(top_p=0.0), "top-p"), (dict(top_p=1.5), "top-p"), (dict(seed=-1), "seed")],
)
def test_sampling_settings_refused(loaded, kw, match):
    with pytest.raises(InputError, match=match):
        gen(loaded, **kw)


def test_streaming_multibyte_characters_with_bpe(tmp_path):
    """A byte-level model can emit half a character; pieces carry whole characters and join to the decode."""
    from gptui.core.runs import Run
    from gptui.core.tokenizer import train_tokenizer

    tok = train_tokenizer("héllo wörld 👍🏽 日本語 " * 20, "bpe", 257)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    loaded = LoadedModel(Run(tmp_path), model, tok, "cpu")
    settings = SamplingSettings(max_new_tokens=60, temperature=1.0, seed=11)
    pieces = list(stream_text(loaded, "日本", settings))
    ids = list(sample_ids(model, tok.encode("日本"), 60, 1.0, 0, 1.0, torch.Generator().manual_seed(11)))
    assert "".join(pieces) == tok.decode(ids)


def test_save_transcript(loaded, run_copy):
    from gptui.core.generate import load_model

    mine = load_model(run_copy, "cpu")
    settings = SamplingSettings(max_new_tokens=20, temperature=0.7, top_k=5, top_p=0.9, seed=4, stop="\n\n")
    text = generate_text(mine, PROMPT, settings)
    path = save_transcript(mine.run, settings, PROMPT, PROMPT + text, "generation")
    assert path.parent == run_copy.file("generations")
    assert path.suffix == ".txt" and "generation" in path.name
    content = path.read_text(encoding="utf-8")
    head, _, body = content.partition("\n\n")
    header = dict(line[2:].split(": ", 1) for line in head.splitlines())
    assert header["run"] == run_copy.id
    assert json.loads(header["settings"]) == {"max_new_tokens": 20, "temperature": 0.7, "top_k": 5, "top_p": 0.9,
                                              "seed": 4, "stop": "\n\n"}
    assert json.loads(header["prompt"]) == PROMPT
    assert header["time"][:4].isdigit()
    assert body == PROMPT + text + "\n"


def test_save_transcript_with_awkward_prompt(run_copy):
    mine = load_model(run_copy, "cpu")
    prompt = "line one\n# run: fake\n\nline four"
    settings = SamplingSettings(max_new_tokens=5, seed=1)
    path = save_transcript(mine.run, settings, prompt, prompt + "xyz", "chat")
    head = path.read_text(encoding="utf-8").split("\n\n", 1)[0]
    lines = head.splitlines()
    assert len(lines) == 4, "a multi-line prompt is JSON-quoted into one header line"
    assert [line.split(":", 1)[0] for line in lines] == ["# run", "# time", "# settings", "# prompt"]
