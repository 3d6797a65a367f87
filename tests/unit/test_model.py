"""The GPT: shapes, initial loss, weight tying, GPT-2 init, and the KV cache against full recomputation."""

from __future__ import annotations

import math

import pytest
import torch

from gptui.core.generate import sample_ids
from gptui.core.model import GPT, ModelConfig


def make_model(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, block_size=24, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False, mlp_ratio=4)
    cfg.update(kw)
    return GPT(ModelConfig(**cfg)).eval()


@pytest.mark.parametrize("bias", [False, True])
def test_output_shapes(bias):
    model = make_model(bias=bias)
    idx = torch.randint(0, 50, (3, 24))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 24, 50)
    assert loss.shape == () and torch.isfinite(loss)
    logits, loss = model(idx[:, :5])
    assert logits.shape == (3, 1, 50), "without targets only the last position's logits"
    assert loss is None


def test_last_position_logits_match_training_logits():
    model = make_model()
    idx = torch.randint(0, 50, (2, 10))
    full, _ = model(idx, idx)
    last, _ = model(idx)
    torch.testing.assert_close(last[:, 0], full[:, -1])


def test_sequence_longer_than_block_refused():
    model = make_model()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros((1, 25), dtype=torch.long))


def test_initial_loss_near_ln_vocab():
    vocab = 200
    model = make_model(vocab_size=vocab, n_embd=64, n_head=4)
    idx = torch.randint(0, vocab, (8, 24), generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, vocab, (8, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(vocab)) < 0.1


def test_weight_tying():
    model = make_model()
    assert model.transformer.wte.weight is model.lm_head.weight
    names = [n for n, _ in model.named_parameters()]
    assert len(names) == len(set(id(p) for p in model.parameters()))
    # the tied matrix is counted once
    counted = sum(p.numel() for p in model.parameters())
    assert model.num_params() == counted
    assert model.num_params(non_embedding=True) == counted - 24 * 32


def test_gpt2_init():
    n_layer = 4
    model = make_model(n_layer=n_layer, n_embd=128, n_head=4, vocab_size=500, bias=True)
    expected = 0.02 / math.sqrt(2 * n_layer)
    projections = {n: p for n, p in model.named_parameters() if n.endswith("c_proj.weight")}
    assert len(projections) == 2 * n_layer  # attention and MLP output of each block
    for name, p in projections.items():
        assert p.std().item() == pytest.approx(expected, rel=0.05), name
        assert abs(p.mean().item()) < expected / 10
    for name, p in model.named_parameters():
        if name.endswith(("c_attn.weight", "c_fc.weight")) or name.endswith("wpe.weight") or name == "lm_head.weight":
            assert p.std().item() == pytest.approx(0.02, rel=0.05), name
        if name.endswith(".bias"):
            assert torch.count_nonzero(p) == 0, name
        if "ln" in name and name.endswith(".weight"):
            assert torch.all(p == 1), name


def test_no_bias_means_no_bias_parameters():
    model = make_model(bias=False)
    assert not [n for n, _ in model.named_parameters() if n.endswith(".bias")]


def test_optimizer_decay_groups():
    model = make_model(bias=True)
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_causality():
    """Changing a later token does not change earlier positions' logits."""
    model = make_model()
    a = torch.randint(0, 50, (1, 12))
    b = a.clone()
    b[0, 8] = (b[0, 8] + 1) % 50
    la, _ = model(a, a)
    lb, _ = model(b, b)
    torch.testing.assert_close(la[:, :8], lb[:, :8])
    assert not torch.allclose(la[:, 8:], lb[:, 8:])


# --- KV cache ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt_len", [1, 5, 23])
@pytest.mark.parametrize("bias", [False, True])
def test_kv_cache_logits_equal_full_recompute(prompt_len, bias):
    model = make_model(bias=bias)
    block = model.config.block_size
    seq = torch.randint(0, 50, (1, block), generator=torch.Generator().manual_seed(prompt_len))
    cache = model.new_cache()
    with torch.no_grad():
        logits, _ = model(seq[:, :prompt_len], cache=cache)
        full, _ = model(seq[:, :prompt_len])
        torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5)
        assert cache.pos == prompt_len
        for t in range(prompt_len, block):
            logits, _ = model(seq[:, t : t + 1], cache=cache)
            full, _ = model(seq[:, : t + 1])
            torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5)
        assert cache.pos == block
        with pytest.raises(ValueError, match="block_size"):
            model(seq[:, :1], cache=cache)


def test_kv_cache_batch():
    model = make_model()
    seq = torch.randint(0, 50, (3, 10))
    cache = model.new_cache(batch=3)
    with torch.no_grad():
        model(seq[:, :4], cache=cache)
        for t in range(4, 10):
            logits, _ = model(seq[:, t : t + 1], cache=cache)
            torch.testing.assert_close(logits, model(seq[:, : t + 1])[0], atol=1e-5, rtol=1e-5)


def test_kv_cache_reset_reuses_buffers():
    model = make_model()
    seq = torch.randint(0, 50, (1, 8))
    cache = model.new_cache()
    with torch.no_grad():
        first, _ = model(seq, cache=cache)
        cache.reset()
        again, _ = model(seq, cache=cache)
    torch.testing.assert_close(first, again)


@pytest.mark.parametrize("prompt", [[3], [1, 2, 3, 4, 5]])
def test_sample_with_and_without_cache_identical_greedy(prompt):
    model = make_model()
    n = model.config.block_size - len(prompt)  # stays inside the context window
    cached = list(sample_ids(model, prompt, n, temperature=0.0, use_cache=True))
    recomputed = list(sample_ids(model, prompt, n, temperature=0.0, use_cache=False))
    assert len(cached) == n
    assert cached == recomputed


def test_sample_with_and_without_cache_identical_sampled():
    model = make_model()
    a = list(sample_ids(model, [1, 2], 20, 1.0, 0, 1.0, torch.Generator().manual_seed(5), use_cache=True))
    b = list(sample_ids(model, [1, 2], 20, 1.0, 0, 1.0, torch.Generator().manual_seed(5), use_cache=False))
    assert a == b


@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_past_block_size(use_cache):
    model = make_model(block_size=8)
    ids = list(sample_ids(model, [1, 2, 3], 40, temperature=0.9, generator=torch.Generator().manual_seed(0),
                          use_cache=use_cache))
    assert len(ids) == 40
    assert all(0 <= i < 50 for i in ids)


def test_generation_with_prompt_longer_than_block():
    model = make_model(block_size=8)
    prompt = list(range(20))
    cached = list(sample_ids(model, prompt, 5, temperature=0.0, use_cache=True))
    recomputed = list(sample_ids(model, prompt, 1, temperature=0.0, use_cache=False))
    assert len(cached) == 5
    assert cached[0] == recomputed[0], "the first token sees the same last block_size tokens either way"


def test_generation_empty_prompt():
    model = make_model()
    assert len(list(sample_ids(model, [], 5, temperature=0.0))) == 5


def test_cpu_dropout_attention_path_computes_the_same_attention():
    """With dropout on, CPU training takes the explicit attention path; its maths must equal SDPA's."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32, dropout=0.0)).train()
    x = torch.randint(0, 50, (3, 16))
    y = torch.randint(0, 50, (3, 16))
    _, fused = model(x, y)
    for block in model.transformer.h:
        block.attn.dropout = 1e-12  # selects the explicit path while dropping (almost surely) nothing
    _, explicit = model(x, y)
    torch.testing.assert_close(explicit, fused, rtol=1e-5, atol=1e-6)
