"""Sampling settings and transcripts: what generation needs that does not need torch (the TUI uses it freely)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gptui.core.errors import InputError
from gptui.core.runs import Run


@dataclass
class SamplingSettings:
    max_new_tokens: int = 500
    temperature: float = 0.8
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    seed: int | None = None
    stop: str = ""  # stop when this text appears (not included in the output)

    def check(self) -> SamplingSettings:
        """Raise InputError naming the first bad value; return self when all are fine."""
        if self.max_new_tokens < 1:
            raise InputError("max new tokens must be at least 1")
        if not self.temperature >= 0:  # also refuses NaN
            raise InputError("temperature must be 0 (greedy) or more")
        if self.top_k < 0:
            raise InputError("top-k must be 0 (off) or more")
        if not 0 < self.top_p <= 1:
            raise InputError("top-p must be in (0, 1]")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            digits = len(str(abs(self.seed)))
            shown = str(self.seed) if digits <= 30 else f"a {digits}-digit number"
            raise InputError(f"seed must be between 0 and {2**63 - 1}, not {shown}")
        return self


MAX_SAMPLES = 64  # continuations decoded together in one batch
INFERENCE_DTYPES = ("auto", "float32", "bfloat16")  # precisions a model can be cast to for generating


def check_num_samples(n: int) -> int:
    if not 1 <= n <= MAX_SAMPLES:
        raise InputError(f"number of samples must be between 1 and {MAX_SAMPLES}, not {n}")
    return n


def unescape(text: str) -> str:
    """Turn the escapes a person types (\\n, \\t, \\r, \\\\) into characters; leave everything else as typed."""
    table = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
    return re.sub(r"\\([ntr\\])", lambda m: table[m.group(1)], text)


def save_transcript(
    run: Run, settings: SamplingSettings, prompt: Any, text: str, kind: str = "generation", **extra: str
) -> Path:
    """Write a generation or chat into the run's generations/, headed by run, time, settings and prompt."""
    header = {
        "run": run.id,
        "time": datetime.now().isoformat(timespec="seconds"),
        "settings": json.dumps(asdict(settings), ensure_ascii=False),
        "prompt": json.dumps(prompt, ensure_ascii=False),
        **extra,
    }
    return run.save_generation(header, text, kind)
