"""The captured decode step on a real NVIDIA GPU (skipped without one; run by scripts/gpu_check.sh), for the
classic recipe and the modern one (rope, RMSNorm, QK-norm, ReLU², soft-capped logits, untied head: the default
preset's), in float32 and bfloat16."""

from __future__ import annotations

import threading

import pytest
import torch
from host_sync import HostSyncRecorder

import gptui.core.generate as generate
from gptui.core.generate import Decoder, sample_batch, sample_ids
from gptui.core.model import GPT, ModelConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

RECIPES = {
    "classic": dict(bias=True),
    "modern": dict(pos_embedding="rope", norm="rmsnorm", qk_norm=True, mlp="relu2", logit_softcap=15.0,
                   tie_embeddings=False),
}
DTYPES = {"float32": (torch.float32, 1e-5), "bfloat16": (torch.bfloat16, 2e-2)}


def make_model(recipe: str = "classic", dtype=torch.float32) -> GPT:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64, **RECIPES[recipe]))
    return model.to(device="cuda", dtype=dtype).eval()


@pytest.fixture(autouse=True)
def graphs_allowed(monkeypatch):
    """Each test starts with graphs allowed in the process, and leaves them as it found them."""
    monkeypatch.setattr(generate, "_graph_failure", None)


def skip_without_bf16(dtype) -> None:
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("no native bf16 on this GPU")


@torch.no_grad()
@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_graph_replay_gives_the_eager_logits_at_every_position_past_a_refill(recipe, dtype_name):
    dtype, tol = DTYPES[dtype_name]
    skip_without_bf16(dtype)
    model = make_model(recipe, dtype)
    seq = torch.randint(0, 65, (2, 150), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    eager, graphed = Decoder(model, 2, graphs=False), Decoder(model, 2, graphs=True)
    a, b = eager.prefill(seq[:, :5]), graphed.prefill(seq[:, :5])
    refills = 0
    for n in range(5, 150):
        torch.testing.assert_close(b, a, atol=tol, rtol=tol)
        if eager.full:
            a, b = eager.prefill(seq[:, n - 31 : n + 1]), graphed.prefill(seq[:, n - 31 : n + 1])
            refills += 1
        else:
            a, b = eager.step(seq[:, n]), graphed.step(seq[:, n])
        assert graphed.graph is not None, f"capture failed: {generate._graph_failure}"
    assert refills >= 2


@torch.no_grad()
@pytest.mark.parametrize("recipe", RECIPES)
def test_the_decode_step_never_syncs_on_cuda(recipe):
    """The CPU proof (tests/unit/test_host_sync.py) again on the device: the recorded ops, and CUDA's own sync
    detector set to raise."""
    decoder = Decoder(make_model(recipe), 2, graphs=False)
    decoder.prefill(torch.zeros((2, 3), dtype=torch.long, device="cuda"))
    ids = torch.ones(2, dtype=torch.long, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with HostSyncRecorder() as rec:
            for _ in range(5):
                decoder.step(ids)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert not rec.syncs, sorted(set(rec.syncs))


@pytest.mark.parametrize("recipe", RECIPES)
def test_sampling_through_the_graph_equals_eager_sampling(recipe):
    model = make_model(recipe)
    a, b = (list(sample_ids(model, [1, 2, 3], 150, 1.0, 0, 1.0, torch.Generator("cuda").manual_seed(4),
                            decoder=Decoder(model, graphs=graphs))) for graphs in (False, True))
    assert a == b


@pytest.mark.parametrize("recipe", RECIPES)
def test_bfloat16_batch_decoding_on_cuda(recipe):
    skip_without_bf16(torch.bfloat16)
    model = make_model(recipe, torch.bfloat16)
    decoder = Decoder(model, 8)
    out = list(sample_batch(model, [1], 100, 1.0, 0, 1.0, torch.Generator("cuda").manual_seed(1), num_samples=8,
                            decoder=decoder))
    assert decoder.graph is not None, f"capture failed: {generate._graph_failure}"
    assert len(out) == 100 and all(len(step) == 8 for step in out)
    assert len({tuple(step[k] for step in out) for k in range(8)}) > 1


def test_a_capture_that_fails_inside_leaves_cuda_usable_and_reports_the_first_error(monkeypatch):
    """A host sync inside the captured step (what Rotary.at used to do): the capture is invalidated, ending it
    fails again, and the decoder must report the first error with the thread back on its stream and the caching
    allocator no longer capturing (empty_cache, large allocations and a new capture all work)."""
    model = make_model("modern")
    eager = list(sample_ids(model, [1, 2, 3], 40, temperature=0.0, decoder=Decoder(model, graphs=False)))
    decode = model.decode

    def decode_that_syncs(idx, cache):
        out = decode(idx, cache)
        out.sum().item()  # illegal while the stream is capturing
        return out

    monkeypatch.setattr(model, "decode", decode_that_syncs)
    notices = []
    decoder = Decoder(model, graphs=True, on_notice=notices.append)
    got = list(sample_ids(model, [1, 2, 3], 40, temperature=0.0, decoder=decoder))
    assert got == eager
    assert decoder.graph is None and len(notices) == 1
    assert "not permitted when stream is capturing" in notices[0], notices[0]
    assert "previous error" not in notices[0]
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert not torch.cuda.is_current_stream_capturing()
    big = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    del big
    torch.cuda.empty_cache()
    graph, x = torch.cuda.CUDAGraph(), torch.ones(4, device="cuda")
    with torch.cuda.graph(graph):
        y = x * 2
    graph.replay()
    assert y.tolist() == [2.0] * 4


def test_capture_succeeds_while_another_thread_allocates(monkeypatch):
    """The TUI trains in one thread and generates in another. In the middle of the capture another thread
    allocates fresh device memory (a cudaMalloc): in the default "global" capture mode that call fails and
    invalidates the capture; the decoder captures in "thread_local" mode, where it is allowed."""
    model = make_model("modern")
    decode, errors, allocated = model.decode, [], []

    def allocate():
        try:
            allocated.append(torch.empty((123 << 20) + 4096, dtype=torch.uint8, device="cuda"))
        except Exception as exc:
            errors.append(exc)

    def decode_while_another_thread_allocates(idx, cache):
        if torch.cuda.is_current_stream_capturing():
            thread = threading.Thread(target=allocate)
            thread.start()
            thread.join()
        return decode(idx, cache)

    monkeypatch.setattr(model, "decode", decode_while_another_thread_allocates)
    torch.cuda.empty_cache()  # nothing cached that could serve the other thread without a cudaMalloc
    decoder = Decoder(model, 1)
    eager = list(sample_ids(model, [1, 2, 3], 20, temperature=0.0, decoder=Decoder(model, graphs=False)))
    assert list(sample_ids(model, [1, 2, 3], 20, temperature=0.0, decoder=decoder)) == eager
    assert not errors, errors
    assert allocated, "the other thread ran inside the capture"
    assert decoder.graph is not None, f"capture failed: {generate._graph_failure}"
