"""A run's training state and `checkpoint.pt`, the file an exact resume starts from.

`TrainingState` is what the loop carries from step to step besides the model and the optimizer; `to_checkpoint`
and `from_checkpoint` are the one pair that turns it (with the weights and the optimizer's state) into the file's
dict and back. The keys on disk are those every earlier version wrote, so older checkpoints still resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from gptui.core.config import Config
from gptui.core.errors import DamagedRun, InputError
from gptui.core.model import GPT, ModelConfig
from gptui.core.runs import CHECKPOINT, Run

# what a checkpoint must hold; world_size, best_val_bpb, rank_rng and cuda_rng came later and may be missing
CHECKPOINT_KEYS = ("model", "optimizer", "step", "best_val_loss", "bad_evals", "elapsed", "batch_rng",
                   "torch_rng")


@dataclass
class TrainingState:
    """Where a run has got to. `elapsed` is the training time of the sessions before this one until the loop
    saves, when it is the whole run's; the random states are the ones an exact resume restores."""

    step: int = 0
    best_val_loss: float = math.inf
    best_val_bpb: float | None = None
    bad_evals: int = 0  # evaluations in a row without a better val loss (what patience counts)
    elapsed: float = 0.0
    batch_rng: Any = None  # the training sampler's state (BatchSampler.state())
    torch_rng: torch.Tensor | None = None  # rank 0's CPU generator (dropout)
    world_size: int = 1  # processes that trained the run to here
    rank_rng: list[torch.Tensor] | None = None  # each rank's CPU generator (several processes)
    cuda_rng: list[torch.Tensor] | None = None  # each rank's CUDA generator (dropout on CUDA)

    @property
    def evaluated(self) -> bool:
        return math.isfinite(self.best_val_loss)


def to_checkpoint(state: TrainingState, model: dict, optimizer: dict) -> dict[str, Any]:
    """The dict `checkpoint.pt` holds: the weights, the optimizer's state and the training state."""
    checkpoint = {
        "model": model, "optimizer": optimizer, "step": state.step, "best_val_loss": state.best_val_loss,
        "best_val_bpb": state.best_val_bpb, "bad_evals": state.bad_evals, "elapsed": state.elapsed,
        "batch_rng": state.batch_rng, "torch_rng": state.torch_rng, "world_size": state.world_size,
    }
    if state.cuda_rng is not None:
        checkpoint["cuda_rng"] = state.cuda_rng
    if state.rank_rng is not None:
        checkpoint["rank_rng"] = state.rank_rng
    return checkpoint


def from_checkpoint(checkpoint: dict[str, Any]) -> TrainingState:
    """The training state a checkpoint holds (one `checkpoint_problem` found sound)."""
    return TrainingState(
        step=int(checkpoint["step"]), best_val_loss=float(checkpoint["best_val_loss"]),
        best_val_bpb=checkpoint.get("best_val_bpb"), bad_evals=int(checkpoint["bad_evals"]),
        elapsed=float(checkpoint["elapsed"]), batch_rng=checkpoint["batch_rng"], torch_rng=checkpoint["torch_rng"],
        world_size=int(checkpoint.get("world_size", 1)), rank_rng=checkpoint.get("rank_rng"),
        cuda_rng=checkpoint.get("cuda_rng"),
    )


def load_checkpoint(run: Run) -> dict[str, Any]:
    """The run's checkpoint as a dict, loaded safely (weights_only) on the CPU."""
    path = run.file(CHECKPOINT)
    if not path.exists():
        raise InputError(f"run {run.id} has no checkpoint to resume from")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DamagedRun(f"run {run.id} is damaged: checkpoint.pt cannot be loaded safely "
                         f"({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict):
        raise DamagedRun(f"run {run.id} is damaged: checkpoint.pt holds no training state")
    return checkpoint


def checkpoint_problem(checkpoint: dict, config: Config, vocab_size: int) -> str | None:
    """Why a loaded checkpoint cannot resume a model with these settings, or None (checked on shapes alone,
    on the meta device: nothing is allocated)."""
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        return f"checkpoint.pt is incomplete (no {', '.join(missing)})"
    saved = checkpoint["model"]
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        return "checkpoint.pt holds no model weights"
    with torch.device("meta"):
        expected = GPT(ModelConfig.from_config(config, vocab_size)).state_dict()
    odd = sorted(set(saved) ^ set(expected)) or [k for k in expected if saved[k].shape != expected[k].shape]
    if odd:
        return f"checkpoint.pt does not match config.json ({odd[0]} differs, {len(odd)} in all)"
    return None
