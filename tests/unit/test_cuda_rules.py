"""PyTorch's CUDA rules that gptui's code must keep, checked on a CPU: a CUDA graph capture that fails mid-way
leaves the thread's stream and the caching allocator as they were and reports the first error; sampling never
hands torch.multinomial a distribution that trips its device-side assert; an unseeded generation leaves torch's
global generators alone. (tests/device repeats the capture check on a real GPU.)"""

from __future__ import annotations

import contextlib

import pytest
import torch

import gptui.core.generate as generate
from gptui.core.generate import Decoder, NonFiniteLogits, generate_text, load_model, sample_batch, sample_ids
from gptui.core.model import GPT, ModelConfig
from gptui.core.sampling import SamplingSettings


def make_model(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=50, block_size=32, n_layer=1, n_head=2, n_embd=16, pos_embedding="rope",
                           norm="rmsnorm", qk_norm=True, mlp="relu2", logit_softcap=15.0, **kw)).eval()


class FakeCuda:
    """Just enough of torch.cuda for a capture on a CPU, keeping the state a failed capture can leave behind: the
    thread's current stream, the stream under capture, and the pools the caching allocator routes to. Its
    CUDAGraph behaves as PyTorch's C++ one: capture_end fails on an invalidated capture before it ends the
    allocator's routing."""

    FOLLOW_ON = "CUDA error: operation failed due to a previous error during capture"

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at_end: bool = False):
        self.default = self.current = self.Stream()
        self.capturing = None
        self.routing: set = set()
        self.modes: list[str] = []
        self.invalidated = False
        self.pools = 0
        fake = self

        class Graph:
            def capture_begin(self, pool=None, capture_error_mode="global"):
                fake.modes.append(capture_error_mode)
                fake.capturing, self.pool = fake.current, pool
                fake.routing.add(pool)

            def capture_end(self):
                if fake.current is not fake.capturing:
                    raise RuntimeError("Capture must end on the same stream it began on.")
                fake.capturing = None
                if fake.invalidated:
                    raise RuntimeError(fake.FOLLOW_ON)
                fake.routing.discard(self.pool)
                if fail_at_end:
                    raise RuntimeError("CUDA error: out of memory (instantiating the graph)")

        def end_allocate_to_pool(device, pool):
            if pool not in fake.routing:
                raise RuntimeError("endAllocatePool: not currently recording to mempool_id")
            fake.routing.discard(pool)

        @contextlib.contextmanager
        def stream(s):
            previous, fake.current = fake.current, s
            try:
                yield
            finally:
                fake.current = previous

        for name, value in dict(Stream=self.Stream, current_stream=lambda: fake.current, stream=stream,
                                synchronize=lambda *a: None, CUDAGraph=Graph, graph_pool_handle=self.pool_handle,
                                current_device=lambda: 0, empty_cache=lambda: None).items():
            monkeypatch.setattr(torch.cuda, name, value)
        monkeypatch.setattr(torch._C, "_cuda_endAllocateToPool", end_allocate_to_pool, raising=False)

    class Stream:
        def wait_stream(self, other):
            pass

    def pool_handle(self):
        self.pools += 1
        return (0, self.pools)

    def fail_inside_capture(self, model: GPT, monkeypatch: pytest.MonkeyPatch) -> None:
        """The model's decode step fails as an illegal op inside a capture does (e.g. a host sync)."""
        decode = model.decode

        def decode_that_syncs(*args, **kwargs):
            if self.capturing is not None:
                self.invalidated = True
                raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
            return decode(*args, **kwargs)

        monkeypatch.setattr(model, "decode", decode_that_syncs)


@pytest.mark.parametrize("where", ["inside the capture", "at its end"])
def test_a_failed_capture_restores_the_stream_and_the_allocator_and_reports_the_first_error(monkeypatch, where):
    monkeypatch.setattr(generate, "_graph_failure", None)
    model = make_model()
    eager = list(sample_ids(model, [1, 2, 3], 40, temperature=0.0, decoder=Decoder(model, graphs=False)))
    cuda = FakeCuda(monkeypatch, fail_at_end=where == "at its end")
    if where == "inside the capture":
        cuda.fail_inside_capture(model, monkeypatch)
    notices = []
    first = Decoder(model, graphs=True, on_notice=notices.append)
    assert list(sample_ids(model, [1, 2, 3], 40, temperature=0.0, decoder=first)) == eager
    assert cuda.modes == ["thread_local"], "the TUI trains in another thread while it captures"
    assert cuda.current is cuda.default, "the thread is back on its own stream"
    assert cuda.capturing is None and not cuda.routing, "no capture left under way, nothing routed to its pool"
    expected = "operation not permitted when stream is capturing" if where == "inside the capture" else "out of memory"
    assert len(notices) == 1 and expected in notices[0] and "previous error" not in notices[0]
    assert first.graph is None and not first.use_graph
    # graphs are off for the process: a later decoder decodes eagerly without touching CUDA again
    second = Decoder(model, graphs=True)
    assert list(sample_ids(model, [1, 2, 3], 40, temperature=0.0, decoder=second)) == eager
    assert cuda.modes == ["thread_local"] and cuda.pools == 1


def nan_model() -> GPT:
    model = make_model(tie_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight[3, 0] = float("nan")
    return model


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, 0, 1.0), (1.0, 0, 1.0), (0.8, 5, 0.9)])
def test_non_finite_logits_are_refused_and_never_reach_multinomial(monkeypatch, temperature, top_k, top_p):
    multinomial = torch.multinomial

    def checked_multinomial(probs, *args, **kwargs):
        # on CUDA this input would trip a device-side assert that poisons the context for the whole process
        assert torch.isfinite(probs).all() and (probs >= 0).all() and (probs.sum(-1) > 0).all()
        return multinomial(probs, *args, **kwargs)

    monkeypatch.setattr(torch, "multinomial", checked_multinomial)
    model = nan_model()
    for use_cache in (True, False):
        with pytest.raises(NonFiniteLogits, match="not finite"):
            next(iter(sample_batch(model, [1, 2], 5, temperature, top_k, top_p, torch.Generator().manual_seed(0),
                                   use_cache, num_samples=2)))


def test_an_overflowing_temperature_is_refused_too():
    """Finite logits over a temperature so small that they overflow to inf: softmax would give nan."""
    model = make_model()
    with pytest.raises(NonFiniteLogits):
        next(iter(sample_ids(model, [1, 2], 5, temperature=1e-45, generator=torch.Generator().manual_seed(0))))


def test_finite_logits_sample_as_before():
    """The guard changes nothing for a healthy model: same tokens as torch.multinomial on the softmax alone."""
    model = make_model()
    got = list(sample_ids(model, [1, 2], 20, temperature=1.0, generator=torch.Generator().manual_seed(5),
                          use_cache=False))
    gen, ids = torch.Generator().manual_seed(5), [1, 2]
    expected = []
    with torch.no_grad():
        for _ in range(20):
            probs = torch.softmax(model(torch.tensor([ids]))[0][:, -1].float(), -1)
            expected.append(torch.multinomial(probs, 1, generator=gen).item())
            ids.append(expected[-1])
    assert got == expected


def test_an_unseeded_generation_leaves_the_global_generators_alone(trained_run):
    """torch.seed() would reseed the global generator: a TUI generation would then shift the dropout of a run
    training in the same process."""
    loaded = load_model(trained_run, "cpu")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    texts = {generate_text(loaded, "All:", SamplingSettings(max_new_tokens=30, temperature=1.0)) for _ in range(3)}
    assert torch.equal(torch.get_rng_state(), state)
    assert len(texts) > 1, "unseeded generations still differ"


def test_batches_are_contiguous_halves_of_one_buffer():
    """A strided view (the old rows[:, :-1]) is copied to the GPU through a pageable temporary, whatever was
    pinned: non_blocking then overlaps nothing. (tests/device checks the buffer is pinned on CUDA.)"""
    import numpy as np

    from gptui.core.data import BatchSampler

    data = np.arange(1000, dtype=np.uint16)
    x, y = BatchSampler(data, block_size=8, batch_size=4, seed=0).next()
    assert x.is_contiguous() and y.is_contiguous() and x.dtype == y.dtype == torch.long
    assert x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr(), "one buffer, one pinned copy"
    assert x.shape == y.shape == (4, 8) and torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    again, _ = BatchSampler(data, block_size=8, batch_size=4, seed=0).next()
    assert torch.equal(x, again)


@pytest.mark.parametrize("card,ampere,expected", [("T4", False, "float16"), ("A100", True, "bfloat16")])
def test_auto_precision_trains_pre_ampere_cards_in_float16(monkeypatch, card, ampere, expected):
    """torch.cuda.is_bf16_supported() answers True on a T4 or V100 (bf16 emulated, far slower than float16 with
    a GradScaler) unless asked about native support only."""
    from gptui.core import device as dev

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: ampere or including_emulation)
    assert dev.pick_dtype("auto", "cuda") == expected
    assert dev.pick_inference_dtype("auto", "cuda") == ("bfloat16" if ampere else "float32")


def test_gptui_generate_from_diverged_weights_fails_with_one_line(run_copy, workspace, capsys):
    from safetensors.torch import load_file, save_file

    from gptui.cli import main

    path = run_copy.file("model.safetensors")
    weights = load_file(str(path))
    weights["lm_head.weight"] = torch.full_like(weights["lm_head.weight"], float("nan"))
    save_file(weights, str(path))
    code = main(["--home", str(workspace.home), "generate", "--run", run_copy.id, "--prompt", "All:",
                 "--device", "cpu", "--max-new-tokens", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "not finite" in err[0], err
