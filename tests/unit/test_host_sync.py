"""The decode step never waits for the device, for every recipe option, proven on a CPU.

A host sync inside the one-token step breaks its CUDA graph capture (the decoder then falls back to eager
decoding with a round trip per token), and no GPU runs in CI: so the ops of the step are recorded here (see
tests/host_sync.py) for every combination of the options that change the step, at every position, after a
refill, in batches and in bfloat16, and again on the meta device, where any read of the data fails."""

from __future__ import annotations

import itertools
from dataclasses import asdict

import pytest
import torch
from host_sync import HostSyncRecorder, counting_host_reads

from gptui.core.config import preset_config
from gptui.core.generate import Decoder, packing_works, prepare_for_inference, sample_batch
from gptui.core.model import GPT, ModelConfig

OPTIONS = dict(
    pos_embedding=("learned", "rope"),
    norm=("layernorm", "rmsnorm"),
    qk_norm=(False, True),
    mlp=("gelu", "relu2", "swiglu"),
    logit_softcap=(0.0, 15.0),
    tie_embeddings=(True, False),
)
RECIPES = [dict(zip(OPTIONS, values, strict=True)) for values in itertools.product(*OPTIONS.values())]
BLOCK = 12


def make_model(recipe: dict, device: str = "cpu") -> GPT:
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(ModelConfig(vocab_size=40, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16, **recipe))
    return model.eval()


def describe(recipe: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in recipe.items())


def step_syncs(decoder: Decoder, monkeypatch, token: int = 1) -> list[str]:
    """The host syncs of one decode step: aten ops that wait for the device, and Python-level reads."""
    ids = torch.full((decoder.batch,), token, dtype=torch.long, device=decoder.model.device)
    with counting_host_reads(monkeypatch) as reads, HostSyncRecorder() as rec:
        decoder.step(ids)
    return rec.syncs + [f"Tensor.{name}" for name in reads]


def walk_syncs(decoder: Decoder, monkeypatch) -> list[tuple[int, str]]:
    """(position, sync) over the steps from a 3-token prompt to a full cache, then after a refill from the last
    half block (as sample_batch refills) to a full cache again, recording the first, a middle and the last step
    of each (the ops are the same at every position: tests/unit/test_decode.py)."""
    found = []
    device = decoder.model.device
    decoder.prefill(torch.arange(3, device=device).repeat(decoder.batch, 1))
    for recorded in ({3, BLOCK // 2 + 1, BLOCK - 1}, {BLOCK // 2, BLOCK - 1}):
        while not decoder.full:
            position = decoder.cache.pos
            if position in recorded:
                found += [(position, s) for s in step_syncs(decoder, monkeypatch)]
            else:
                decoder.step(torch.ones(decoder.batch, dtype=torch.long, device=device))
        decoder.prefill(torch.arange(BLOCK // 2, device=device).repeat(decoder.batch, 1))
    return found


@torch.no_grad()
def test_the_decode_step_never_syncs_for_any_recipe(monkeypatch):
    failures = []
    for recipe in RECIPES:
        found = walk_syncs(Decoder(make_model(recipe), batch=2, graphs=False), monkeypatch)
        if found:
            failures.append(f"{describe(recipe)}: {sorted(set(s for _, s in found))} at positions "
                            f"{sorted(set(p for p, _ in found))}")
    assert not failures, f"{len(failures)} of {len(RECIPES)} recipes sync in the decode step:\n" + "\n".join(
        failures)


@torch.no_grad()
@pytest.mark.parametrize("preset", ["tiny", "tiny-classic", "gpu", "lecture"])
def test_the_presets_prepared_for_inference_never_sync_in_the_decode_step(monkeypatch, preset):
    """As `gptui generate` runs them: weights cast (and packed for oneDNN on x86), float32 and, where this CPU
    packs it, bfloat16 with its float32 cache."""
    config = preset_config(preset)
    fields = {k: v for k, v in asdict(config).items() if k in ModelConfig.__dataclass_fields__}
    fields.update(vocab_size=40, block_size=BLOCK, n_layer=1, n_head=2, n_embd=32, dropout=0.0)
    for dtype in ["float32"] + (["bfloat16"] if packing_works(torch.bfloat16) else []):
        torch.manual_seed(0)
        model = prepare_for_inference(GPT(ModelConfig(**fields)), "cpu", dtype)
        found = walk_syncs(Decoder(model, batch=1, graphs=False), monkeypatch)
        assert not found, f"{preset} in {dtype}: {found[:5]}"


@torch.no_grad()
def test_the_decode_step_runs_on_the_meta_device_for_every_recipe():
    """Meta tensors have no data: any read of a value (item, tolist, a 0-d index, a data-dependent shape) fails,
    including reads made inside a kernel, where the dispatch mode cannot see them."""
    for recipe in RECIPES:
        decoder = Decoder(make_model(recipe, "meta"), batch=2, graphs=False)
        decoder.prefill(torch.zeros((2, 3), dtype=torch.long, device="meta"))
        try:
            logits = decoder.step(torch.zeros(2, dtype=torch.long, device="meta"))
        except (RuntimeError, NotImplementedError) as exc:
            pytest.fail(f"{describe(recipe)}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        assert logits.shape == (2, 40) and logits.device.type == "meta"


@torch.no_grad()
@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, 0, 1.0), (0.9, 5, 1.0), (1.2, 0, 0.8), (1.0, 7, 0.9)])
def test_a_generated_token_costs_one_host_read(monkeypatch, temperature, top_k, top_p):
    """The whole per-token loop (sample, append, step or refill, for 3 samples at once) reads the device once a
    token (the sampled ids, with the verdict on their logits) and runs no op that syncs."""
    model = make_model(dict(pos_embedding="rope", norm="rmsnorm", qk_norm=True, mlp="relu2", logit_softcap=15.0,
                            tie_embeddings=False))
    tokens = 3 * BLOCK  # two refills
    generator = torch.Generator().manual_seed(0)
    with counting_host_reads(monkeypatch) as reads, HostSyncRecorder() as rec:
        out = list(sample_batch(model, [1, 2, 3], tokens, temperature, top_k, top_p, generator, num_samples=3,
                                decoder=Decoder(model, 3, graphs=False)))
    assert len(out) == tokens and all(len(ids) == 3 for ids in out)
    assert not rec.syncs, sorted(set(rec.syncs))
    assert dict(reads) == {"tolist": tokens}
