"""Looking inside a model: probabilities are the softmax of the model's own logits, ranks and alternatives follow
from them, bits per byte is the evaluation's definition, long texts slide a window, and attention weights match
a computation by hand for the classic and the modern recipe."""

from __future__ import annotations

import math

import pytest
import torch

from gptui.core import inspect
from gptui.core.errors import InputError
from gptui.core.generate import load_model
from gptui.core.runs import Run
from gptui.core.tokenizer import EOT
from tests.conftest import corpus_text
from tests.model_runs import write_model_run

CLASSIC = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "bias": True}
MODERN = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "pos_embedding": "rope", "norm": "rmsnorm",
          "qk_norm": True, "mlp": "swiglu", "tie_embeddings": False, "logit_softcap": 15.0}
TEXT = "First Citizen: Before we proceed"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("inspect")


@pytest.fixture(scope="module")
def classic(home):
    return load_model(Run(write_model_run(home, "classic", CLASSIC)), "cpu", "float32")


@pytest.fixture(scope="module")
def modern(home):
    return load_model(Run(write_model_run(home, "modern", MODERN, seed=1)), "cpu", "float32")


@pytest.fixture(scope="module")
def bpe(home):
    text = corpus_text() + "日本語の文章 🙂🚀 naïve café\n" * 20
    return load_model(Run(write_model_run(home, "bpe", {**CLASSIC, "vocab_size": 300}, tokenizer="bpe", text=text)),
                      "cpu", "float32")


def plain_logits(loaded, ids) -> torch.Tensor:
    """The model's logits at every position, through its ordinary training forward."""
    idx = torch.tensor([ids])
    with torch.no_grad():
        logits, _ = loaded.model(idx, targets=idx)
    return logits[0].float()


@pytest.mark.parametrize("which", ["classic", "modern"])
def test_probabilities_are_the_softmax_of_the_models_logits(which, request) -> None:
    loaded = request.getfixturevalue(which)
    ids = loaded.tokenizer.encode(TEXT)
    scores = inspect.score_text(loaded.model, loaded.tokenizer, TEXT, top=7)
    probs = plain_logits(loaded, ids).softmax(-1)
    first = scores.tokens[0]
    assert (first.p, first.rank, first.entropy, first.top) == (None, None, None, [])
    assert [t.id for t in scores.tokens] == ids
    assert "".join(t.token for t in scores.tokens) == TEXT
    for t, score in enumerate(scores.tokens[1:], start=1):
        dist = probs[t - 1]
        assert score.p == pytest.approx(float(dist[ids[t]]), abs=1e-6)
        assert score.rank == 1 + int((dist > dist[ids[t]]).sum())
        assert score.entropy == pytest.approx(float(-(dist * dist.log2()).sum()), abs=1e-5)
        alternatives = [p for _, p in score.top]
        assert alternatives == sorted(alternatives, reverse=True) and len(alternatives) == 7
        best = dist.topk(7)
        tok = loaded.tokenizer  # the end-of-text token is shown by its name, which encodes as text
        assert [tok.eot_id if s == EOT else tok.encode(s)[0] for s, _ in score.top] == best.indices.tolist()
        assert alternatives == pytest.approx(best.values.tolist(), abs=1e-6)
        if score.rank == 1:
            assert score.top[0][0] == score.token
    assert any(s.rank > 1 for s in scores.tokens[1:]), "a model this random misses some tokens"


def test_bits_per_byte_is_the_evaluations_definition(classic) -> None:
    ids = classic.tokenizer.encode(TEXT)
    scores = inspect.score_ids(classic.model, classic.tokenizer, ids)
    idx = torch.tensor([ids])
    with torch.no_grad():
        _, loss = classic.model(idx[:, :-1], targets=idx[:, 1:])  # mean nats per token, as evaluation has it
    scored = ids[1:]
    tokens_per_byte = len(scored) / sum(len(classic.tokenizer.token_bytes[i]) for i in scored)
    assert scores.bits_per_byte == pytest.approx(float(loss) / math.log(2) * tokens_per_byte, rel=1e-5)
    assert scores.summary() == {"tokens": len(ids), "bytes": len(TEXT.encode()) - 1,
                                "bits_per_byte": scores.bits_per_byte}


def test_a_text_longer_than_the_block_slides_a_window(classic) -> None:
    block = classic.model.config.block_size
    text = corpus_text(3)[:100]
    ids = classic.tokenizer.encode(text)
    assert len(ids) > 3 * block
    scores = inspect.score_ids(classic.model, classic.tokenizer, ids, top=0)
    stride = block // 2
    assert (scores.window, scores.stride) == (block, stride)
    for t in range(1, len(ids)):
        start = next(s for s in range(0, len(ids), stride) if s + block - 1 >= t)  # the window that scores t
        assert t - start >= min(t, stride), "every token has at least half a block of context"
        expected = plain_logits(classic, ids[start:start + block]).softmax(-1)[t - 1 - start, ids[t]]
        assert scores.tokens[t].p == pytest.approx(float(expected), abs=1e-6), t
        assert scores.tokens[t].top == []
    short = inspect.score_ids(classic.model, classic.tokenizer, ids[:block])
    assert [s.p for s in short.tokens] == [s.p for s in scores.tokens[:block]]
    assert short.stride == 0


def test_bpe_tokens_join_back_to_cjk_emoji_and_newlines(bpe) -> None:
    text = "naïve 日本語 🙂\ncafé"
    scores = inspect.score_text(bpe.model, bpe.tokenizer, text)
    assert b"".join(bpe.tokenizer.token_bytes[t.id] for t in scores.tokens) == text.encode()
    assert scores.total_bytes == len(text.encode())
    assert scores.scored_bytes == len(text.encode()) - scores.tokens[0].bytes


def layer_norm(x, weight, bias):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * weight + bias


def rms_norm(x, weight=None, eps=None):
    eps = torch.finfo(x.dtype).eps if eps is None else eps  # F.rms_norm's default, as QK-norm uses it
    y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def rotate(x, positions):
    """Rotary embedding by hand: channel i pairs with channel i + D/2, at angle pos / 10000^(2i/D)."""
    D = x.shape[-1]
    half = D // 2
    out = torch.empty_like(x)
    for pos in range(x.shape[-2]):
        for i in range(half):
            angle = positions[pos] / 10000 ** (2 * i / D)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[..., pos, i], x[..., pos, i + half]
            out[..., pos, i], out[..., pos, i + half] = a * c + b * s, b * c - a * s
    return out


def by_hand(q, k) -> torch.Tensor:
    T, D = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)
    for i in range(T):
        for j in range(i + 1, T):
            scores[..., i, j] = -math.inf
    return scores.exp() / scores.exp().sum(-1, keepdim=True)


def heads(t, n_head):
    T, C = t.shape
    return t.view(T, n_head, C // n_head).transpose(0, 1)


def test_attention_matches_a_hand_computation_with_learned_positions(classic) -> None:
    ids = classic.tokenizer.encode(TEXT[:12])
    w = {k: v.float() for k, v in classic.model.state_dict().items()}
    C = classic.model.config.n_embd
    x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][: len(ids)]
    h = layer_norm(x, w["transformer.h.0.ln_1.weight"], w["transformer.h.0.ln_1.bias"])
    qkv = h @ w["transformer.h.0.attn.c_attn.weight"].T + w["transformer.h.0.attn.c_attn.bias"]
    q, k = heads(qkv[:, :C], 2), heads(qkv[:, C:2 * C], 2)
    expected = by_hand(q, k)
    got = inspect.attention_ids(classic.model, classic.tokenizer, ids, 0)
    assert got.tokens == list(TEXT[:12]) and got.heads == 2
    assert torch.allclose(got.weights, expected, atol=1e-5)
    check_rows(got.weights)


def test_attention_matches_a_hand_computation_with_rope_and_qk_norm(modern) -> None:
    ids = modern.tokenizer.encode(TEXT[:12])
    w = {k: v.float() for k, v in modern.model.state_dict().items()}
    C = modern.model.config.n_embd
    x = w["transformer.wte.weight"][ids]  # rotary: no position embedding is added
    h = rms_norm(x, w["transformer.h.0.ln_1.weight"], 1e-5)
    qkv = h @ w["transformer.h.0.attn.c_attn.weight"].T
    q, k = rms_norm(heads(qkv[:, :C], 2)), rms_norm(heads(qkv[:, C:2 * C], 2))
    positions = list(range(len(ids)))
    expected = by_hand(rotate(q, positions), rotate(k, positions))
    got = inspect.attention_ids(modern.model, modern.tokenizer, ids, 0)
    assert torch.allclose(got.weights, expected, atol=1e-5)
    check_rows(got.weights)


@pytest.mark.parametrize("which", ["classic", "modern"])
def test_attention_in_a_deeper_layer_is_what_the_fused_kernel_attends_with(which, request) -> None:
    """In layer 1, the weights times the values, projected, are the attention module's own (fused) output."""
    loaded = request.getfixturevalue(which)
    model = loaded.model
    ids = loaded.tokenizer.encode(TEXT)
    attn = model.transformer.h[1].attn
    seen = {}
    hook = attn.register_forward_hook(lambda module, args, out: seen.update(x=args[0], out=out))
    try:
        plain_logits(loaded, ids)
    finally:
        hook.remove()
    weights = inspect.attention_weights(model, 1, seen["x"])
    C = model.config.n_embd
    with torch.no_grad():
        v = attn.c_attn(seen["x"]).split(C, dim=2)[2].view(1, len(ids), 2, C // 2).transpose(1, 2)
        y = attn.c_proj((weights @ v).transpose(1, 2).reshape(1, len(ids), C))
    assert torch.allclose(y, seen["out"], atol=1e-4)
    got = inspect.attention_ids(model, loaded.tokenizer, ids, 1)
    assert torch.equal(got.weights, weights[0])
    check_rows(got.weights)
    assert torch.allclose(torch.tensor(got.head(None)), got.weights.mean(0))
    assert got.head(1) == got.weights[1].tolist()


def check_rows(weights: torch.Tensor) -> None:
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-6)
    assert torch.all(weights.triu(1) == 0)
    assert torch.all(weights >= 0)


def test_bad_inputs_are_one_line_input_errors(classic) -> None:
    model, tok = classic.model, classic.tokenizer
    with pytest.raises(InputError, match="empty"):
        inspect.score_text(model, tok, "")
    with pytest.raises(InputError, match="never seen: '日'"):
        inspect.score_text(model, tok, "日本")
    with pytest.raises(InputError, match="--top"):
        inspect.score_text(model, tok, "First", top=-1)
    assert inspect.parse_head("1.0", 2, 2) == (1, 0)
    assert inspect.parse_head("0.mean", 2, 2) == (0, None)
    for spec, why in [("2.0", "layer 2 is out of range"), ("0.2", "head 2 is out of range"),
                      ("-1.0", "layer -1"), ("x", "LAYER.HEAD"), ("1", "LAYER.HEAD"), ("1.a", "LAYER.HEAD")]:
        with pytest.raises(InputError, match=why):
            inspect.parse_head(spec, 2, 2)
    with pytest.raises(InputError, match="at most block_size"):
        inspect.attention_text(model, tok, corpus_text(2)[:40], 0)
    with pytest.raises(InputError, match="layer 5"):
        inspect.attention_text(model, tok, "First", 5)


@pytest.mark.parametrize("which", ["classic", "bpe"])
def test_token_spans_join_back_into_the_text_exactly(which, request) -> None:
    from gptui.core.tokenizer import token_spans

    loaded = request.getfixturevalue(which)
    texts = ["First Citizen:\nAll: Speak,\n\nspeak."]
    if which == "bpe":
        texts += ["日本語の文章 🙂🚀\nnaïve café", "🙂", "\n\n\t  x"]
    for text in texts:
        ids = loaded.tokenizer.encode(text)
        spans = token_spans(loaded.tokenizer, ids)
        assert len(spans) == len(ids) and "".join(spans) == text
    if which == "bpe":  # an emoji split across byte-level tokens: the token that completes it carries it
        ids = loaded.tokenizer.encode("🚀")
        assert len(ids) > 1 and token_spans(loaded.tokenizer, ids)[-1] == "🚀"


def test_a_reply_is_scored_from_the_logits_it_was_sampled_from(classic) -> None:
    from gptui.core.generate import stream_text
    from gptui.core.sampling import SamplingSettings

    settings = SamplingSettings(max_new_tokens=40, temperature=1.0, seed=3)  # 40 + the prompt: past block_size
    with inspect.recording(classic) as recorder:
        reply = "".join(stream_text(classic, "All", settings))
    assert classic._decoder is not recorder  # the model's own decoder is back
    prompt, said = inspect.score_exchange(classic.model, classic.tokenizer, "", "All", reply, 5, recorder)
    assert "".join(said[0]) == reply and len(said[1]) == 40
    # the same tokens scored by the plain forward pass over the context generation had: the probabilities agree
    block = classic.model.config.block_size
    ids = classic.tokenizer.encode("All") + [s.id for s in said[1]]
    for t in range(3, len(ids)):
        # the cache fills at block tokens; each refill keeps the last half block, the newest token included
        half = block // 2
        start = 0 if t <= block else (t - block - 1) // half * half + block + 1 - half
        p = plain_logits(classic, ids[start:t]).softmax(-1)[-1, ids[t]]
        assert said[1][t - 3].p == pytest.approx(float(p), abs=1e-5), t
    assert [s.p for s in prompt[1]][1:] == pytest.approx(
        [s.p for s in inspect.score_text(classic.model, classic.tokenizer, "All").tokens][1:], abs=1e-6)

    # a stop string cuts the text short of its tokens: the reply is scored as its text encodes
    cut = reply[: len(reply) // 2]
    _, fallback = inspect.score_exchange(classic.model, classic.tokenizer, "", "All", cut, 5, recorder)
    assert "".join(fallback[0]) == cut
    expected = inspect.score_text(classic.model, classic.tokenizer, "All" + cut).tokens[3:]
    assert [s.p for s in fallback[1]] == pytest.approx([s.p for s in expected], abs=1e-6)


def test_the_end_of_text_token_is_shown_by_its_name_not_as_an_empty_string() -> None:
    from gptui.core.inspect import token_text
    from gptui.core.tokenizer import EOT, CharTokenizer

    tokenizer = CharTokenizer(["a", "b"], eot=True)
    assert [token_text(tokenizer, i) for i in range(3)] == ["a", "b", EOT]
