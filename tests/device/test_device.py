"""Device and precision choice, tested without a GPU by mocking only the device queries."""

from __future__ import annotations

import pytest
import torch

from gptui.core import device as dev
from gptui.core.errors import InputError


@pytest.fixture
def no_accelerators(monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: False)
    monkeypatch.setattr(dev, "mps_available", lambda: False)


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, no_accelerators):
    assert dev.pick_device("auto") == "cpu"
    monkeypatch.setattr(dev, "mps_available", lambda: True)
    assert dev.pick_device("auto") == "mps"
    monkeypatch.setattr(dev, "cuda_available", lambda: True)
    assert dev.pick_device("auto") == "cuda"


def test_explicit_cpu_overrides_an_available_gpu(monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: True)
    assert dev.pick_device("cpu") == "cpu"


@pytest.mark.parametrize("requested", ["cuda", "mps"])
def test_unavailable_device_is_a_clear_input_error(no_accelerators, requested):
    with pytest.raises(InputError, match=f"{requested}.*(not available|no CUDA)"):
        dev.pick_device(requested)


def test_cuda_dtype_is_bf16_where_supported_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert dev.pick_dtype("auto", "cuda") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert dev.pick_dtype("auto", "cuda") == "float16"
    with pytest.raises(InputError, match="bfloat16"):
        dev.pick_dtype("bfloat16", "cuda")


def test_cpu_dtype_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(dev, "cpu_bf16_matmul_pays_off", lambda: True)
    assert dev.pick_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(dev, "cpu_bf16_matmul_pays_off", lambda: False)  # flags say bf16, its matmuls are slower
    assert dev.pick_dtype("auto", "cpu") == "float32"
    assert dev.pick_dtype("bfloat16", "cpu") == "bfloat16", "asked for, it is used all the same"
    monkeypatch.setattr(dev, "cpu_bf16_matmul_pays_off", lambda: True)
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: False)
    assert dev.pick_dtype("auto", "cpu") == "float32"
    assert dev.pick_dtype("float32", "cpu") == "float32"
    with pytest.raises(InputError, match="float16"):
        dev.pick_dtype("float16", "cpu")


def test_mps_runs_in_float32():
    assert dev.pick_dtype("auto", "mps") == "float32"


def test_cuda_memory_reading_is_what_torch_reports(monkeypatch):
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: 111)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: 222)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 333)
    reading = dev.memory_reading("cuda")
    assert reading.as_dict() == {"kind": "cuda", "allocated": 111, "reserved": 222, "peak": 333}


def test_cpu_memory_reading_is_process_memory():
    reading = dev.memory_reading("cpu")
    assert reading.kind == "process"
    assert reading.allocated > 10_000_000  # a Python process with torch loaded
    assert reading.peak >= reading.allocated


def test_setup_backend_turns_tf32_on_for_cuda():
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        dev.setup_backend("cuda")
        assert torch.backends.cuda.matmul.allow_tf32 is True
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_fused_adamw_on_cuda_foreach_elsewhere():
    from gptui.core.model import GPT, ModelConfig

    model = GPT(ModelConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8))
    cpu_opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cpu")
    assert cpu_opt.defaults.get("foreach") is True and not cpu_opt.defaults.get("fused")
    # decay groups: matrices decay, vectors never
    decay, no_decay = cpu_opt.param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.dim() < 2 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0


def test_cuda_optimizer_asks_for_fused_adamw():
    from gptui.core.model import GPT, ModelConfig

    model = GPT(ModelConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8))
    try:
        opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cuda")
    except RuntimeError as exc:  # a torch build without fused AdamW for CPU tensors
        pytest.skip(f"fused AdamW needs the tensors on a GPU here: {exc}")
    assert opt.defaults["fused"] is True


def test_the_cpu_bf16_probe_answers_once_per_process(monkeypatch):
    dev.cpu_bf16_matmul_pays_off.cache_clear()
    calls = []
    real = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: calls.append(a) or real(*a, **k))
    first = dev.cpu_bf16_matmul_pays_off()
    assert isinstance(first, bool) and len(calls) == 2  # one bfloat16 and one float32 matrix
    assert dev.cpu_bf16_matmul_pays_off() is first and len(calls) == 2
