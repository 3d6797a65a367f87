"""Runs on disk: one folder per run under models/, listed, resolved by prefix, renamed, deleted.

A run folder holds config.json, tokenizer.json, model.safetensors (best weights), checkpoint.pt (exact resume),
metrics.jsonl, train.log, state.json and generations/. Every file is written atomically (see fsio).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import struct
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gptui.core.claim import claimed
from gptui.core.errors import DamagedRun, GptuiError, InputError, RunNotFound
from gptui.core.fsio import (
    append_line,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_jsonl,
)
from gptui.core.workspace import Workspace

CONFIG = "config.json"
STATE = "state.json"
TOKENIZER = "tokenizer.json"
WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
LOG = "train.log"
GENERATIONS = "generations"

MAX_NAME = 64


def slugify(name: str, limit: int = MAX_NAME) -> str:
    """A safe folder name: letters, digits, '.', '_' and '-' only; never '.', '..' or hidden; at most `limit`."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("\0", ""))
    slug = re.sub(r"-{2,}", "-", slug).strip("-.")[:limit].strip("-.")
    return slug or "run"


def human_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def log_lines(line: str, when: float | None) -> list[str]:
    """A log line as train.log holds it: each of its lines stamped with `when` (seconds since the epoch, local
    time; None: no stamp), an empty one left empty."""
    stamp = "" if when is None else datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M:%S  ")
    return [f"{stamp}{part}" if part else "" for part in line.splitlines() or [""]]


class Run:
    """One run folder and the small API to read and write its files."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def write_file(self, name: str, write: Callable[[Path], None]) -> None:
        """Write one of the run's files atomically: `write(tmp_path)`, then rename (weights, checkpoint)."""
        atomic_write(self.file(name), write)

    # config and state
    def read_config(self) -> dict[str, Any]:
        return read_json(self.file(CONFIG))

    def write_config(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.file(CONFIG), data)

    def update_config(self, **changes: Any) -> None:
        self.write_config({**self.read_config(), **changes})

    def read_state(self) -> dict[str, Any]:
        try:
            data = read_json(self.file(STATE))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def write_state(self, **changes: Any) -> dict[str, Any]:
        state = self.read_state()
        state.update(changes)
        state["updated"] = datetime.now().isoformat(timespec="seconds")
        atomic_write_json(self.file(STATE), state)
        return state

    # metrics and log
    def append_metric(self, record: dict[str, Any]) -> None:
        append_line(self.file(METRICS), json.dumps(record, separators=(",", ":")))

    def metrics(self) -> list[dict[str, Any]]:
        """Every record with a whole-number step; a torn or garbled line (or a record without a step) is
        skipped, so no reader meets one."""
        return [m for m in read_jsonl(self.file(METRICS))
                if isinstance(m.get("step"), int) and not isinstance(m.get("step"), bool)]

    def truncate_metrics(self, max_step: int) -> None:
        """Drop records past `max_step` (written after the last checkpoint) and any torn or garbled line."""
        kept = [m for m in self.metrics() if m["step"] <= max_step]
        atomic_write_text(self.file(METRICS), "".join(json.dumps(m, separators=(",", ":")) + "\n" for m in kept))

    def log(self, line: str = "") -> None:
        for text in log_lines(line, time.time()):
            append_line(self.file(LOG), text)

    def read_log(self, max_bytes: int = 200_000) -> str:
        try:
            with open(self.file(LOG), "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - max_bytes))
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    # generations
    def generations_problem(self) -> str | None:
        """Why a generation cannot be saved in this run (checked before generating, so no text is lost)."""
        folder = self.file(GENERATIONS)
        if folder.exists() and not folder.is_dir():
            return f"cannot save in run {self.id}: {folder} is not a folder"
        return None

    def save_generation(self, header: dict[str, Any], text: str, kind: str = "generation") -> Path:
        problem = self.generations_problem()
        if problem:
            raise GptuiError(problem)
        folder = self.file(GENERATIONS)
        folder.mkdir(exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = folder / f"{stamp}-{kind}.txt"
        n = 2
        while path.exists():
            path = folder / f"{stamp}-{kind}-{n}.txt"
            n += 1
        head = "\n".join(f"# {k}: {v}" for k, v in header.items())
        atomic_write_text(path, f"{head}\n\n{text}\n")
        return path


class NullRun(Run):
    """The run as a rank other than the main one of a distributed job sees it: the same id and paths, and
    writes that go nowhere, because rank 0 alone owns the run folder."""

    def write_file(self, name: str, write: Callable[[Path], None]) -> None:
        pass

    def write_config(self, data: dict[str, Any]) -> None:
        pass

    def update_config(self, **changes: Any) -> None:
        pass

    def write_state(self, **changes: Any) -> dict[str, Any]:
        return {}

    def append_metric(self, record: dict[str, Any]) -> None:
        pass

    def truncate_metrics(self, max_step: int) -> None:
        pass

    def log(self, line: str = "") -> None:
        pass

    def save_generation(self, header: dict[str, Any], text: str, kind: str = "generation") -> Path:
        raise InputError("only the main process writes to the run folder")


@dataclass
class RunInfo:
    id: str
    corpus: str
    params: int | None
    tokenizer: str
    steps: int
    best_val_loss: float | None
    val_bpb: float | None
    status: str
    created: str
    duration: float
    damaged: str | None
    path: str
    world_size: int = 1  # processes that trained it (config.json's world_size; 1 for older runs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def has_weights(self) -> bool:
        """Whether evaluated weights are saved (only then can the run be loaded for generation)."""
        return (Path(self.path) / WEIGHTS).is_file()


class RunStore:
    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.root = workspace.models

    def create(self, corpus: str, params: int, name: str | None = None) -> Run:
        """Make a new, uniquely named run folder; two processes starting at once get two folders."""
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = slugify(f"{stamp}-{name}" if name else f"{stamp}-{corpus}-{human_count(params)}")
        for n in range(1, 1000):
            candidate = self.root / (base if n == 1 else f"{base}-{n}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return Run(candidate)
        raise InputError(f"could not find a free run name for {base!r}")

    def runs(self) -> list[Run]:
        if not self.root.is_dir():
            return []
        return [Run(p) for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith(".")]

    def resolve(self, ref: str) -> Run:
        """A run by id or unique id prefix."""
        ref = ref.strip().rstrip("/")
        if ref.startswith(str(self.root)):
            ref = Path(ref).name
        if not ref or "/" in ref or ref in (".", ".."):
            raise RunNotFound(f"no run {ref!r} in {self.root}")
        runs = self.runs()
        exact = [r for r in runs if r.id == ref]
        if exact:
            return exact[0]
        matches = [r for r in runs if r.id.startswith(ref)]
        if not matches:
            raise RunNotFound(f"no run {ref!r} in {self.root} (see `gptui runs`)")
        if len(matches) > 1:
            shown = ", ".join(r.id for r in matches[:5])
            raise RunNotFound(f"{ref!r} matches {len(matches)} runs ({shown}); give more of the id")
        return matches[0]

    def newest(self) -> Run | None:
        infos = [i for i in self.list() if not i.damaged and i.has_weights]
        if not infos:
            return None
        return self.resolve(max(infos, key=lambda i: i.created).id)

    def rename(self, run: Run, new_name: str) -> Run:
        slug = slugify(new_name)
        target = self.root / slug
        if target.exists():
            raise InputError(f"a run named {slug!r} already exists")
        if _training(run):
            raise InputError(f"run {run.id} is training; stop it before renaming")
        os.rename(run.path, target)
        return Run(target)

    def delete(self, run: Run) -> None:
        if run.path.resolve().parent != self.root.resolve():
            raise InputError(f"{run.path} is not a run folder of this workspace")
        if _training(run):
            raise InputError(f"run {run.id} is training; stop it before deleting")
        shutil.rmtree(run.path)

    def list(self) -> list[RunInfo]:
        return [self.info(r) for r in self.runs()]

    def info(self, run: Run) -> RunInfo:
        state = run.read_state()
        damaged = check_run(run)
        try:
            config = run.read_config()
            if not isinstance(config, dict):
                config = {}
        except (OSError, ValueError):
            config = {}
        settings = config.get("settings", {}) if isinstance(config.get("settings"), dict) else {}
        status = str(state.get("status", "unknown"))
        if status == "running" and not pid_alive(state):
            status = "interrupted"
        if damaged:
            status = "damaged"
        tok = settings.get("tokenizer", "?")
        if tok == "bpe":
            tok = f"bpe{config.get('vocab_size', settings.get('vocab_size', ''))}"
        return RunInfo(
            id=run.id,
            corpus=str(config.get("corpus", "?")),
            params=_number(config.get("params"), int),
            tokenizer=str(tok),
            steps=_number(state.get("step"), int) or 0,
            best_val_loss=_number(state.get("best_val_loss"), float),
            val_bpb=_number(state.get("best_val_bpb"), float),
            status=status,
            created=str(config.get("created", state.get("updated", ""))),
            duration=_number(state.get("duration"), float) or 0.0,
            damaged=damaged,
            path=str(run.path),
            world_size=_world_size(config),
        )


def _number(value: Any, kind: type) -> Any:
    """`value` as `kind` when it is a number (a damaged state.json may hold anything), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return kind(value)
    return None


def _training(run: Run) -> bool:
    state = run.read_state()
    return claimed(run.path) or (state.get("status") == "running" and pid_alive(state))


def _world_size(config: dict[str, Any]) -> int:
    value = config.get("world_size", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def pid_alive(state: dict[str, Any]) -> bool:
    pid = state.get("pid")
    if not isinstance(pid, int) or state.get("host") not in (None, socket.gethostname()):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie or a reused pid would pass; a fresh heartbeat tells a live trainer apart
    updated = state.get("heartbeat")
    return not isinstance(updated, (int, float)) or time.time() - updated < 600


def safetensors_header(path: Path) -> dict[str, Any]:
    """Parse a safetensors header and check the file holds all the data it announces."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError("truncated weights file")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000 or 8 + n > size:
            raise ValueError("weights file has a broken header")
        header = json.loads(f.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ValueError(f"weights file is truncated ({size} of {8 + n + end} bytes)")
    return header


def tokenizer_vocab_size(path: Path) -> int:
    data = read_json(path)
    if data.get("type") == "gptui-char":
        return len(data["chars"]) + (data.get("eot") is True)  # the end-of-text id comes after the characters
    return len(data["model"]["vocab"]) + len(data.get("added_tokens") or [])


def check_run(run: Run) -> str | None:
    """Why this run cannot be used, or None: the one damage check every command makes (generate, export,
    resume, fine-tune, `runs`), so each names the same damage in the same words. A run that a live process is
    writing is not judged (its files are still appearing)."""
    state = run.read_state()
    if claimed(run.path) or (state.get("status") == "running" and pid_alive(state)):
        return None  # still being written by its trainer
    return check_files(run)


def check_files(run: Run, *, rebuildable: bool = True) -> str | None:
    """check_run's judgement without asking who writes the run (its writer asks it of its own run).

    Cheap and torch-free: it reads the small files and the weights' header, never the weights. With
    `rebuildable` False, state.json and model.safetensors are left out: a resume rebuilds them from a sound
    checkpoint. metrics.jsonl is not judged: a torn or garbled line in it is skipped wherever it is read."""
    from gptui.core.config import ConfigError, config_from_dict, estimate_params

    try:
        config = run.read_config()
    except FileNotFoundError:
        return "config.json is missing"
    except (OSError, ValueError):
        return "config.json is not valid JSON"
    if not isinstance(config, dict) or not isinstance(config.get("settings"), dict):
        return "config.json has no settings"
    try:
        settings = config_from_dict(config["settings"])
    except ConfigError as exc:
        return f"config.json has invalid settings: {exc}"
    if rebuildable and run.file(STATE).exists() and not state_readable(run):
        return "state.json is unreadable"
    if not run.file(TOKENIZER).exists():
        return "tokenizer.json is missing"
    try:
        vocab = tokenizer_vocab_size(run.file(TOKENIZER))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "tokenizer.json is unreadable"
    if run.file(CHECKPOINT).exists() and not zipfile.is_zipfile(run.file(CHECKPOINT)):
        return "checkpoint.pt is unreadable"
    if not rebuildable:
        return None
    if not run.file(WEIGHTS).exists():
        if run.read_state().get("best_val_loss") is None:
            return None  # not evaluated yet (or never trained): no weights are expected
        return "model.safetensors is missing"
    return weights_problem(run, settings, vocab, estimate_params(settings, vocab))


def weights_problem(run: Run, settings: Any, vocab: int, params: int) -> str | None:
    """Why model.safetensors cannot be the weights of a model with these settings and vocabulary, or None."""
    try:
        header = safetensors_header(run.file(WEIGHTS))
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        emb = tensors.get("lm_head.weight") or tensors.get("transformer.wte.weight")
        saved = sum(math.prod(v["shape"]) for v in tensors.values())
        shape = tuple(emb["shape"]) if emb else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"model.safetensors is unreadable: {exc}"
    if shape is None:
        return "model.safetensors has no embedding matrix"
    if shape[0] != vocab:
        return f"tokenizer has {vocab} tokens but the model expects {shape[0]}"
    if len(shape) != 2 or shape[1] != settings.n_embd or saved != params:
        return (f"model.safetensors does not match config.json: it holds {saved:,} weights, "
                f"its settings make {params:,}")
    return None


def resume_mends(run: Run) -> bool:
    """Whether resuming this damaged run would mend it: only state.json or the weights are damaged, and a
    checkpoint to rebuild them from is there (the resume still checks that checkpoint before it trusts it)."""
    return run.file(CHECKPOINT).is_file() and check_files(run, rebuildable=False) is None


def require_sound(run: Run) -> None:
    """Raise DamagedRun (exit 1) naming the damage, in the words every command uses."""
    problem = check_run(run)
    if problem:
        raise DamagedRun(f"run {run.id} is damaged: {problem}")


def load_error(exc: BaseException) -> str:
    """A loader's exception as one line: torch's "Error(s) in loading state_dict for GPT:" says nothing before
    its colon, so the mismatch it lists after it is what is shown."""
    text = " ".join(str(exc).split())
    if text.startswith("Error(s) in loading state_dict"):
        return f"{WEIGHTS} does not match {CONFIG}: {text.partition(': ')[2][:200]}"
    return text[:200] or type(exc).__name__


def state_readable(run: Run) -> bool:
    """Whether state.json is an object whose numbers are numbers (what `runs` and a resume read from it)."""
    try:
        state = read_json(run.file(STATE))
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict):
        return False
    numbers = {"step": (int,), "best_val_loss": (int, float), "best_val_bpb": (int, float),
               "duration": (int, float)}
    return all(state.get(key) is None or (isinstance(state[key], kinds) and not isinstance(state[key], bool))
               for key, kinds in numbers.items())
