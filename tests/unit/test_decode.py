"""The fast decode path: static shapes at every position, exact logits through prefill and refill, the CUDA graph
fallback, bfloat16 weights on the CPU, several samples in one batch, and the trainer's samples."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import gptui.core.generate as generate
from gptui.core.device import cpu_has_bf16, pick_inference_dtype
from gptui.core.errors import InputError
from gptui.core.generate import (
    Decoder,
    TrainingSampler,
    generate_samples,
    load_model,
    sample_batch,
    sample_ids,
)
from gptui.core.model import GPT, ModelConfig
from gptui.core.sampling import SamplingSettings

PROMPT = "First Citizen: "


def make_model(block_size: int = 16, **kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, block_size=block_size, n_layer=2, n_head=2, n_embd=16, bias=True)
    cfg.update(kw)
    return GPT(ModelConfig(**cfg)).eval()


class ShapeRecorder(TorchDispatchMode):
    """Every aten op run inside it, with the shapes and dtypes of its tensor arguments."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        shapes = tuple(
            (tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else type(a).__name__
            for a in (*args, *kwargs.values())
        )
        self.calls.append((str(func), shapes))
        return func(*args, **kwargs)


@torch.no_grad()
def test_decode_step_has_the_same_ops_and_shapes_at_every_position():
    model = make_model(block_size=24)
    decoder = Decoder(model, batch=2, graphs=False)
    decoder.prefill(torch.randint(0, 50, (2, 3)))
    records = []
    for position in range(3, 24):
        with ShapeRecorder() as rec:
            decoder.step(torch.tensor([position % 50, 7]))
        records.append(rec.calls)
        assert decoder.cache.pos == position + 1
    assert records[0], "the recorder saw the step's ops"
    assert all(r == records[0] for r in records[1:]), "a decode step's ops or shapes changed with the position"
    attention = [shapes for op, shapes in records[0] if "baddbmm" in op]
    assert len(attention) == 2 and all((4, 8, 24) in [s[0] for s in shapes if isinstance(s, tuple)]
                                       for shapes in attention), "each layer attends over the whole cache"


@torch.no_grad()
@pytest.mark.parametrize("prompt_len", [1, 5, 16])
def test_cached_logits_equal_a_full_recompute_at_every_position_past_refills(prompt_len):
    """Drive the decoder as generation does (prefill, steps, refill from the last half block when full) and compare
    every step's logits with a forward pass over the same window without the cache."""
    model = make_model(block_size=16)
    block = model.config.block_size
    seq = torch.randint(0, 50, (1, 60), generator=torch.Generator().manual_seed(prompt_len))
    decoder = Decoder(model, graphs=False)
    window_start = 0
    logits = decoder.prefill(seq[:, :prompt_len])
    refills = 0
    for n in range(prompt_len, 60):
        full, _ = model(seq[:, window_start:n])
        torch.testing.assert_close(logits, full[:, -1], atol=1e-5, rtol=1e-5)
        if decoder.full:
            window_start = n + 1 - block // 2
            logits = decoder.prefill(seq[:, window_start : n + 1])
            refills += 1
        else:
            logits = decoder.step(seq[:, n])
    assert refills >= 3


@torch.no_grad()
def test_step_on_a_full_cache_is_refused():
    model = make_model(block_size=8)
    decoder = Decoder(model, graphs=False)
    decoder.prefill(torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="full"):
        decoder.step(torch.zeros(1, dtype=torch.long))


def test_graph_capture_failure_falls_back_to_eager_and_is_reported_once(monkeypatch, caplog):
    """Capture is forced on the CPU with torch.cuda.Stream made to fail: the decoder says so once, decodes
    eagerly with the same tokens, and later decoders do not try again."""
    monkeypatch.setattr(generate, "_graph_failure", None)
    attempts = []

    def broken_stream(*a, **k):
        attempts.append(1)
        raise RuntimeError("injected capture failure")

    monkeypatch.setattr(torch.cuda, "Stream", broken_stream)
    model = make_model(block_size=32)
    eager = list(sample_ids(model, [1, 2, 3], 20, temperature=0.0, decoder=Decoder(model, graphs=False)))
    notices = []
    first = Decoder(model, graphs=True, on_notice=notices.append)
    assert list(sample_ids(model, [1, 2, 3], 20, temperature=0.0, decoder=first)) == eager
    assert len(notices) == 1 and "injected capture failure" in notices[0] and "eagerly" in notices[0]
    assert first.graph is None and not first.use_graph
    with caplog.at_level(logging.WARNING, logger="gptui"):
        second = Decoder(model, graphs=True)
        assert list(sample_ids(model, [1, 2, 3], 20, temperature=0.0, decoder=second)) == eager
    assert len(attempts) == 1, "a failed capture is not retried in the same process"
    assert not caplog.records


@torch.no_grad()
def test_batch_rows_match_single_sample_decoding_greedy():
    model = make_model(block_size=16)
    single = list(sample_ids(model, [4, 5], 40, temperature=0.0))
    batch = list(sample_batch(model, [4, 5], 40, temperature=0.0, num_samples=3))
    assert [step[0] for step in batch] == single
    assert all(len(set(step)) == 1 for step in batch), "greedy rows of one prompt agree"


def test_batch_samples_differ_and_repeat_with_a_seed():
    model = make_model(block_size=16)

    def draw(seed):
        return list(sample_batch(model, [4, 5], 30, 1.0, 0, 1.0, torch.Generator().manual_seed(seed),
                                 num_samples=4))

    a = draw(3)
    assert draw(3) == a
    rows = {tuple(step[k] for step in a) for k in range(4)}
    assert len(rows) == 4, "four samples from one prompt are four different continuations"
    assert draw(4) != a


def test_batch_with_and_without_the_cache_agree():
    model = make_model(block_size=32)
    kw = dict(temperature=1.0, num_samples=3)
    a = list(sample_batch(model, [1], 25, generator=torch.Generator().manual_seed(9), use_cache=True, **kw))
    b = list(sample_batch(model, [1], 25, generator=torch.Generator().manual_seed(9), use_cache=False, **kw))
    assert a == b


def test_generate_samples_same_seed_same_texts_with_stop(trained_run):
    loaded = load_model(trained_run, "cpu")
    settings = SamplingSettings(max_new_tokens=60, temperature=1.0, seed=5)
    texts = generate_samples(loaded, PROMPT, settings, 4)
    assert generate_samples(loaded, PROMPT, settings, 4) == texts
    assert len(set(texts)) > 1
    # char-level: one character per token; a sample may end sooner, at the end-of-text token
    assert all(len(t) <= 60 for t in texts) and any(len(t) == 60 for t in texts)
    stop = texts[1][5:7]
    cut = generate_samples(loaded, PROMPT, SamplingSettings(max_new_tokens=60, temperature=1.0, seed=5, stop=stop),
                           4)
    assert cut[1] == texts[1][: texts[1].find(stop)]
    for full, short in zip(texts, cut, strict=True):
        assert full.startswith(short) and stop not in short


@pytest.mark.parametrize("n", [0, 65, -1])
def test_number_of_samples_out_of_range_is_bad_input(trained_run, n):
    loaded = load_model(trained_run, "cpu")
    with pytest.raises(InputError, match="between 1 and 64"):
        generate_samples(loaded, PROMPT, SamplingSettings(max_new_tokens=5), n)


def test_loaded_model_keeps_its_decoder_between_prompts(trained_run):
    loaded = load_model(trained_run, "cpu")
    first = loaded.decoder(1)
    generate_samples(loaded, PROMPT, SamplingSettings(max_new_tokens=5, seed=1), 1)
    assert loaded.decoder(1) is first
    assert loaded.decoder(3) is not first and loaded.decoder(3).batch == 3


# --- precision ------------------------------------------------------------------------------------------------


def test_float32_is_the_library_default_and_exact(trained_run):
    loaded = load_model(trained_run, "cpu")
    assert loaded.dtype == "float32" and loaded.model.dtype == torch.float32
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}


def plain_copy(loaded) -> GPT:
    """The loaded run's model with plain Linear layers (as the trainer has it)."""
    from safetensors.torch import load_model as load_safetensors

    from gptui.core.runs import WEIGHTS

    model = GPT(loaded.model.config)
    load_safetensors(model, str(loaded.run.file(WEIGHTS)))
    return model.eval()


@pytest.mark.skipif(not generate.packing_works(torch.float32), reason="this torch build cannot pack for oneDNN")
@torch.no_grad()
def test_loaded_model_packs_its_linear_layers_and_keeps_float32_logits(trained_run, monkeypatch):
    monkeypatch.setattr(generate, "PACK_FLOAT32_FROM", 0)  # this small model's layers all packed
    loaded = load_model(trained_run, "cpu")
    model, plain = loaded.model, plain_copy(loaded)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert sum(isinstance(m, generate.PackedLinear) for m in model.modules()) == 4 * model.config.n_layer + 1
    ids = torch.tensor([loaded.tokenizer.encode(PROMPT)])
    torch.testing.assert_close(model(ids)[0], plain(ids)[0], atol=1e-5, rtol=1e-5)
    packed_decoder, plain_decoder = Decoder(model, 1), Decoder(plain, 1)
    torch.testing.assert_close(packed_decoder.prefill(ids), plain_decoder.prefill(ids), atol=1e-5, rtol=1e-5)
    for token in loaded.tokenizer.encode("Second Citizen"):
        step = torch.tensor([token])
        torch.testing.assert_close(packed_decoder.step(step), plain_decoder.step(step), atol=1e-5, rtol=1e-5)
    greedy = [list(sample_ids(m, ids[0].tolist(), 30, temperature=0)) for m in (model, plain)]
    assert greedy[0] == greedy[1]


@pytest.mark.skipif(not generate.packing_works(torch.float32), reason="this torch build cannot pack for oneDNN")
def test_only_the_layers_packing_speeds_up_are_packed(monkeypatch):
    """float32 from the caches: the matrices of PACK_FLOAT32_FROM weights or more (smaller ones are faster plain);
    float32 streamed from memory (more than CACHED_BYTES of matrices), and bfloat16: all of them."""

    def packed(dtype: str) -> set[str]:
        model = generate.prepare_for_inference(make_model(n_embd=320, n_head=4), "cpu", dtype)
        return {name for name, m in model.named_modules() if isinstance(m, generate.PackedLinear)}

    every = {f"transformer.h.{i}.{m}" for i in (0, 1) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                 "mlp.c_proj")} | {"lm_head"}
    # 307K, 410K and 410K weights packed; c_proj 102K and the head 16K not (4.9 MB of matrices in all)
    assert packed("float32") == {name for name in every if name.endswith(("c_attn", "c_fc", "mlp.c_proj"))}
    if generate.packing_works(torch.bfloat16):
        assert packed("bfloat16") == every
    monkeypatch.setattr(generate, "CACHED_BYTES", 1_000_000)
    assert packed("float32") == every


def test_without_packing_the_loaded_model_keeps_plain_linear_layers(trained_run, monkeypatch):
    monkeypatch.setattr(generate, "packing_works", lambda dtype: False)
    loaded = load_model(trained_run, "cpu")
    assert not any(isinstance(m, generate.PackedLinear) for m in loaded.model.modules())
    settings = SamplingSettings(max_new_tokens=20, temperature=0.8, seed=2)
    assert len(generate_samples(loaded, PROMPT, settings, 1)[0]) == 20


def test_packing_probe_says_no_when_the_build_cannot_pack(monkeypatch):
    class Broken(torch.nn.Module):
        def __init__(self, linear):
            raise RuntimeError("oneDNN is not available in this build")

    monkeypatch.setattr(generate, "PackedLinear", Broken)
    assert generate.packing_works.__wrapped__(torch.float32) is False


def test_packing_probe_leaves_the_global_generator_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    generate.packing_works.__wrapped__(torch.float32)
    assert torch.equal(torch.rand(3), expected)


def test_packing_is_for_x86_cpus_only(monkeypatch):
    monkeypatch.setattr(generate.platform, "machine", lambda: "arm64")
    assert generate.packing_works.__wrapped__(torch.float32) is False


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16")
def test_bfloat16_weights_on_a_cpu_that_has_it(trained_run):
    exact = load_model(trained_run, "cpu", "float32")
    fast = load_model(trained_run, "cpu", "bfloat16")
    assert fast.dtype == "bfloat16"
    assert {p.dtype for p in fast.model.parameters()} == {torch.bfloat16}, "weights cast once, not autocast"
    assert load_model(trained_run, "cpu", "auto").dtype == "bfloat16"
    ids = torch.tensor([exact.tokenizer.encode(PROMPT)])
    with torch.no_grad():
        a = exact.model(ids)[0].float()
        b = fast.model(ids)[0].float()
    assert (a - b).abs().max() < 0.1 * a.abs().max()
    settings = SamplingSettings(max_new_tokens=40, temperature=0.8, seed=2)
    text = generate_samples(fast, PROMPT, settings, 2)
    assert generate_samples(fast, PROMPT, settings, 2) == text and all(len(t) == 40 for t in text)


def test_bfloat16_refused_where_the_cpu_lacks_it(trained_run, monkeypatch):
    import gptui.core.device as device

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    assert pick_inference_dtype("auto", "cpu") == "float32"
    with pytest.raises(InputError, match="bfloat16.*not supported.*float32"):
        load_model(trained_run, "cpu", "bfloat16")
    with pytest.raises(InputError, match="unknown dtype"):
        pick_inference_dtype("float16", "cpu")


# --- training samples -----------------------------------------------------------------------------------------


def test_training_sampler_uses_the_live_weights_and_one_decoder():
    model = make_model(block_size=16).train()
    sampler = TrainingSampler(model, [1, 2], 20, seed=3)
    first = sampler.sample(100)
    decoder = sampler.decoder
    assert model.training, "the model goes back to training mode"
    assert sampler.sample(100) == first, "seeded by seed + step"
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    changed = sampler.sample(100)
    assert sampler.decoder is decoder, "one decoder for the whole run"
    assert changed != first, "samples follow the weights as they are, not a copy"
    assert all(0 <= i < 50 for i in changed) and len(changed) == 20
