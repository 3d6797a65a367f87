"""Experiment trackers: a run also logged to TensorBoard and Weights & Biases (`--set trackers=...`).

Each tracker is a `MetricLogger` (torchtune's protocol: log, log_dict and close, with text and the run's settings
besides), and a `TrackerListener` turns the trainer's events into its calls, so the trainer never knows which
trackers listen. They run on the main process only, and open when the run starts (a `Started` event), so a
tracker that cannot open is a listener that raises: reported once in the run's log while training goes on.

TensorBoard writes event files into the run folder's `tensorboard/`; W&B writes its run into the run folder's
`wandb/` (or `$WANDB_DIR`), offline unless the user has logged in (`wandb login`, `WANDB_API_KEY`) or chose a mode
with `WANDB_MODE`, so it never prompts and never reaches the network on its own. A resumed gptui run continues the
same W&B run (its id is kept in `config.json`) and TensorBoard drops what the old session logged past the resumed
step, as an uninterrupted run would show it.
"""

from __future__ import annotations

import importlib.util
import math
import netrc
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from gptui.core import events as ev
from gptui.core.errors import InputError
from gptui.core.runs import Run

EXTRA = "track"  # pyproject's optional dependencies that bring both libraries
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}  # tracker -> the package it imports
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"  # the folder wandb itself makes under the directory it is given
EVAL_METRICS = ("eval/val_loss", "eval/val_bpb")  # TensorBoard's hparams view ranks runs by these


def requested(trackers: str) -> list[str]:
    """The trackers a `trackers` setting names ("none", "tensorboard", "tensorboard,wandb"...)."""
    return [name for name in trackers.split(",") if name in PACKAGES]


def check_available(trackers: str) -> None:
    """Refuse, in one line, trackers whose library is missing or a W&B that would ask to log in: called before
    a run folder exists, so a refused request leaves nothing behind."""
    names = requested(trackers)
    missing = [PACKAGES[n] for n in names if importlib.util.find_spec(PACKAGES[n]) is None]
    if missing:
        raise InputError(f"trackers={trackers} needs {' and '.join(missing)}, which is not installed: "
                         f"pip install 'gptui[{EXTRA}]' (or pip install -e '.[{EXTRA}]' in a checkout)")
    if "wandb" in names and wandb_mode() == "online" and not wandb_logged_in():
        raise InputError("WANDB_MODE=online but W&B has no credentials here: run `wandb login` or set "
                         "WANDB_API_KEY (or leave WANDB_MODE unset to log offline)")


def wandb_logged_in() -> bool:
    """Whether W&B finds credentials without asking: the environment or a netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """The user's `WANDB_MODE` when set; else online when logged in and offline otherwise."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode:
        return "offline" if mode == "dryrun" else mode
    return "online" if wandb_logged_in() else "offline"


class MetricLogger(Protocol):
    def log(self, name: str, value: float, step: int) -> None: ...

    def log_dict(self, values: Mapping[str, float], step: int) -> None: ...

    def log_text(self, name: str, text: str, step: int) -> None: ...

    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def close(self, failed: bool = False) -> None: ...


class TensorBoardLogger:
    """Event files in `<run>/tensorboard/`, read by `tensorboard --logdir models`."""

    def __init__(self, log_dir: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # on a resume, readers drop what the previous session logged after its checkpoint (a killed run's last
        # steps), which this session logs again
        self.writer = SummaryWriter(str(log_dir), purge_step=start_step + 1 if start_step else None, flush_secs=10)

    def log(self, name: str, value: float, step: int) -> None:
        self.writer.add_scalar(name, value, step)

    def log_dict(self, values: Mapping[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def log_text(self, name: str, text: str, step: int) -> None:
        # markdown: indented four spaces, the sample shows as it was generated (line breaks, no formatting)
        self.writer.add_text(name, "\n".join("    " + line for line in text.splitlines()), step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in config.items()}
        # written into this run's own event file (add_hparams would open a second run beside it)
        for summary in hparams(values, dict.fromkeys(EVAL_METRICS, math.nan)):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("config", "\n".join(["| setting | value |", "|---|---|"]
                                                 + [f"| {k} | {v} |" for k, v in values.items()]), 0)

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class WandBLogger:
    """A W&B run named after the gptui run, its id kept in `config.json` so a resume (even after a rename)
    continues it; offline unless logged in (see `wandb_mode`)."""

    def __init__(self, run: Run, project: str, log: Callable[[str], None]):
        import wandb

        self.wandb = wandb
        config = run.read_config()
        run_id = config.get("wandb_run_id") or run.id  # a run id is letters, digits, '.', '_' and '-' already
        if "wandb_run_id" not in config:
            run.update_config(wandb_run_id=run_id)
        directory = os.environ.get("WANDB_DIR") or str(run.path)
        self.run = wandb.init(
            project=project, id=run_id, name=run.id, dir=directory, resume="allow", mode=wandb_mode(),
            reinit="create_new",  # several trainings in one TUI session are several runs
            # never wrap our stdout/stderr (the progress bar, the TUI) nor print to them
            settings=wandb.Settings(console="off", silent=True, save_code=False, disable_git=True),
        )
        self._texts: dict[str, list[list[Any]]] = {}
        where = Path(self.run.dir).parent  # the run's own folder, above its files/
        mode = wandb_mode()
        log(f"W&B: {mode} run {run_id} in project {project}, files in {where}"
            + ("; `wandb sync` that folder uploads it" if mode == "offline" else ""))

    def log(self, name: str, value: float, step: int) -> None:
        self.run.log({name: value}, step=step)

    def log_dict(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def log_text(self, name: str, text: str, step: int) -> None:
        # a table of every text so far (W&B tables are immutable: each log is the whole table)
        rows = self._texts.setdefault(name, [])
        rows.append([step, text])
        self.run.log({name: self.wandb.Table(columns=["step", "text"], data=rows)}, step=step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)  # a resume may change the schedule

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)
        self.wandb.teardown()  # ends wandb's service process now: a torchrun rank leaves through os._exit


class TrackerListener:
    """One tracker as a listener on the trainer's events: opens on `Started`, closes on `Finished`."""

    def __init__(self, name: str, opener: Callable[[ev.Started], MetricLogger]):
        self.name = name
        self.opener = opener
        self.logger: MetricLogger | None = None

    def __repr__(self) -> str:
        return f"{self.name} tracker"

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.Started):
            self.logger = self.opener(event)
            self.logger.log_config(event.settings | {"run_id": event.run_id, "params": event.params,
                                                     "device": event.device, "dtype": event.dtype,
                                                     "world_size": event.world_size})
            return
        logger = self.logger
        if logger is None:
            return
        if isinstance(event, ev.Step):
            values = {"train/loss": event.loss, "train/lr": event.lr, "train/tokens_per_sec": event.tokens_per_sec}
            values |= memory_metrics(event.memory)
            logger.log_dict(values, event.step)
        elif isinstance(event, ev.Eval):
            logger.log_dict({"eval/train_loss": event.train_loss, "eval/val_loss": event.val_loss,
                             "eval/val_bpb": event.val_bpb}, event.step)
        elif isinstance(event, ev.Sample):
            logger.log_text("samples", event.text, event.step)
        elif isinstance(event, ev.Finished):
            self.close(failed=event.status == "failed")

    def close(self, failed: bool = False) -> None:
        """Flush and close; safe to call twice (the trainer also closes on its way out of any failure)."""
        logger, self.logger = self.logger, None
        if logger is not None:
            logger.close(failed)


def memory_metrics(memory: Mapping[str, Any]) -> dict[str, float]:
    """A Step's memory reading in MiB: GPU allocated, reserved and peak on CUDA; process RSS and peak otherwise."""
    keys = ("allocated", "reserved", "peak") if memory.get("kind") == "cuda" else ("allocated", "peak")
    names = {"allocated": "rss"} if memory.get("kind") != "cuda" else {}
    return {f"memory/{names.get(k, k)}_mib": memory[k] / 2**20 for k in keys if isinstance(memory.get(k), int)}


def open_trackers(trackers: str, project: str, run: Run, log: Callable[[str], None]) -> list[TrackerListener]:
    """The listeners for the trackers a run asked for (none for "none"); each opens when the run starts."""
    openers: dict[str, Callable[[ev.Started], MetricLogger]] = {
        "tensorboard": lambda e: TensorBoardLogger(run.file(TENSORBOARD_DIR), e.start_step),
        "wandb": lambda e: WandBLogger(run, project, log),
    }
    return [TrackerListener(name, openers[name]) for name in requested(trackers)]
