"""See inside a model: each token's probability given what precedes it, its rank, the likeliest alternatives and
the entropy of the distribution; the text's bits per byte; one layer's attention weights.

Probabilities are the softmax of the model's own logits in float32 over the whole vocabulary. Bits per byte is
the evaluation's definition (the bits of every scored token over the UTF-8 bytes of those tokens), so a text from
the validation split scores what the run's val bpb says. Attention weights are computed here, explicitly, from
the block's own modules (its projection, QK-norm and rotary angles): only while inspecting, so training and
generation keep their fused attention kernels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from gptui.core.errors import InputError
from gptui.core.generate import Decoder, LoadedModel
from gptui.core.model import GPT, apply_rotary
from gptui.core.tokenizer import EOT, Tokenizer, token_spans

DEFAULT_TOP = 5
MAX_TOP = 100
LN2 = math.log(2)


@dataclass
class TokenScore:
    """One token of the text: `p`, `rank` (1 = the likeliest), `top` and `entropy` (bits) describe the model's
    distribution before it, and are None (top: empty) for the first token, which has nothing before it."""

    token: str
    id: int
    bytes: int
    p: float | None = None
    rank: int | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    entropy: float | None = None

    def as_dict(self) -> dict:
        return {"token": self.token, "id": self.id, "p": self.p, "rank": self.rank,
                "top": [[t, p] for t, p in self.top], "entropy": self.entropy}


@dataclass
class Scores:
    tokens: list[TokenScore]
    bits: float  # sum of -log2 p over the scored tokens (every token but the first)
    scored_bytes: int  # their UTF-8 bytes
    window: int  # the longest context a token was scored with (block_size)
    stride: int  # how far the window moved for a text longer than block_size (0: one window)

    @property
    def bits_per_byte(self) -> float | None:
        return self.bits / self.scored_bytes if self.scored_bytes else None

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.tokens)

    def summary(self) -> dict:
        return {"tokens": len(self.tokens), "bytes": self.scored_bytes, "bits_per_byte": self.bits_per_byte}


@dataclass
class Attention:
    """One layer's attention: weights[h][i][j] is how much query position i attends to key position j in head
    h (rows sum to 1; zero above the diagonal)."""

    layer: int
    tokens: list[str]
    weights: torch.Tensor  # n_head x T x T, float32, on the CPU

    @property
    def heads(self) -> int:
        return int(self.weights.shape[0])

    def head(self, head: int | None) -> list[list[float]]:
        """One head's matrix, or (None) the mean over the heads."""
        matrix = self.weights.mean(0) if head is None else self.weights[head]
        return matrix.tolist()


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    """A token as text; bytes that are part of a character split across tokens show as U+FFFD, and the
    end-of-text token (no bytes of text) by its name."""
    if token_id == tokenizer.eot_id:
        return EOT
    return tokenizer.token_bytes[token_id].decode("utf-8", errors="replace")


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """The text's token ids; InputError (one line) for empty text or characters a char tokenizer never saw."""
    if not text:
        raise InputError("the text is empty: give some text to inspect")
    ids = tokenizer.encode(text)  # a char tokenizer raises InputError naming the characters it lacks
    if not ids:
        raise InputError("the text encodes to no tokens")
    return ids


def check_top(top: int) -> int:
    if not 0 <= top <= MAX_TOP:
        raise InputError(f"--top must be between 0 and {MAX_TOP}, not {top}")
    return top


def all_logits(model: GPT, ids: Sequence[int]) -> torch.Tensor:
    """The model's logits at every position of `ids` (T x vocab, float32): what each position predicts next."""
    idx = torch.tensor([list(ids)], dtype=torch.long, device=model.device)
    with torch.inference_mode():
        logits, _ = model(idx, targets=idx)  # given targets, the model returns the logits of every position
    return logits[0].float()


def score_ids(model: GPT, tokenizer: Tokenizer, ids: Sequence[int], top: int = DEFAULT_TOP) -> Scores:
    """Score each token of `ids` given the ones before it. A text longer than block_size is scored with a
    sliding window: windows of block_size tokens, each half a block past the last, each scoring only the tokens
    the one before did not, so every token after the first block has at least half a block of context."""
    check_top(top)
    n, block = len(ids), model.config.block_size
    stride = max(1, block // 2) if n > block else 0
    tokens = [TokenScore(token_text(tokenizer, i), i, len(tokenizer.token_bytes[i])) for i in ids]
    bits, scored_bytes = 0.0, 0
    done = 0  # every token up to this index is scored (the first has nothing before it)
    start = 0
    while done < n - 1:
        end = min(start + block, n)
        logits = all_logits(model, ids[start:end])
        targets = range(max(done + 1, start + 1), end)
        rows = logits[[t - 1 - start for t in targets]]  # the logits at t - 1 predict the token at t
        bits += _fill(tokenizer, [tokens[t] for t in targets], rows, top)
        scored_bytes += sum(tokens[t].bytes for t in targets)
        done = end - 1
        start += stride
    return Scores(tokens, bits, scored_bytes, block, stride)


def _fill(tokenizer: Tokenizer, tokens: list[TokenScore], rows: torch.Tensor, top: int) -> float:
    """Give each token its p, rank, entropy and alternatives from the logits that predicted it (one row each);
    return the sum of their bits."""
    if not tokens:
        return 0.0
    log_probs = F.log_softmax(rows.float(), dim=-1)
    probs = log_probs.exp()
    entropy = torch.special.entr(probs).sum(-1) / LN2
    chosen = torch.tensor([t.id for t in tokens], device=rows.device)
    p_chosen = probs.gather(1, chosen[:, None])[:, 0]
    ranks = (probs > p_chosen[:, None]).sum(-1) + 1
    best_p, best_ids = probs.topk(min(top, probs.size(-1)), dim=-1) if top else (None, None)
    for k, score in enumerate(tokens):
        score.p, score.rank, score.entropy = float(p_chosen[k]), int(ranks[k]), float(entropy[k])
        if best_ids is not None:
            score.top = [(token_text(tokenizer, int(i)), float(p))
                         for i, p in zip(best_ids[k].tolist(), best_p[k].tolist(), strict=True)]
    return -float(log_probs.gather(1, chosen[:, None]).sum()) / LN2


def score_text(model: GPT, tokenizer: Tokenizer, text: str, top: int = DEFAULT_TOP) -> Scores:
    return score_ids(model, tokenizer, encode(tokenizer, text), top)


def parse_head(spec: str, n_layer: int, n_head: int) -> tuple[int, int | None]:
    """"L.H" (counted from 0) or "L.mean" (the mean over the heads) -> (layer, head or None); InputError when
    malformed or out of range."""
    layer_text, dot, head_text = spec.strip().partition(".")
    try:
        layer = int(layer_text)
        head = None if dot and head_text == "mean" else int(head_text)
    except ValueError:
        raise InputError(f"--attention takes LAYER.HEAD counted from 0 (like 0.1, or 0.mean), not {spec!r}") from None
    if not 0 <= layer < n_layer:
        raise InputError(f"layer {layer} is out of range: the model has {n_layer} (0 to {n_layer - 1})")
    if head is not None and not 0 <= head < n_head:
        raise InputError(f"head {head} is out of range: each layer has {n_head} (0 to {n_head - 1})")
    return layer, head


def attention_layers(model: GPT, tokenizer: Tokenizer, ids: Sequence[int]) -> list[Attention]:
    """The attention weights of every layer and head over `ids` (at most block_size tokens), from one forward.

    The model runs as usual (a forward hook keeps each block's normed input to its attention); the weights are
    then worked out from the block's own query/key projection, QK-norm and rotary angles, written out as in the
    lecture: scores, causal mask, softmax."""
    config = model.config
    if len(ids) > config.block_size:
        raise InputError(f"attention is shown for at most block_size ({config.block_size}) tokens; this text has "
                         f"{len(ids)}")
    seen: dict[int, torch.Tensor] = {}
    hooks = [block.attn.register_forward_pre_hook(lambda module, args, n=n: seen.__setitem__(n, args[0]))
             for n, block in enumerate(model.transformer.h)]
    try:
        all_logits(model, ids)
    finally:
        for hook in hooks:
            hook.remove()
    tokens = [token_text(tokenizer, i) for i in ids]
    return [Attention(n, tokens, attention_weights(model, n, seen[n])[0].float().cpu()) for n in range(config.n_layer)]


def attention_ids(model: GPT, tokenizer: Tokenizer, ids: Sequence[int], layer: int) -> Attention:
    """One layer's attention weights over `ids` (see `attention_layers`)."""
    n_layer = model.config.n_layer
    if not 0 <= layer < n_layer:
        raise InputError(f"layer {layer} is out of range: the model has {n_layer} (0 to {n_layer - 1})")
    return attention_layers(model, tokenizer, ids)[layer]


def attention_weights(model: GPT, layer: int, x: torch.Tensor) -> torch.Tensor:
    """Attention weights (B x H x T x T) of block `layer` for its attention's input `x` (B x T x C, after ln_1)."""
    attn = model.transformer.h[layer].attn
    B, T, C = x.shape
    H = attn.n_head
    D = C // H
    with torch.inference_mode():
        q, k, _ = attn.c_attn(x).split(C, dim=2)
        q, k = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k))
        if attn.qk_norm:
            q, k = F.rms_norm(q, (D,)), F.rms_norm(k, (D,))
        if model.rotary is not None:
            rope = model.rotary.at(torch.arange(T, device=x.device))
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(D)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)


def attention_text(model: GPT, tokenizer: Tokenizer, text: str, layer: int) -> Attention:
    return attention_ids(model, tokenizer, encode(tokenizer, text), layer)


# --- a reply scored as it is generated ----------------------------------------------------------------------

Part = tuple[list[str], list[TokenScore]]  # one turn's token spans (joining into its text) and their scores


class RecordingDecoder(Decoder):
    """A decoder that keeps the logits of every token it predicts, and the sampled tokens fed back to it, so a
    reply's probabilities come from the very logits it was sampled from: a copy of one row a token, on the
    device, no extra forward pass and no host sync (a captured CUDA graph's output is copied the same way)."""

    def __init__(self, model: GPT, batch: int = 1):
        super().__init__(model, batch)
        self.rows: list[torch.Tensor] = []  # row i predicted sampled token i
        self.fed: list[torch.Tensor] = []  # sampled token i + 1 (the last one is never fed back)

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        logits = super().prefill(ids)
        if self.rows:  # a refill once the cache is full: it ends with the token just sampled
            self.fed.append(ids[:, -1].clone())
        self.rows.append(logits.float().clone())
        return logits

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        self.fed.append(ids.view(-1).clone())
        logits = super().step(ids)
        self.rows.append(logits.float().clone())
        return logits


@contextmanager
def recording(loaded: LoadedModel) -> Iterator[RecordingDecoder]:
    """Generate through a RecordingDecoder while inside; the loaded model's own decoder (and its CUDA graph) is
    put back after."""
    kept = loaded._decoder
    recorder = loaded._decoder = RecordingDecoder(loaded.model, 1)
    try:
        yield recorder
    finally:
        loaded._decoder = kept


def score_exchange(model: GPT, tokenizer: Tokenizer, context: str, prompt: str, reply: str,
                   top: int = DEFAULT_TOP, recorder: RecordingDecoder | None = None) -> tuple[Part, Part]:
    """Score a prompt and the model's reply as the model read them, after the conversation fed before them (if
    any): the prompt's (spans, scores) and the reply's. Each part is encoded on its own, so no token straddles
    two turns. With the `recorder` the reply was generated through, its tokens are the sampled ones, scored by
    the logits they were sampled from, and only the context and prompt take a forward pass; without it (or
    when a stop string cut the reply short of its tokens) the reply is scored as its text encodes."""
    head = tokenizer.encode(context) if context else []
    asked = tokenizer.encode(prompt) if prompt else []
    if not head and not asked:  # generation starts an empty prompt from a newline, as stream_samples does
        try:
            asked = tokenizer.encode("\n")
        except InputError:
            asked = [0]
    sampled = _sampled_ids(tokenizer, recorder, reply) if recorder is not None else None
    if sampled is None:
        said = tokenizer.encode(reply) if reply else []
        scores = score_ids(model, tokenizer, head + asked + said, top).tokens
        start, middle = len(head), len(head) + len(asked)
        return ((token_spans(tokenizer, asked), scores[start:middle]) if prompt else ([], []),
                (token_spans(tokenizer, said), scores[middle:]))
    prompt_part: Part = ([], [])
    if prompt:
        scores = score_ids(model, tokenizer, head + asked, top).tokens
        prompt_part = (token_spans(tokenizer, asked), scores[len(head):])
    said_scores = [TokenScore(token_text(tokenizer, i), i, len(tokenizer.token_bytes[i])) for i in sampled]
    _fill(tokenizer, said_scores, torch.cat(recorder.rows[: len(sampled)]), top)
    return prompt_part, (token_spans(tokenizer, sampled), said_scores)


def _sampled_ids(tokenizer: Tokenizer, recorder: RecordingDecoder, reply: str) -> list[int] | None:
    """The sampled tokens of a one-sequence reply whose text is `reply`, or None when they do not spell it (a
    stop string cut it, or bytes that are not UTF-8 were replaced)."""
    if not recorder.rows or not reply:
        return None
    fed = [int(t[0]) for t in recorder.fed]  # the one host sync, once the reply is done
    text = reply.encode("utf-8")
    before = b"".join(tokenizer.token_bytes[i] for i in fed)
    if len(recorder.rows) != len(fed) + 1 or not text.startswith(before):
        return None
    last = next((i for i, b in enumerate(tokenizer.token_bytes) if b == text[len(before):]), None)
    return None if last is None else fed + [last]
