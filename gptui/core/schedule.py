"""The learning-rate schedule, and with a time budget (`max_minutes`) the step it ends at.

With a budget the cosine ends where the budget does. `BudgetFit` times the run's steps on `step_clock` and fixes
that step twice: a first fit once FIT_STEPS steps are timed (after FIT_SKIP_STEPS untimed ones: allocation, cold
caches), and a refit once a fifth of the fitted steps are done (just after the first evaluation when one comes
before half of them), from the pace of every step since the first timed one, with the evaluations, samples and
checkpoints taken out and counted on their own: an evaluation at its measured cost once one has run. The end is
recorded in config.json ("schedule") and kept by a resume, so a run's learning rates do not depend on how the
machine's load varies later.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass

from gptui.core.config import Config

FIT_SKIP_STEPS = 2
FIT_STEPS = 8
REFIT_FRACTION = 0.2  # of the first fit's steps: the refit times this many at least
BUDGET_MARGIN = 0.97  # of the time left: what is not estimated (the last checkpoint, the load varying)
step_clock = time.perf_counter  # what the fit times steps with (tests put a fake clock here)


def lr_at(step: int, config: Config) -> float:
    """Linear warm-up to lr, then cosine decay to min_lr at max_iters (with a time budget, the step fitted to it:
    the trainer replaces max_iters once it has timed the first steps)."""
    if step < config.warmup_iters:
        return config.lr * (step + 1) / (config.warmup_iters + 1)
    if step >= config.max_iters:
        return config.min_lr
    progress = (step - config.warmup_iters) / max(1, config.max_iters - config.warmup_iters)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


def estimated_eval_seconds(seconds_per_step: float, config: Config, world_size: int = 1) -> float:
    """An evaluation before one has been timed: 2 x eval_iters micro-batches forward only, each about a third of
    a training micro-step, shared out over the ranks."""
    return seconds_per_step * 2 * config.eval_iters / (3 * config.grad_accum * world_size)


def near_end_steps(config: Config) -> int:
    """How close to the end of a time-budgeted run an evaluation due at a multiple of eval_interval is left to
    the end's own: the budget, not the user, puts the end, often just past a multiple (211 with evaluations every
    70), and one evaluation for both gives its time to training steps. 0 without a budget."""
    return config.eval_interval // 10 if config.max_minutes > 0 else 0


def evaluates_at(step: int, config: Config) -> bool:
    """Whether the run evaluates after `step`: at the end (max_iters) and at every multiple of eval_interval
    but one within near_end_steps of the end."""
    if step == config.max_iters:
        return True
    return step % config.eval_interval == 0 and config.max_iters - step > near_end_steps(config)


def fit_to_budget(step: int, seconds_per_step: float, seconds_left: float, config: Config,
                  world_size: int = 1, *, eval_seconds: float | None = None, sample_seconds: float = 0.0) -> int:
    """The step a run now at `step`, taking `seconds_per_step`, should end its schedule at to use `seconds_left`
    (BUDGET_MARGIN of it): the most steps whose time, with the evaluations `evaluates_at` gives (one at the end,
    one at every multiple of eval_interval not within near_end_steps of it) and a sample at every multiple of
    sample_interval, fits. At least one more step."""
    if eval_seconds is None:
        eval_seconds = estimated_eval_seconds(seconds_per_step, config, world_size)
    budget = BUDGET_MARGIN * seconds_left
    near = near_end_steps(config)

    def cost(end: int) -> float:
        # the multiples after `step` up to end - near - 1, then the end's own
        evals = max(0, (end - near - 1) // config.eval_interval - step // config.eval_interval) + 1
        samples = end // config.sample_interval - step // config.sample_interval if config.sample_interval else 0
        return (end - step) * seconds_per_step + evals * eval_seconds + samples * sample_seconds

    low, high = step + 1, step + 2 + int(max(0.0, budget) / max(seconds_per_step, 1e-9))
    while low < high:  # the last end whose cost fits (cost grows with end)
        mid = (low + high + 1) // 2
        if cost(mid) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


@dataclass
class Fit:
    """What one fit found: where the schedule ends and what it was fitted from (config.json's "schedule")."""

    max_iters: int
    fitted_at_step: int
    seconds_per_step: float
    eval_seconds: float | None  # measured; None: estimated
    refit: bool

    def record(self, max_minutes: float) -> dict:
        rounded = None if self.eval_seconds is None else round(self.eval_seconds, 3)
        return {"max_iters": self.max_iters, "max_minutes": max_minutes, "fitted_at_step": self.fitted_at_step,
                "seconds_per_step": round(self.seconds_per_step, 6), "eval_seconds": rounded, "refit": self.refit}


class BudgetFit:
    """Times a budgeted run's steps from step `start + FIT_SKIP_STEPS` and says when to fit (`pace_at`). Work
    that is not a training step runs inside `aside(kind)` and is taken out of the pace; an evaluation's cost is
    kept to count the evaluations still to come."""

    def __init__(self, start_step: int):
        self.fit_from = start_step + FIT_SKIP_STEPS
        self.refit_at: int | None = None  # set by the first fit
        self.t_from = 0.0
        self.aside_seconds = 0.0
        self.measured: dict[str, float] = {}  # the last evaluation's and sample's seconds
        self.deadline = 0.0
        self.done = False  # the refit is done: nothing more is timed

    def start(self, seconds_left: float) -> None:
        """The budget starts: `seconds_left` from now (on step_clock, the clock the steps are timed on)."""
        self.deadline = step_clock() + seconds_left

    def seconds_left(self) -> float:
        return self.deadline - step_clock()

    def pace_at(self, step: int) -> float | None:
        """Seconds a training step when `step` (just done) is one to fit at, else None."""
        if self.done:
            return None
        if step == self.fit_from:
            self.t_from, self.aside_seconds = step_clock(), 0.0
        elif step == (self.fit_from + FIT_STEPS if self.refit_at is None else self.refit_at):
            return (step_clock() - self.t_from - self.aside_seconds) / (step - self.fit_from)
        return None

    def plan_refit(self, fitted_at: int, end: int, eval_interval: int) -> None:
        """After the first fit: refit a fifth of the way to `end`, or just after the first evaluation when one
        comes before half of the way (so its cost is measured)."""
        least = fitted_at + max(FIT_STEPS, int(REFIT_FRACTION * (end - fitted_at)))
        first_eval = -(-least // eval_interval) * eval_interval
        self.refit_at = first_eval + 1 if first_eval < fitted_at + (end - fitted_at) // 2 else least

    def finish(self) -> None:
        """The refit is done: nothing more is timed."""
        self.done = True

    @contextmanager
    def aside(self, kind: str):
        """Time work that is not a training step (kind "eval" or "sample" is remembered as that kind's cost)."""
        if self.done:
            yield
            return
        t0 = step_clock()
        try:
            yield
        finally:
            seconds = step_clock() - t0
            self.aside_seconds += seconds
            if kind in ("eval", "sample"):
                self.measured[kind] = seconds
