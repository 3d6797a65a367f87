"""Generation: load a saved run, then stream text from it token by token with a KV cache."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from gptui.core.config import config_from_dict
from gptui.core.device import pick_device
from gptui.core.errors import DamagedRun, InputError
from gptui.core.model import GPT, ModelConfig
from gptui.core.runs import TOKENIZER, WEIGHTS, Run, check_run
from gptui.core.sampling import SamplingSettings
from gptui.core.tokenizer import Tokenizer, load_tokenizer


@dataclass
class LoadedModel:
    run: Run
    model: GPT
    tokenizer: Tokenizer
    device: str

    @property
    def block_size(self) -> int:
        return self.model.config.block_size


def load_model(run: Run, device: str = "auto") -> LoadedModel:
    """Load the best weights of a run from safetensors (never pickle), on CPU unless told otherwise."""
    from safetensors.torch import load_model as load_safetensors

    problem = check_run(run)
    if problem:
        raise DamagedRun(f"run {run.id} is damaged: {problem}")
    if not run.file(WEIGHTS).exists():
        raise InputError(f"run {run.id} has no saved weights yet (it has not reached its first evaluation)")
    try:
        saved = run.read_config()
        config = config_from_dict(saved["settings"])
        tokenizer = load_tokenizer(run.file(TOKENIZER))
        model = GPT(ModelConfig.from_config(config, tokenizer.vocab_size))
        load_safetensors(model, str(run.file(WEIGHTS)))
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
        raise DamagedRun(f"run {run.id} could not be loaded: {str(exc).splitlines()[0][:200]}") from None
    dev = pick_device(device)
    model.to(dev).eval()
    return LoadedModel(run, model, tokenizer, dev)


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


@torch.no_grad()
def sample_ids(
    model: GPT,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[int]:
    """Yield new token ids one at a time. With the cache, each token costs one position's forward pass;
    when the context reaches block_size, the cache is refilled from the last half block."""
    block = model.config.block_size
    device = model.lm_head.weight.device
    ids = list(prompt_ids) or [0]
    cache = model.new_cache() if use_cache else None
    pending = ids[-block:]  # tokens not yet in the cache
    for _ in range(max_new_tokens):
        if cache is None:
            logits, _ = model(torch.tensor([ids[-block:]], device=device))
        else:
            if cache.pos + len(pending) > block:
                cache.reset()
                pending = ids[-(block // 2) :]
            if cache.pos > 0 and len(pending) > 1:  # the cache takes one token at a time after its prefill
                cache.reset()
                pending = ids[-block:]
            logits, _ = model(torch.tensor([pending], device=device), cache=cache)
        logits = logits[0, -1].float()
        if temperature == 0:
            nxt = int(torch.argmax(logits))
        else:
            probs = F.softmax(_filter_logits(logits / temperature, top_k, top_p), dim=-1)
            nxt = int(torch.multinomial(probs, 1, generator=generator))
        ids.append(nxt)
        pending = [nxt]
        yield nxt


def stream_text(
    loaded: LoadedModel,
    prompt: str,
    settings: SamplingSettings,
    should_stop: Callable[[], bool] | None = None,
    use_cache: bool = True,
) -> Iterator[str]:
    """Yield pieces of the continuation of `prompt` as they are produced (whole UTF-8 characters only)."""
    settings.check()
    tok = loaded.tokenizer
    prompt_ids = tok.encode(prompt) if prompt else []
    if not prompt_ids:
        prompt_ids = tok.encode("\n") if _encodable(tok, "\n") else [0]
    generator = torch.Generator(device=loaded.device)
    generator.manual_seed(settings.seed if settings.seed is not None else torch.seed())
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    held = ""  # text held back while it could be the start of the stop string
    for token in sample_ids(
        loaded.model, prompt_ids, settings.max_new_tokens, settings.temperature, settings.top_k, settings.top_p,
        generator, use_cache,
    ):
        held += decoder.decode(tok.token_bytes[token])
        if settings.stop:
            cut = held.find(settings.stop)
            if cut >= 0:
                if held[:cut]:
                    yield held[:cut]
                return
            keep = _partial_suffix(held, settings.stop)
            out, held = held[: len(held) - keep], held[len(held) - keep :]
        else:
            out, held = held, ""
        if out:
            yield out
        if should_stop and should_stop():
            break
    held += decoder.decode(b"", final=True)
    if held:
        yield held


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
