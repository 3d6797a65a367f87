"""What a training job tells its listeners: the one typed stream that the run folder's writers, the CLI, the TUI
and the trackers all consume.

Every event but `Prepare` (the data's progress, before the run folder exists) is also a record of the run's
`metrics.jsonl`, one JSON object a line, through the one codec below (`to_record`, `from_record`): a record's
`type` names its event, and every record has a whole-number `step`, so a resume can drop the records written
after its checkpoint. A log line or a sample has no step of its own: it takes the step the run had reached.
"""

from __future__ import annotations

import dataclasses
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


LOG_KINDS = ("info", "setting", "evaluation", "sample", "warning", "finish", "error")


@dataclass(frozen=True)
class Log:
    """One line (or a sample's several) of the run's log. `kind` says what it is without reading its wording:
    info, setting (the header's list of settings), evaluation, sample, warning, finish or error."""

    line: str
    kind: str = "info"


@dataclass(frozen=True)
class Saved:
    """A checkpoint was written: checkpoint.pt holds this step (the run folder's state.json follows it)."""

    step: int
    status: str  # running, completed or stopped
    best_val_loss: float | None
    best_val_bpb: float | None
    elapsed: float


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


Event = Prepare | Started | Step | Eval | Sample | Log | Saved | Finished


# --- one codec: event <-> metrics.jsonl record -------------------------------------------------------------------

RECORD_TYPES: dict[type, str] = {Prepare: "prepare", Started: "start", Step: "train", Eval: "eval", Sample: "sample",
                                 Log: "log", Saved: "checkpoint", Finished: "finish"}
_EVENT_TYPES = {name: cls for cls, name in RECORD_TYPES.items()}
LEGACY_TYPES = ("train", "eval")  # the only records of run folders written before log lines and samples were records


def to_record(event: Event, step: int = 0) -> dict[str, Any]:
    """The JSON object an event is written as. Floats keep 6 decimals and a None field is left out; `step` is
    the run's step for an event without one of its own (a log line, a sample's, the data's progress)."""
    fields = {k: (round(v, 6) if isinstance(v, float) else v)
              for k, v in dataclasses.asdict(event).items() if v is not None}
    return {"type": RECORD_TYPES[type(event)], "step": step, **fields}


def from_record(record: Any, defaults: dict[str, Any] | None = None) -> Event | None:
    """The event a record holds, or None for a record that is not one (an unknown type, a missing or mistyped
    field: a torn or hand-edited line is skipped, never an error). `defaults` fill fields a record lacks (a
    follower knows the run's max_iters); a field left out because it was None reads back as None."""
    if not isinstance(record, dict):
        return None
    cls = _EVENT_TYPES.get(record.get("type"))  # type: ignore[arg-type]
    if cls is None:
        return None
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in record:
            values[f.name] = record[f.name]
        elif defaults and f.name in defaults:
            values[f.name] = defaults[f.name]
        elif str(f.type).endswith(" | None"):
            values[f.name] = None
    try:
        event = cls(**values)
    except TypeError:  # a required field missing
        return None
    return event if _well_typed(event) else None


def _well_typed(event: Event) -> bool:
    """Whether each field holds what its annotation says (JSON's numbers and strings only), so a reader never
    meets a string where it computes with a number."""
    kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict[str, Any]": (dict,)}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        annotation = str(f.type)
        optional = annotation.endswith(" | None")
        allowed = kinds.get(annotation.removesuffix(" | None"))
        if value is None and optional:
            continue
        if allowed is None or not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
            return False
    return True
