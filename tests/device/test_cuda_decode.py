"""The captured decode step on a real NVIDIA GPU (skipped without one; run by scripts/gpu_check.sh)."""

from __future__ import annotations

import pytest
import torch

import gptui.core.generate as generate
from gptui.core.generate import Decoder, sample_batch, sample_ids
from gptui.core.model import GPT, ModelConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def make_model(dtype=torch.float32) -> GPT:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64, bias=True))
    return model.to(device="cuda", dtype=dtype).eval()


@torch.no_grad()
def test_graph_replay_gives_the_eager_logits_at_every_position_past_a_refill():
    model = make_model()
    seq = torch.randint(0, 65, (2, 150), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    eager, graphed = Decoder(model, 2, graphs=False), Decoder(model, 2, graphs=True)
    a, b = eager.prefill(seq[:, :5]), graphed.prefill(seq[:, :5])
    for n in range(5, 150):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        if eager.full:
            a, b = eager.prefill(seq[:, n - 31 : n + 1]), graphed.prefill(seq[:, n - 31 : n + 1])
        else:
            a, b = eager.step(seq[:, n]), graphed.step(seq[:, n])
    assert graphed.graph is not None, f"capture failed: {generate._graph_failure}"


def test_sampling_through_the_graph_equals_eager_sampling():
    model = make_model()
    a, b = (list(sample_ids(model, [1, 2, 3], 150, 1.0, 0, 1.0, torch.Generator("cuda").manual_seed(4),
                            decoder=Decoder(model, graphs=graphs))) for graphs in (False, True))
    assert a == b


def test_bfloat16_batch_decoding_on_cuda():
    if not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    model = make_model(torch.bfloat16)
    out = list(sample_batch(model, [1], 100, 1.0, 0, 1.0, torch.Generator("cuda").manual_seed(1), num_samples=8))
    assert len(out) == 100 and all(len(step) == 8 for step in out)
    assert len({tuple(step[k] for step in out) for k in range(8)}) > 1
