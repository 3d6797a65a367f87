"""A training request, resolved into the settings a run trains with, in one place for the command line and the
Train tab.

A `TrainRequest` says what a user asked for: a new run on a corpus (a preset and `--set` overrides), a resume, or
a fine-tune of another run (`--init-from`). `resolve_request` checks it and turns it into a `TrainPlan`: the
`Config` a new run trains with (a resume's is the run's own, with the overrides applied by the trainer), which
`TrainJob` it is, and the device it asks for. Nothing here imports torch: a request is refused in one line
before anything heavy loads, and before torchrun starts its processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gptui.core.config import (
    DEFAULT_PRESET,
    Config,
    ConfigError,
    apply_overrides,
    check,
    config_to_dict,
    parse_assignments,
    preset_config,
)
from gptui.core.errors import GptuiError, InputError
from gptui.core.workspace import Workspace

if TYPE_CHECKING:
    from gptui.core.distributed import Dist
    from gptui.core.trainer import TrainJob


@dataclass(frozen=True)
class TrainRequest:
    """What a user asks to train, as given (the command line's flags, the Train tab's form), not yet checked."""

    corpus: str | None = None  # the corpus in inputs/ a new run (or a fine-tune) trains on
    preset: str | None = None  # None: tiny for a new run, the source run's own settings for a fine-tune
    sets: tuple[str, ...] = ()  # KEY=VALUE overrides, as `--set` gives them
    max_minutes: float | None = None  # with a resume: that many more minutes
    resume: str | None = None  # a run id or unique prefix to continue
    init_from: str | None = None  # a run id or unique prefix to fine-tune from
    name: str | None = None  # the new run folder's name
    replace_errors: bool = False
    skip_bad_rows: bool = False
    workers: int = 0  # threads that encode the corpus (0: one per core)

    @classmethod
    def with_settings(cls, corpus: str, config: Config, *, init_from: str | None = None) -> TrainRequest:
        """A new run (or a fine-tune of `init_from`) with every setting of `config`, as the Train tab starts one."""
        return cls(corpus=corpus, sets=tuple(f"{k}={v}" for k, v in config_to_dict(config).items()),
                   init_from=init_from)


@dataclass(frozen=True)
class TrainPlan:
    """A checked request: the settings a new run trains with (None for a resume: the run's own, with
    `overrides`), and the overrides as parsed."""

    request: TrainRequest
    config: Config | None
    overrides: dict[str, Any] = field(default_factory=dict)

    def job(self, workspace: Workspace, *, on_event: Callable | None = None, dist: Dist | None = None) -> TrainJob:
        """The TrainJob that trains this plan (imports torch)."""
        from gptui.core.trainer import TrainJob

        r = self.request
        return TrainJob(workspace, r.corpus, self.config, name=r.name, resume=r.resume, init_from=r.init_from,
                        overrides=self.overrides, on_event=on_event, replace_errors=r.replace_errors, dist=dist,
                        skip_bad_rows=r.skip_bad_rows, workers=r.workers)

    def device(self, workspace: Workspace) -> str:
        """The device setting the job will train with: `--set device=...`, else the new config's, else the
        resumed run's (it picks NCCL or gloo, and one GPU per rank)."""
        if str(self.overrides.get("device", "")).strip():
            return str(self.overrides["device"]).strip()
        if self.config is not None:
            return self.config.device
        from gptui.core.runs import RunStore

        try:
            return str(RunStore(workspace).resolve(self.request.resume or "").read_config()["settings"]["device"])
        except (GptuiError, OSError, ValueError, KeyError, TypeError):
            return "auto"


def resolve_request(workspace: Workspace, request: TrainRequest) -> TrainPlan:
    """Check `request` and resolve its settings: a new run's preset and overrides, a fine-tune's source run with
    them (a change of its model shape is refused by name), or a resume's overrides. Raises InputError (or
    DamagedRun for a broken source run) with one line; every invalid setting is in it."""
    r = request
    if r.init_from is not None:
        if r.resume:
            raise InputError("--init-from cannot be combined with --resume (a fine-tune is a new run; resume it "
                             "later by its own id)")
        if not r.corpus:
            raise InputError("--init-from needs --input NAME (the corpus in inputs/ to fine-tune on)")
    if not r.corpus and not r.resume:
        raise InputError("train needs --input NAME (a corpus in inputs/) or --resume RUN")
    if r.resume and r.preset:
        raise InputError("--preset cannot be combined with --resume (the run keeps its settings)")
    try:
        if r.resume:
            return TrainPlan(r, None, _overrides(r))
        if r.init_from is not None:
            from gptui.core.finetune import fine_tune_config, fine_tune_source
            from gptui.core.runs import RunStore

            source = fine_tune_source(RunStore(workspace).resolve(r.init_from))
            base = preset_config(r.preset) if r.preset else None
            overrides = _overrides(r)
            return TrainPlan(r, fine_tune_config(source, base, overrides), overrides)
        config = preset_config(r.preset or DEFAULT_PRESET)
        overrides = _overrides(r)
        return TrainPlan(r, check(apply_overrides(config, overrides)), overrides)
    except ConfigError as exc:
        raise InputError("; ".join(exc.problems.values())) from None


def _overrides(request: TrainRequest) -> dict[str, Any]:
    overrides: dict[str, Any] = parse_assignments(list(request.sets))
    if request.max_minutes is not None:
        overrides["max_minutes"] = request.max_minutes
    return overrides
