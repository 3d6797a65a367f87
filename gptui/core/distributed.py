"""Training on several processes (torchrun, DistributedDataParallel) behind one small object.

The trainer talks to a `Dist`: which rank this process is, whether it is the main rank (the only one that
writes the run folder), and a handful of collective operations: average or add a number, agree on a few flags
(stop, report, checkpoint), hand the main rank's result to every rank, wrap the model in DDP and skip the
gradient sync on accumulation micro-steps. `Dist` itself is the single process, where each operation is a
no-op, so a run on one process pays nothing for any of this; `ProcessGroupDist` is a process started by
torchrun. Control messages (flags, numbers, small objects) travel on CPU tensors through gloo even when NCCL
carries the gradients, so agreeing on a stop never waits for the GPU.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import torch

from gptui.core.errors import GptuiError, InputError

T = TypeVar("T")

# How long a collective may wait for the other ranks: long enough for rank 0 to tokenize a large corpus while
# the others wait, short enough that a rank that hangs (rather than dies) does not hold the job for hours.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class PeerLost(GptuiError):
    """A collective failed: another rank died or its machine became unreachable."""


class PeerFailed(GptuiError):
    """The main rank failed in a step every rank waits on; this rank stops with the same exit status (the main
    rank reports why)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def launched_by_torchrun() -> bool:
    """True inside a process torchrun started (it sets RANK, WORLD_SIZE and LOCAL_RANK)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


class Dist:
    """One process on its own: rank 0 of 1, and every collective a no-op."""

    rank = 0
    local_rank = 0
    world_size = 1
    backend = "none"
    device = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether this is a process group (even of one process), i.e. whether the model is wrapped in DDP."""
        return False

    def describe(self) -> str:
        return "1 process"

    def barrier(self) -> None:
        pass

    def mean(self, value: float) -> float:
        return value

    def sum(self, value: float) -> float:
        return value

    def any_true(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, true when it is true on any rank (one collective for all of them)."""
        return tuple(bool(f) for f in flags)

    def from_main(self, work: Callable[[], T]) -> T:
        """Run `work` on the main rank only and give its (picklable) result to every rank. If it raises, the
        main rank re-raises and the others raise PeerFailed, so no rank is left waiting for the rest."""
        return work()

    def gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order (a small picklable object)."""
        return [value]

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def no_sync(self, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        """Inside it, backward() accumulates gradients locally without averaging them over the ranks."""
        return contextlib.nullcontext()

    def explain(self, exc: BaseException) -> str | None:
        """A one-line reason when `exc` comes from losing another rank, else None."""
        return None

    def close(self) -> None:
        pass


class ProcessGroupDist(Dist):
    """A process of a torchrun job: gloo on CPU, NCCL for the gradients on CUDA (one GPU per local rank)."""

    def __init__(self, rank: int, local_rank: int, world_size: int, device: str):
        import torch.distributed as dist

        self.rank, self.local_rank, self.world_size, self.device = rank, local_rank, world_size, device
        self.backend = "nccl" if device == "cuda" else "gloo"
        dist.init_process_group(self.backend, timeout=COLLECTIVE_TIMEOUT)
        # flags, numbers and objects go through gloo on the CPU: they never wait for the GPU's queue
        self._control = dist.new_group(backend="gloo") if self.backend == "nccl" else dist.group.WORLD

    @property
    def distributed(self) -> bool:
        return True

    def describe(self) -> str:
        return f"{self.world_size} process{'es' if self.world_size > 1 else ''} ({self.backend})"

    @contextlib.contextmanager
    def _collective(self) -> Iterator[None]:
        try:
            yield
        except GptuiError:
            raise
        except Exception as exc:
            raise PeerLost(self.explain(exc) or f"lost contact with another rank ({_first_line(exc)})") from None

    def _reduce(self, values: list[float], op: str) -> list[float]:
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64)
        with self._collective():
            dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op), group=self._control)
        return tensor.tolist()

    def barrier(self) -> None:
        self._reduce([0.0], "SUM")

    def mean(self, value: float) -> float:
        return self._reduce([value], "SUM")[0] / self.world_size

    def sum(self, value: float) -> float:
        return self._reduce([value], "SUM")[0]

    def any_true(self, *flags: bool) -> tuple[bool, ...]:
        return tuple(v > 0 for v in self._reduce([1.0 if f else 0.0 for f in flags], "MAX"))

    def _broadcast(self, obj: Any) -> Any:
        import torch.distributed as dist

        box = [obj]
        with self._collective():
            dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    def from_main(self, work: Callable[[], T]) -> T:
        if self.is_main:
            try:
                result = work()
            except BaseException as exc:
                message = str(exc) if isinstance(exc, GptuiError) else f"{type(exc).__name__}: {_first_line(exc)}"
                with contextlib.suppress(GptuiError):
                    self._broadcast(("failed", message, getattr(exc, "exit_code", 1)))
                raise
            self._broadcast(("ok", result))
            return result
        outcome = self._broadcast(None)
        if outcome[0] == "failed":
            raise PeerFailed(f"rank 0 failed: {outcome[1]}", outcome[2])
        return outcome[1]

    def gather(self, value: T) -> list[T]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        with self._collective():
            dist.all_gather_object(out, value, group=self._control)
        return out

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        # the model's buffers are constants (the causal mask), so they need no broadcast every forward
        quiet = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
            DistributedDataParallel.__init__).parameters else "broadcast_buffers"
        ids = [self.local_rank] if self.device == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, **{quiet: False})

    def no_sync(self, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        return model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()

    def explain(self, exc: BaseException) -> str | None:
        import torch.distributed as dist

        text = str(exc)
        signs = ("Connection closed by peer", "Connection reset", "Broken pipe", "NCCL", "gloo", "Timed out",
                 "timed out", "ProcessGroup")
        if isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and any(s in text for s in signs)):
            return f"lost contact with another rank ({_first_line(exc)})"
        return None

    def close(self) -> None:
        """Leave the group after a clean finish: the ranks meet at a barrier first, so none tears its connections
        down while another still talks to it."""
        import torch.distributed as dist

        if dist.is_initialized():
            with contextlib.suppress(Exception):
                self.barrier()
                dist.destroy_process_group()


def from_env(requested_device: str) -> Dist:
    """The process group torchrun set up for this process (RANK, LOCAL_RANK, WORLD_SIZE in the environment);
    a plain `Dist` outside torchrun. One GPU per local rank on CUDA; gloo on the CPU."""
    if not launched_by_torchrun():
        return Dist()
    from gptui.core.device import pick_device

    try:
        rank, world, local_rank = (int(os.environ[name]) for name in TORCHRUN_VARIABLES)
    except ValueError:
        raise InputError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers") from None
    device = pick_device(requested_device)
    if device == "mps":
        raise InputError("training on several processes needs CUDA or the CPU, not MPS (use device=cpu)")
    if device == "cuda":
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:
            raise InputError(f"local rank {local_rank} has no GPU of its own: this machine has {gpus} "
                             f"(use at most {gpus} processes per machine, or device=cpu)")
        torch.cuda.set_device(local_rank)
    return ProcessGroupDist(rank, local_rank, world, device)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    # gloo prefixes its messages with the source file and follows them with advice; the reader wants the words
    if line.startswith("[") and "] " in line:
        line = line.split("] ", 1)[1]
    return line.split(". ", 1)[0].rstrip(".")[:200]


def torchrun_rank() -> int:
    """This process's rank in a torchrun job (0 outside one)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def rank_prefix() -> str:
    """'rank N: ' inside a torchrun job (for messages a rank prints itself), '' otherwise."""
    return f"rank {os.environ['RANK']}: " if launched_by_torchrun() and os.environ.get("WORLD_SIZE") != "1" else ""

