"""Fine-tuning: a new run that starts from another run's best weights and tokenizer, on another corpus.

The source run fixes every setting that gives its weights their shapes or their meaning (`KEPT_SETTINGS`: those
declared `shape` or `tokenizer` in `SETTINGS`); the others (dropout, optimisation, schedule, evaluation, hardware)
belong to the new run, whose optimizer and schedule start afresh at step 0. Nothing here imports torch: the command line
and the TUI check a request with it before anything heavy loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gptui.core.config import Config, ConfigError, apply_overrides, check, config_from_dict, settings_in
from gptui.core.errors import DamagedRun, InputError
from gptui.core.runs import TOKENIZER, WEIGHTS, Run, require_sound

KEPT_SETTINGS = settings_in("shape", "tokenizer")  # what the source run's weights and tokenizer.json fix


@dataclass(frozen=True)
class FineTuneSource:
    """A run checked to fine-tune from: its settings, its tokenizer.json text, and where its best weights are."""

    run: Run
    config: Config
    tokenizer_json: str
    step: int | None
    best_val_loss: float | None

    @property
    def weights(self):
        return self.run.file(WEIGHTS)

    def describe(self) -> str:
        """'run ID's best weights (step N, val loss L)', for the new run's log."""
        facts = ([f"step {self.step:,}"] if self.step else []) + (
            [f"val loss {self.best_val_loss:.4f}"] if self.best_val_loss is not None else [])
        return f"run {self.run.id}'s best weights" + (f" ({', '.join(facts)})" if facts else "")


def fine_tune_source(run: Run) -> FineTuneSource:
    """Check that `run` can be fine-tuned from (readable settings and tokenizer, saved weights) and read what a
    fine-tune takes from it. Raises InputError (no weights yet) or DamagedRun."""
    require_sound(run)
    if not run.file(WEIGHTS).is_file():
        raise InputError(f"run {run.id} has no saved weights to fine-tune from (it never trained a step)")
    try:
        settings = run.read_config()["settings"]
        tokenizer_json = run.file(TOKENIZER).read_text(encoding="utf-8")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedRun(f"run {run.id} could not be read: {str(exc).splitlines()[0][:200]}") from None
    try:
        config = config_from_dict(settings)
    except ConfigError as exc:
        raise DamagedRun(f"run {run.id} has invalid settings: {exc}") from None
    state = run.read_state()
    step = state.get("step")
    best = state.get("best_val_loss")
    return FineTuneSource(run, config, tokenizer_json, step if isinstance(step, int) else None,
                          best if isinstance(best, (int, float)) else None)


def shape_changes(config: Config, source: Config) -> list[str]:
    """The model-shape settings in which `config` differs from the source run's."""
    return [name for name in KEPT_SETTINGS if getattr(config, name) != getattr(source, name)]


def refuse_shape_changes(config: Config, source: FineTuneSource) -> None:
    changed = shape_changes(config, source.config)
    if changed:
        was = ", ".join(f"{name}={_show(getattr(source.config, name))}" for name in changed)
        raise InputError(f"cannot change {', '.join(changed)} when fine-tuning run {source.run.id}: the model's "
                         f"shape and tokenizer come from it ({was})")


def fine_tune_config(source: FineTuneSource, base: Config | None = None,
                     overrides: dict[str, Any] | None = None) -> Config:
    """The settings of a fine-tune of `source`: `base`'s (a preset's; the source run's own when None) with the
    source's model shape, then `overrides` (`--set`), of which any that changes the shape is refused by name."""
    start = source.config if base is None else dataclasses.replace(
        base, **{name: getattr(source.config, name) for name in KEPT_SETTINGS})
    config = apply_overrides(start, overrides or {})
    refuse_shape_changes(config, source)
    return check(config)


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
