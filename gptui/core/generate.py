"""Generation: load a saved run, then stream text from it token by token with a KV cache.

The one-token decode step has the same tensor shapes at every position (see `GPT.decode`), so on CUDA it is
captured once as a CUDA graph and replayed: a token then costs one graph launch instead of ~100 kernel launches,
and attention backends never plan per length. Several continuations of one prompt decode together as a batch.
The only host sync per token is reading the sampled ids back.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import json
import logging
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from gptui.core.config import config_from_dict
from gptui.core.device import pick_device, pick_inference_dtype
from gptui.core.errors import DamagedRun, GptuiError, InputError
from gptui.core.model import GPT, ModelConfig
from gptui.core.runs import TOKENIZER, WEIGHTS, Run, load_error, require_sound
from gptui.core.sampling import SamplingSettings, check_num_samples
from gptui.core.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger("gptui")

# why CUDA graph capture failed in this process, once it has: later decoders go straight to eager
_graph_failure: str | None = None


class Decoder:
    """A model's KV cache for `batch` sequences and the one-token step over it.

    `prefill` fills the cache from a prompt (exact logits, any length up to block_size); `step` decodes one token
    per sequence. On CUDA the step is captured as a CUDA graph on first use and replayed after; when capture
    fails the decoder says so once (`on_notice`, else the "gptui" logger) and decodes eagerly."""

    def __init__(self, model: GPT, batch: int = 1, graphs: bool | None = None,
                 on_notice: Callable[[str], None] | None = None):
        self.model = model
        self.batch = batch
        self.cache = model.new_cache(batch)
        device = model.device
        self.idx = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.use_graph = (device.type == "cuda" if graphs is None else graphs) and _graph_failure is None
        self.graph = None
        self.logits: torch.Tensor | None = None  # the graph's output buffer
        self.on_notice = on_notice

    @property
    def full(self) -> bool:
        return self.cache.pos >= self.cache.block_size

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Empty the cache and fill it with `ids` (batch x T); the logits after the last one (batch x vocab)."""
        self.cache.reset()
        logits, _ = self.model(ids, cache=self.cache)
        return logits[:, -1]

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Append one token per sequence (`ids`: batch) and return the logits after it (batch x vocab)."""
        if self.full:
            raise ValueError("the KV cache is full: prefill it again before stepping")
        self.idx.copy_(ids.view(self.batch, 1))
        if self.use_graph and self.graph is None:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
            logits = self.logits
        else:
            logits = self.model.decode(self.idx, self.cache)
        self.cache.pos += 1
        return logits[:, -1]

    def _capture(self) -> None:
        global _graph_failure
        position = self.cache.pos  # warm-up steps write at this (still empty) slot; the position is restored
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # pick kernels and allocate workspaces outside the graph
                for _ in range(2):
                    self.model.decode(self.idx, self.cache)
                    self.cache.position.fill_(position)
            torch.cuda.current_stream().wait_stream(side)
            self.graph, self.logits = capture_graph(lambda: self.model.decode(self.idx, self.cache))
        except Exception as exc:
            self.graph, self.logits, self.use_graph = None, None, False
            _graph_failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            notice = f"CUDA graph capture failed ({_graph_failure}); decoding eagerly"
            (self.on_notice or log.warning)(notice)
        finally:
            self.cache.position.fill_(position)


def capture_graph(step: Callable[[], torch.Tensor]) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """`step` captured as a CUDA graph, and the tensor it returns (the graph's output buffer).

    Written out rather than through `torch.cuda.graph`, whose exit ends the capture first: when the body failed,
    ending it raises again ("operation failed due to a previous error during capture"), that error replaces the
    body's, and the thread is left on the capture stream with the caching allocator still routing to the graph's
    pool (later out-of-memory paths then skip freeing the cache). Here a failure raises the body's own error with
    the thread back on its stream and the routing ended. The capture is "thread_local": the TUI trains in another
    thread, and the global mode fails on that thread's allocations."""
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    pool = torch.cuda.graph_pool_handle()  # ours, so the routing can be ended whatever capture_end did
    with torch.cuda.stream(torch.cuda.Stream()):  # restores the thread's stream on the way out, whatever failed
        graph.capture_begin(pool, capture_error_mode="thread_local")
        try:
            out = step()
        except BaseException:
            with contextlib.suppress(Exception):  # ends the stream's capture; its error follows from the body's
                graph.capture_end()
            _end_routing(pool)
            raise
        try:
            graph.capture_end()
        except BaseException:
            _end_routing(pool)
            raise
    return graph, out


def _end_routing(pool) -> None:
    """After a failed capture: stop the caching allocator routing this thread's allocations to `pool`, unless
    capture_end got that far ("not currently recording to mempool_id"). The pool's few blocks stay reserved:
    releasing them here could release them twice (the graph's destructor releases a pool whose capture ended)."""
    with contextlib.suppress(Exception):
        torch._C._cuda_endAllocateToPool(torch.cuda.current_device(), pool)


@dataclass
class LoadedModel:
    run: Run
    model: GPT
    tokenizer: Tokenizer
    device: str
    dtype: str = "float32"
    _decoder: Decoder | None = field(default=None, repr=False)

    @property
    def block_size(self) -> int:
        return self.model.config.block_size

    def decoder(self, batch: int) -> Decoder:
        """A decoder for `batch` sequences, kept between prompts (its CUDA graph is captured once)."""
        if self._decoder is None or self._decoder.batch != batch:
            self._decoder = None  # free the old cache first
            self._decoder = Decoder(self.model, batch)
        return self._decoder


class PackedLinear(nn.Module):
    """A Linear layer for inference on a CPU, its weight reordered once into oneDNN's blocked layout.

    A decoding step multiplies one row by every weight matrix, so its speed is how fast the weights stream from
    memory: the plain layout through MKL reaches ~10 GB/s on an AMD EPYC, the packed one ~20 GB/s in float32
    (the whole lecture model's matrices: 2.0 against 4.0 ms) and more in bfloat16. Prefills and longer inputs
    run faster too. The plain weight stays (the state dict, the parameter count and a tied embedding are as
    before) but is never read again: inference only, and a change to it is not seen."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


@functools.cache
def packing_works(dtype: torch.dtype) -> bool:
    """Whether this is an x86 CPU (where oneDNN is the tuned path; elsewhere the plain BLAS stays) and this torch
    build packs Linear weights for oneDNN and gets the plain layer's result in `dtype`."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):  # the probe leaves the global generator alone
            linear = nn.Linear(16, 8, dtype=dtype)
            x = torch.randn(3, 16, dtype=dtype)
            return torch.allclose(PackedLinear(linear)(x).float(), linear(x).float(), atol=1e-2, rtol=1e-2)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


# In float32 a matrix smaller than this stays plain while the model's matrices fit in the CPU's caches: the packed
# product costs ~18 µs a call whatever the size, and from cache MKL's plain one is faster below ~200K weights at
# one row (measured on an AMD EPYC: 384x384 16 against 22 µs, 512x512 40 against 27 µs). Once the weights stream
# from memory at every token (more than CACHED_BYTES in all) the packed layout wins at every size, and in bfloat16
# it wins at every size anyway (192x192: 18 against 25 µs).
PACK_FLOAT32_FROM = 200_000
CACHED_BYTES = 16 * 2**20


def prepare_for_inference(model: GPT, device: str, dtype: str) -> GPT:
    """Cast the weights once to `dtype` on `device`, for inference; on a CPU, pack the Linear layers' weights
    for oneDNN where this build can and where it is faster (see `PackedLinear` and PACK_FLOAT32_FROM)."""
    model.to(device=device, dtype=getattr(torch, dtype)).eval().requires_grad_(False)
    if device != "cpu" or not packing_works(model.dtype):
        return model
    linears = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if isinstance(child, nn.Linear)]
    streamed = sum(c.weight.numel() * c.weight.element_size() for _, _, c in linears) > CACHED_BYTES
    pack_all = streamed or model.dtype == torch.bfloat16
    for parent, name, child in linears:
        if pack_all or child.weight.numel() >= PACK_FLOAT32_FROM:
            setattr(parent, name, PackedLinear(child))
    return model


def load_model(run: Run, device: str = "auto", dtype: str = "float32") -> LoadedModel:
    """Load the best weights of a run from safetensors (never pickle), then cast them once to `dtype`
    ("float32", "bfloat16", or "auto": bfloat16 where the device computes it natively)."""
    from safetensors.torch import load_model as load_safetensors

    dev = pick_device(device)
    precision = pick_inference_dtype(dtype, dev)
    require_sound(run)
    if not run.file(WEIGHTS).exists():
        raise InputError(f"run {run.id} has no saved weights yet (a run has them once it has trained a step and been evaluated or stopped)")
    try:
        saved = run.read_config()
        config = config_from_dict(saved["settings"])
        tokenizer = load_tokenizer(run.file(TOKENIZER))
        model = GPT(ModelConfig.from_config(config, tokenizer.vocab_size))
        load_safetensors(model, str(run.file(WEIGHTS)))
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
        raise DamagedRun(f"run {run.id} is damaged: {load_error(exc)}") from None
    prepare_for_inference(model, dev, precision)
    return LoadedModel(run, model, tokenizer, dev, precision)


def _filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # drop tokens once the mass before them already reaches top_p; the most likely token always stays
        drop = cumulative - sorted_logits.softmax(-1) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def _pick(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
          generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token of each sequence (batch,), sampled on the device (no host sync), and whether what it was
    drawn from was finite (a 0-d bool, read back with the tokens): a nan or +inf logit, or logits / temperature
    overflowing, turns the softmax to nan."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1), torch.isfinite(logits).all()
    probs = F.softmax(_filter_logits(logits / temperature, top_k, top_p), dim=-1)
    finite = torch.isfinite(probs).all()
    # multinomial checks its input with a device-side assert, and on CUDA a failed one poisons the context for the
    # whole process: a step that would trip it draws from equal weights instead, and the caller refuses it
    probs = torch.where(finite, probs, 1.0)
    return torch.multinomial(probs, 1, generator=generator).view(-1), finite


class NonFiniteLogits(GptuiError):
    """The model's logits hold a nan or an infinity (diverged weights, or an overflow): nothing to sample from."""


@torch.no_grad()
def sample_batch(
    model: GPT,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    num_samples: int = 1,
    decoder: Decoder | None = None,
) -> Iterator[list[int]]:
    """Yield, step by step, the next token of each of `num_samples` continuations of one prompt.

    With the cache, each step costs one position's forward pass for the whole batch; when the context reaches
    block_size, the cache is refilled from the last half block. Without it, the last block_size tokens are
    recomputed every step (the reference the cache is measured against)."""
    block = model.config.block_size
    device = model.device
    prompt = list(prompt_ids) or [0]
    history = torch.empty((num_samples, len(prompt) + max_new_tokens), dtype=torch.long, device=device)
    history[:, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
    n = len(prompt)
    if use_cache:
        if decoder is None or decoder.batch != num_samples or decoder.model is not model:
            decoder = Decoder(model, num_samples)
        logits = decoder.prefill(history[:, max(0, n - block) : n])
    else:
        logits = model(history[:, max(0, n - block) : n])[0][:, -1]
    for i in range(max_new_tokens):
        nxt, finite = _pick(logits, temperature, top_k, top_p, generator)
        history[:, n] = nxt
        n += 1
        *ids, ok = torch.cat((nxt, finite.view(1))).tolist()  # the one host sync per token
        if not ok:
            raise NonFiniteLogits("the model's next-token scores are not finite (nan or inf): its weights may have "
                                  "diverged, or this precision overflows")
        yield ids
        if i + 1 == max_new_tokens:
            return
        if not use_cache:
            logits = model(history[:, max(0, n - block) : n])[0][:, -1]
        elif decoder.full:
            logits = decoder.prefill(history[:, n - block // 2 : n])
        else:
            logits = decoder.step(nxt)


def sample_ids(
    model: GPT,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    decoder: Decoder | None = None,
) -> Iterator[int]:
    """Yield new token ids of one continuation, one at a time (see `sample_batch`)."""
    for ids in sample_batch(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, generator, use_cache,
                            1, decoder):
        yield ids[0]


class TrainingSampler:
    """The trainer's periodic samples: the model's own weights as they are (no copy, no autocast), through one
    decoder kept for the whole run, so a sample costs a fraction of a training step's time per token."""

    def __init__(self, model: GPT, prompt_ids: list[int], tokens: int, seed: int,
                 on_notice: Callable[[str], None] | None = None):
        self.model, self.prompt_ids, self.tokens, self.seed = model, prompt_ids, tokens, seed
        self.on_notice = on_notice
        self.decoder: Decoder | None = None
        self.generator = torch.Generator(device=model.device)

    def sample(self, step: int) -> list[int]:
        if self.decoder is None:
            self.decoder = Decoder(self.model, 1, on_notice=self.on_notice)
        self.generator.manual_seed(self.seed + step)
        was_training = self.model.training
        self.model.eval()
        try:
            return list(sample_ids(self.model, self.prompt_ids, self.tokens, 0.8, 0, 1.0, self.generator,
                                   decoder=self.decoder))
        finally:
            self.model.train(was_training)


class _TextAssembler:
    """Turns one continuation's tokens into text pieces: whole UTF-8 characters only, and nothing from the stop
    string or the end-of-text token on (text that could be the stop string's start is held back until it is
    clear)."""

    def __init__(self, tokenizer: Tokenizer, stop: str):
        self.tokenizer, self.stop = tokenizer, stop
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.held = ""
        self.done = False

    def feed(self, token: int) -> str:
        if token == self.tokenizer.eot_id:  # the end of a document: what was held back is all there is
            return self.finish()
        self.held += self.utf8.decode(self.tokenizer.token_bytes[token])
        if not self.stop:
            out, self.held = self.held, ""
            return out
        cut = self.held.find(self.stop)
        if cut >= 0:
            self.done = True
            out, self.held = self.held[:cut], ""
            return out
        keep = _partial_suffix(self.held, self.stop)
        out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return out

    def finish(self) -> str:
        if self.done:
            return ""
        self.done = True
        out, self.held = self.held + self.utf8.decode(b"", final=True), ""
        return out


@dataclass
class DecodeStats:
    """What one stream decoded: tokens over all its samples, and seconds from the prompt's prefill to the last."""

    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def describe(self, loaded: LoadedModel) -> str:
        return f"{self.tokens_per_second:,.0f} tok/s ({loaded.dtype}, {loaded.device})"


def stream_samples(
    loaded: LoadedModel,
    prompt: str,
    settings: SamplingSettings,
    num_samples: int = 1,
    should_stop: Callable[[], bool] | None = None,
    use_cache: bool = True,
    stats: DecodeStats | None = None,
) -> Iterator[tuple[int, str]]:
    """Yield (sample index, piece) while `num_samples` continuations of `prompt` decode together in one batch;
    each ends at its stop string or after max_new_tokens. The same seed gives the same texts. `stats`, if given,
    counts the tokens decoded and the time they took as they come."""
    settings.check()
    check_num_samples(num_samples)
    tok = loaded.tokenizer
    prompt_ids = tok.encode(prompt) if prompt else []
    if not prompt_ids:
        prompt_ids = tok.encode("\n") if _encodable(tok, "\n") else [0]
    generator = torch.Generator(device=loaded.device)
    if settings.seed is None:
        generator.seed()  # a fresh seed for this generator only: torch.seed() would reseed the global ones too
    else:
        generator.manual_seed(settings.seed)
    texts = [_TextAssembler(tok, settings.stop) for _ in range(num_samples)]
    decoder = loaded.decoder(num_samples) if use_cache else None
    stats = stats if stats is not None else DecodeStats()
    start = time.perf_counter()
    for ids in sample_batch(
        loaded.model, prompt_ids, settings.max_new_tokens, settings.temperature, settings.top_k, settings.top_p,
        generator, use_cache, num_samples, decoder,
    ):
        stats.tokens += len(ids)
        stats.seconds = time.perf_counter() - start
        for k, (text, token) in enumerate(zip(texts, ids, strict=True)):
            if not text.done:
                piece = text.feed(token)
                if piece:
                    yield k, piece
        if all(t.done for t in texts) or (should_stop and should_stop()):
            break
    for k, text in enumerate(texts):
        piece = text.finish()
        if piece:
            yield k, piece


def stream_text(
    loaded: LoadedModel,
    prompt: str,
    settings: SamplingSettings,
    should_stop: Callable[[], bool] | None = None,
    use_cache: bool = True,
    stats: DecodeStats | None = None,
) -> Iterator[str]:
    """Yield pieces of the continuation of `prompt` as they are produced (whole UTF-8 characters only)."""
    for _, piece in stream_samples(loaded, prompt, settings, 1, should_stop, use_cache, stats):
        yield piece


def generate_samples(loaded: LoadedModel, prompt: str, settings: SamplingSettings, num_samples: int) -> list[str]:
    texts = [""] * num_samples
    for k, piece in stream_samples(loaded, prompt, settings, num_samples):
        texts[k] += piece
    return texts


def _partial_suffix(text: str, stop: str) -> int:
    """Length of the longest end of `text` that is a start of `stop`."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if stop.startswith(text[-n:]):
            return n
    return 0


def _encodable(tok: Tokenizer, text: str) -> bool:
    try:
        return bool(tok.encode(text))
    except InputError:
        return False


def generate_text(loaded: LoadedModel, prompt: str, settings: SamplingSettings) -> str:
    return "".join(stream_text(loaded, prompt, settings))
