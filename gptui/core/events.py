"""What a training job tells its listener: the one typed channel both the CLI and the TUI consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prepare:
    """Tokenizer training or encoding progress; fraction is None when unknown."""

    stage: str
    fraction: float | None = None


@dataclass(frozen=True)
class Started:
    run_id: str
    run_path: str
    params: int
    device: str
    dtype: str
    start_step: int
    max_iters: int
    settings: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1  # processes training together (torchrun); tokens per step = batch x block x accum x this


@dataclass(frozen=True)
class Step:
    step: int
    max_iters: int
    elapsed: float
    loss: float
    lr: float
    tokens_per_sec: float
    eta_seconds: float | None
    memory: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Eval:
    step: int
    elapsed: float
    train_loss: float
    val_loss: float
    val_bpb: float
    best: bool


@dataclass(frozen=True)
class Sample:
    step: int
    text: str
    seconds: float | None = None  # how long sampling took (None when read back from a log)


@dataclass(frozen=True)
class Log:
    line: str


@dataclass(frozen=True)
class Finished:
    run_id: str
    status: str  # completed, stopped or failed
    reason: str
    step: int
    best_val_loss: float | None
    best_val_bpb: float | None
    duration: float
    tokens_per_sec: float


Event = Prepare | Started | Step | Eval | Sample | Log | Finished
