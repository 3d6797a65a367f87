"""Device and precision choice, and memory readings for the Train tab."""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import dataclass

import torch

from gptui.core.errors import InputError
from gptui.core.sampling import INFERENCE_DTYPES

BF16_PROBE_SIZE = 512  # square matmul timed to choose the CPU's autocast dtype
BF16_PROBE_MARGIN = 0.8  # bfloat16 must take under this share of float32's time (a margin against noise)


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def pick_device(requested: str = "auto") -> str:
    """CUDA, then MPS, then CPU for "auto"; an explicit request that cannot be met is an input error."""
    if requested == "auto":
        if cuda_available():
            return "cuda"
        if mps_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not cuda_available():
        raise InputError("device cuda requested but no CUDA GPU is available (use device=auto or cpu)")
    if requested == "mps" and not mps_available():
        raise InputError("device mps requested but Apple's MPS backend is not available (use device=auto or cpu)")
    if requested not in ("cpu", "cuda", "mps"):
        raise InputError(f"unknown device {requested!r} (choose auto, cpu, cuda or mps)")
    return requested


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AVX512-BF16 or AMX), where autocast pays off."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@functools.cache
def cpu_bf16_matmul_pays_off() -> bool:
    """Whether this CPU multiplies bfloat16 matrices clearly faster than float32 (timed once per process, about
    20 ms). The instruction flags do not tell: on some virtual machines with AVX512-BF16, torch's bfloat16 matmul
    runs at 0.6x of float32, and autocast would make training slower, not faster."""
    def best(dtype: torch.dtype) -> float:
        a = torch.randn(BF16_PROBE_SIZE, BF16_PROBE_SIZE).to(dtype)
        a @ a  # the first call pays for the kernel choice
        times = []
        for _ in range(5):
            t = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t)
        return min(times)

    return best(torch.bfloat16) < BF16_PROBE_MARGIN * best(torch.float32)


def bf16_native(device: str) -> bool:
    """Whether the device computes bfloat16 natively (CUDA with bf16; CPUs with AVX512-BF16 or AMX)."""
    if device == "cuda":
        # without including_emulation=False, pre-Ampere cards (T4, V100) answer True and run bf16 emulated, far
        # slower than float16 with a GradScaler
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device == "cpu" and cpu_has_bf16()


def pick_dtype(requested: str, device: str) -> str:
    """The autocast dtype: bf16 where the hardware supports it (on a CPU, where its matmuls are also faster than
    float32's), fp16 (with a grad scaler) on older GPUs."""
    if requested != "auto":
        if requested == "bfloat16" and device == "cuda" and not bf16_native(device):
            raise InputError("this GPU does not support bfloat16; use dtype=float16 or auto")
        if requested == "float16" and device == "cpu":
            raise InputError("float16 autocast is not supported on the CPU; use bfloat16 or float32")
        return requested
    if device == "cpu":  # training is compute-bound: bfloat16 only where its matmuls are faster here
        return "bfloat16" if cpu_has_bf16() and cpu_bf16_matmul_pays_off() else "float32"
    if bf16_native(device):
        return "bfloat16"
    return "float16" if device == "cuda" else "float32"


def pick_inference_dtype(requested: str, device: str) -> str:
    """The precision a model is cast to, once, for generation: bfloat16 where the device computes it natively
    (half the bytes to read per token), float32 elsewhere; float32 gives exactly the trained model's logits."""
    if requested not in INFERENCE_DTYPES:
        raise InputError(f"unknown dtype {requested!r} (choose {', '.join(INFERENCE_DTYPES)})")
    if requested == "float32":
        return requested
    if requested == "bfloat16" and not (bf16_native(device) or device == "mps"):
        where = "this GPU" if device == "cuda" else "this CPU (no AVX512-BF16 or AMX)"
        raise InputError(f"bfloat16 generation is not supported on {where}; use --dtype float32 or auto")
    if requested == "auto" and not bf16_native(device):
        return "float32"
    return "bfloat16"


def autocast(device: str, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=getattr(torch, dtype))


def setup_backend(device: str) -> None:
    if device == "cuda":
        # TF32 matmuls: ~free speed on Ampere+ for the float32 parts
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@dataclass
class MemoryReading:
    kind: str  # "cuda" or "process"
    allocated: int
    reserved: int
    peak: int

    def as_dict(self) -> dict:
        return {"kind": self.kind, "allocated": self.allocated, "reserved": self.reserved, "peak": self.peak}


def memory_reading(device: str) -> MemoryReading:
    """GPU allocated/reserved/peak on CUDA (straight from torch.cuda), else the process's resident memory."""
    if device == "cuda":
        return MemoryReading(
            "cuda",
            torch.cuda.memory_allocated(),
            torch.cuda.memory_reserved(),
            torch.cuda.max_memory_allocated(),
        )
    rss = peak = 0
    try:
        import psutil

        info = psutil.Process(os.getpid()).memory_info()
        rss = info.rss
        peak = getattr(info, "peak_wset", 0) or rss
    except Exception:
        pass
    try:
        import resource

        peak = max(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    except Exception:
        pass
    return MemoryReading("process", rss, rss, peak)
