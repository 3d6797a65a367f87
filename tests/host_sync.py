"""Catching host syncs on any device: the aten ops that make the host wait for the device (a CUDA graph capture
fails on them, and eagerly each costs a round trip), recorded with a TorchDispatchMode, and the Python-level
reads (`tolist`, `item`, `bool(t)`...) counted by wrapping the Tensor methods. Shared by tests/unit (CPU) and
tests/device (CUDA)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _packets(*names: str) -> frozenset:
    # an op this torch build lacks is simply not looked for
    return frozenset(getattr(aten, n) for n in names if hasattr(aten, n))


# Ops whose CUDA kernels wait for the device: they read a value back (a scalar, a count of selected elements
# that sizes the output, a comparison's verdict) before they can return.
SYNCING_OPS = _packets(
    "_local_scalar_dense", "item", "is_nonzero", "nonzero", "nonzero_numpy", "argwhere", "masked_select",
    "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive", "unique_dim_consecutive", "bincount",
    "histc", "equal", "allclose",
)
# Synced only in some forms: `repeat_interleave` without output_size (it sums the repeats on the host), and
# indexing (reading or writing) with a boolean or byte mask (it turns the mask into indices with nonzero).
_REPEAT = _packets("repeat_interleave")
_INDEXING = _packets("index", "index_put", "index_put_", "_index_put_impl_", "_unsafe_index", "_unsafe_index_put")
# Python-level reads of a tensor's data: on a CPU tensor they dispatch nothing, so they are counted here.
HOST_READS = ("tolist", "item", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")


def _tensors(value) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def sync_reason(func, args, kwargs) -> str | None:
    """Why calling `func` on these arguments waits for the device, or None."""
    packet = func.overloadpacket
    if packet in SYNCING_OPS:
        return str(func)
    if packet in _REPEAT and kwargs.get("output_size") is None and len(args) < 4:
        return f"{func} without output_size"
    if packet in _INDEXING:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if any(t.dtype in (torch.bool, torch.uint8) for t in _tensors(indices)):
            return f"{func} with a boolean mask"
    # a copy that lands on the CPU from another device (to("cpu"), copy_ into a host tensor)
    devices = {t.device.type for t in _tensors(list(args) + list(kwargs.values()))}
    target = kwargs.get("device")
    if packet is aten._to_copy and target is not None and torch.device(target).type == "cpu" and devices - {"cpu"}:
        return f"{func} to the host"
    if packet is aten.copy_ and args[0].device.type == "cpu" and args[1].device.type != "cpu":
        return f"{func} into host memory"
    return None


class HostSyncRecorder(TorchDispatchMode):
    """Records every aten op run inside it, and which of them sync with the host."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops.append(str(func))
        reason = sync_reason(func, args, kwargs)
        if reason:
            self.syncs.append(reason)
        return func(*args, **kwargs)


@contextlib.contextmanager
def counting_host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    """Counts the Python-level reads of tensor data (HOST_READS) made inside it, by method name."""
    reads: Counter = Counter()
    with monkeypatch.context() as m:
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def counted(self, *args, _name=name, _original=original, **kwargs):
                reads[_name] += 1
                return _original(self, *args, **kwargs)

            m.setattr(torch.Tensor, name, counted)
        yield reads
