"""The training loop, run headless by the CLI or in a worker thread by the TUI.

Everything the run tells leaves as one stream of `events` objects: the run folder's writer (gptui.core.run_writer:
metrics.jsonl, train.log, state.json), the caller's listener (the CLI's printer, the TUI) and the trackers each
listen to the same events. The loop itself is `TrainingLoop`, in parts; what a checkpoint keeps of it is a
`TrainingState` (gptui.core.checkpoint).

A stop request (`TrainJob.stop()`, thread-safe) is honoured within one optimizer step: the model is evaluated once
more (unless it just was), its weights kept when they are the best so far, the checkpoint saved and the run marked
`stopped`. A new run may start from another run's best weights and tokenizer (`init_from`, fine-tuning; see
gptui.core.finetune).

The same loop runs on every process of a torchrun job: it talks to the other ranks only through its `Dist`
(gptui.core.distributed), and a rank other than the main one holds a `NullRun`, so it writes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import torch

import gptui
from gptui.core import events as ev
from gptui.core.checkpoint import (
    TrainingState,
    checkpoint_problem,
    from_checkpoint,
    load_checkpoint,
    to_checkpoint,
)
from gptui.core.claim import RunClaim, claim_run
from gptui.core.config import (
    SETTINGS_BY_NAME,
    Config,
    apply_overrides,
    check,
    config_from_dict,
    config_to_dict,
    estimate_params,
)
from gptui.core.corpus import corpus_name
from gptui.core.data import BatchSampler, Dataset, TokenizerSpec, prepare, prepare_with_tokenizer
from gptui.core.device import autocast, memory_reading, pick_device, pick_dtype, setup_backend
from gptui.core.distributed import Dist, PeerLost
from gptui.core.errors import DamagedRun, GptuiError, InputError, RunBusy
from gptui.core.finetune import FineTuneSource, fine_tune_source, refuse_shape_changes
from gptui.core.generate import TrainingSampler
from gptui.core.model import GPT, ModelConfig
from gptui.core.run_writer import RunWriter
from gptui.core.runs import (
    CHECKPOINT,
    STATE,
    TOKENIZER,
    WEIGHTS,
    NullRun,
    Run,
    RunStore,
    check_files,
    load_error,
    pid_alive,
    state_readable,
    tokenizer_vocab_size,
)
from gptui.core.schedule import FIT_STEPS, BudgetFit, Fit, evaluates_at, fit_to_budget, lr_at
from gptui.core.tokenizer import load_tokenizer
from gptui.core.trackers import TrackerListener, check_available, open_trackers
from gptui.core.workspace import Workspace

REPORT_SECONDS = 0.5  # at most this long between step events (the only place the loss is read back)
CHECKPOINT_SECONDS = 300.0  # a checkpoint at least this often, so a kill costs minutes, not hours

Listener = Callable[[ev.Event], None]


class TrainingFailed(GptuiError):
    pass


class TrainJob:
    """One training run (new, resumed, or new from another run's weights). Construct, then call `run()`
    (blocking); `stop()` from any thread.

    `init_from` (a run id or unique prefix) fine-tunes that run on `corpus`: the new run starts from its best
    weights and encodes the corpus with its tokenizer. `config` then must keep the run's model shape; without a
    `config` the run's own settings are used, with `overrides` applied (a shape change is refused by name)."""

    def __init__(
        self,
        workspace: Workspace,
        corpus: str | None,
        config: Config | None = None,
        *,
        name: str | None = None,
        resume: str | None = None,
        init_from: str | None = None,
        overrides: dict | None = None,
        on_event: Listener | None = None,
        replace_errors: bool = False,
        show_progress: bool = False,
        dist: Dist | None = None,
        skip_bad_rows: bool = False,
        workers: int = 0,
    ):
        self.workspace = workspace
        self.corpus = corpus
        self.config = config
        self.name = name
        self.resume = resume
        self.init_from = init_from
        self.overrides = overrides or {}
        self.on_event = on_event or (lambda e: None)
        self.replace_errors = replace_errors
        self.skip_bad_rows = skip_bad_rows
        self.workers = workers  # threads that encode the corpus (0: one per core)
        self.show_progress = show_progress
        self.dist = dist or Dist()
        self._stop = threading.Event()
        self.stop_reason = "stopped by user"
        self.run_dir: Run | None = None
        self._owns_state = False
        self._tokenizer_json: str | None = None  # the given tokenizer a fine-tune (or its resume) encodes with
        self._tokenizer_source = ""  # whose it is, in words
        self._source: FineTuneSource | None = None
        self._init_state: dict | None = None  # the source run's weights, checked before the new run is created
        self._claim: RunClaim | None = None  # this job's exclusive right to write its run (rank 0 only)
        # a resume given its own time budget trains that much more; without one, the run's budget covers its
        # whole time
        self._more_minutes = bool(resume) and "max_minutes" in self.overrides
        self._trackers: list = []  # TensorBoard, W&B: listeners of the main rank, opened by its Started event
        self._failed_listeners: set[int] = set()  # each listener's first error is logged, then no more
        self._writer: RunWriter | None = None  # the run folder's writer, once the job has its run
        self._early_logs: list[ev.Log] = []  # logged before the run folder existed, written to it when it does
        self._schedule: dict | None = None  # a resumed run's schedule fitted to its time budget (config.json)

    def stop(self, reason: str = "stopped by user") -> None:
        self.stop_reason = reason
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def emit(self, event: ev.Event) -> None:
        """Send an event to every listener: first the run folder's writer (a failed write there is the run's
        failure, as it always was), then the caller's listener and the trackers, whose errors are each logged
        once while training goes on. Log lines before the run folder exists wait for its writer."""
        if self._writer is not None:
            self._writer(event)
        elif isinstance(event, ev.Log):
            self._early_logs.append(event)
        for listener in (self.on_event, *self._trackers):
            try:
                listener(event)
            except Exception as exc:  # a broken listener must not kill a training run, nor fail unseen
                if id(listener) not in self._failed_listeners:
                    self._failed_listeners.add(id(listener))  # first, so the log line below cannot recurse
                    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                    self.log(f"warning: {_listener_name(listener)} failed ({type(exc).__name__}: {first}); "
                             "training goes on without it", "warning")

    def log(self, line: str, kind: str = "info") -> None:
        self.emit(ev.Log(line, kind))

    def _open_run(self, run: Run, step: int = 0) -> None:
        """The job's run folder from here on: its writer listens, starting with the lines logged before."""
        self.run_dir = run
        self._writer = RunWriter(run, step)
        early, self._early_logs = self._early_logs, []
        for event in early:
            self._writer(event)

    # --- setup -----------------------------------------------------------------------------------------------

    def _setup(self) -> tuple[Run, Config, Dataset, dict | None]:
        """The main rank checks the request, prepares the data and creates (or reopens) the run; then the
        others, told the outcome, read the prepared data from the cache and the run's checkpoint."""
        if self.dist.world_size == 1:
            return self._setup_main()
        local: list = []

        def main_setup() -> dict:
            local.extend(self._setup_main())
            run, config, dataset, checkpoint = local
            return {"run_id": run.id, "settings": config_to_dict(config), "corpus": self._corpus_name,
                    "corpus_sha256": dataset.corpus_sha256, "tokens": len(dataset.tokens),
                    "resume": checkpoint is not None, "tokenizer_json": self._tokenizer_json,
                    "tokenizer_source": self._tokenizer_source, "schedule": self._schedule}

        shared = self.dist.from_main(main_setup)
        if self.dist.is_main:
            return tuple(local)  # type: ignore[return-value]
        return self._setup_other(shared)

    def _setup_other(self, shared: dict) -> tuple[Run, Config, Dataset, dict | None]:
        rank = self.dist.rank
        self.workspace.ensure()
        config = config_from_dict(shared["settings"])
        self._open_run(NullRun(self.workspace.models / shared["run_id"]))
        # a fine-tune's tokenizer travels from rank 0, so no other machine needs the source run's folder; its
        # weights reach every rank when DistributedDataParallel broadcasts rank 0's parameters
        self._tokenizer_json = shared.get("tokenizer_json")
        self._tokenizer_source = shared.get("tokenizer_source", "")
        self._schedule = shared.get("schedule")
        dataset = self._prepare(self.workspace.corpus_path(shared["corpus"]), config)
        if dataset.corpus_sha256 != shared["corpus_sha256"] or len(dataset.tokens) != shared["tokens"]:
            raise InputError(f"rank {rank} sees a different corpus or tokenizer than rank 0 "
                             f"(corpus {shared['corpus']}): every machine needs the same inputs/")
        checkpoint = None
        if shared["resume"]:
            try:
                run = RunStore(self.workspace).resolve(shared["run_id"])
            except InputError:
                raise InputError(f"rank {rank} cannot find run {shared['run_id']} in {self.workspace.models}: "
                                 "resuming on several machines needs the run folder on each") from None
            checkpoint = load_checkpoint(run)
        return self.run_dir, config, dataset, checkpoint

    def _setup_main(self) -> tuple[Run, Config, Dataset, dict | None]:
        ws = self.workspace.ensure()
        store = RunStore(ws)
        if self.resume and self.init_from:
            raise InputError("a run is either resumed or fine-tuned from another, not both")
        if self.resume:
            return self._setup_resume(store)
        return self._setup_new(store)

    def _setup_resume(self, store: RunStore) -> tuple[Run, Config, Dataset, dict | None]:
        """Reopen a run to train it further: checked, claimed, its checkpoint loaded, its data prepared with its
        own tokenizer, and its state.json or weights rebuilt when they are damaged."""
        run = store.resolve(self.resume)
        self._claim = claim_run(run.path, run.id)  # before anything of the run is read or written
        state = run.read_state()
        if state.get("status") == "running" and pid_alive(state) and state.get("pid") != os.getpid():
            raise RunBusy(f"run {run.id} is already training in another process")
        problem = check_files(run, rebuildable=False)  # the files a resume cannot rebuild
        if problem:
            raise DamagedRun(f"run {run.id} is damaged: {problem}")
        saved = run.read_config()
        config = config_from_dict(saved["settings"])
        updated = check(apply_overrides(config, self.overrides))
        changed = {k for k in self.overrides if getattr(updated, k) != getattr(config, k)}
        fixed = sorted(k for k in changed if not SETTINGS_BY_NAME[k].resumable)
        if fixed:
            raise InputError(f"cannot change {', '.join(fixed)} when resuming (only schedule and hardware)")
        config = updated
        check_available(config.trackers)
        corpus = self.workspace.corpus_path(saved.get("corpus_file") or saved.get("corpus", ""))
        self._corpus_name = corpus.name
        checkpoint = load_checkpoint(run)
        vocab = tokenizer_vocab_size(run.file(TOKENIZER))
        rebuild = check_files(run)  # state.json or the weights, rebuilt from the checkpoint below
        problem = checkpoint_problem(checkpoint, config, vocab)
        if problem:  # nothing to rebuild from; what generate and export say of the run comes first
            raise DamagedRun(f"run {run.id} is damaged: {rebuild or problem}")
        self._refuse_spent_budget(run, config, checkpoint)
        self._open_run(run, int(checkpoint["step"]))
        self.log(f"resuming run {run.id} at step {checkpoint['step']}")
        self._schedule = saved.get("schedule")
        # a resume encodes with the run's own tokenizer.json (same tokens, nothing retrained), so a run whose
        # cache entry is gone still resumes with the tokenizer it was trained with
        try:
            self._tokenizer_json = run.file(TOKENIZER).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"run {run.id}: tokenizer.json cannot be read ({exc.strerror or exc})") from None
        self._tokenizer_source = f"run {run.id}'s"

        def same_corpus(digest: str) -> None:
            if digest != saved.get("corpus_sha256"):
                raise InputError(f"corpus {corpus.name} changed since run {run.id} started; resuming needs "
                                 "the original text")

        dataset = self._prepare(corpus, config, on_digest=same_corpus)
        if load_tokenizer(run.file(TOKENIZER)).token_bytes != dataset.tokenizer.token_bytes:
            raise InputError(f"the tokenizer cached for {corpus.name} differs from run {run.id}'s own")
        if rebuild:
            self._rebuild(run, config, vocab, checkpoint, rebuild)
        return run, config, dataset, checkpoint

    def _setup_new(self, store: RunStore) -> tuple[Run, Config, Dataset, dict | None]:
        """Create a new run (from another run's weights for a fine-tune): its data prepared, then its folder."""
        source = None
        if self.init_from:
            source = fine_tune_source(store.resolve(self.init_from))
            config = self.config if self.config is not None else apply_overrides(source.config, self.overrides)
            refuse_shape_changes(config, source)
            self._source = source
            self._tokenizer_json, self._tokenizer_source = source.tokenizer_json, f"run {source.run.id}'s"
        elif self.config is None:
            raise InputError("no configuration given")
        else:
            config = self.config
        config = check(config)
        check_available(config.trackers)  # before the run folder exists
        corpus = self.workspace.corpus_path(self.corpus or "")
        self._corpus_name = corpus.name
        dataset = self._prepare(corpus, config)
        dataset.check_block_size(config.block_size)
        if source is not None:
            self._init_state = _load_source_weights(source, config, dataset.tokenizer.vocab_size)
        params = estimate_params(config, dataset.tokenizer.vocab_size)
        run = store.create(corpus_name(corpus), params, self.name)
        self._claim = claim_run(run.path, run.id)
        self._open_run(run)
        run.write_config(
            {
                "settings": config_to_dict(config),
                "corpus": corpus_name(corpus),
                "corpus_file": corpus.name,
                "corpus_sha256": dataset.corpus_sha256,
                "corpus_bytes": dataset.corpus_bytes,
                **dataset.corpus_record(),
                "vocab_size": dataset.tokenizer.vocab_size,
                "params": params,
                "world_size": self.dist.world_size,
                "gptui_version": gptui.__version__,
                "torch_version": torch.__version__,
                "created": datetime.now().isoformat(timespec="seconds"),
            } | ({"init_from": source.run.id} if source is not None else {})
        )
        if source is not None:  # the source's own file, byte for byte: a resume finds the same cache entry
            run.write_file(TOKENIZER, lambda p: p.write_text(source.tokenizer_json, encoding="utf-8"))
        else:
            dataset.tokenizer.save(run.file(TOKENIZER))
        run.write_state(status="running", step=0, best_val_loss=None, best_val_bpb=None, duration=0.0,
                        pid=os.getpid(), host=socket.gethostname(), heartbeat=time.time())
        return run, config, dataset, None

    def _prepare(self, corpus: Path, config: Config, on_digest=None) -> Dataset:
        self.emit(ev.Prepare("preparing data", None))
        if self._tokenizer_json is not None:
            return prepare_with_tokenizer(
                corpus, self._tokenizer_json, self.workspace.cache,
                progress=lambda stage, frac: self.emit(ev.Prepare(stage, frac)),
                replace_errors=self.replace_errors, source=self._tokenizer_source,
                text_field=config.text_field, skip_bad_rows=self.skip_bad_rows, cancel=self._stop,
                on_digest=on_digest, workers=self.workers,
            )
        dataset = prepare(
            corpus, TokenizerSpec.from_config(config), self.workspace.cache,
            progress=lambda stage, frac: self.emit(ev.Prepare(stage, frac)),
            replace_errors=self.replace_errors, show_progress=self.show_progress,
            text_field=config.text_field, skip_bad_rows=self.skip_bad_rows, cancel=self._stop,
            workers=self.workers,
        )
        return dataset

    def _log_prepare(self, d: Dataset) -> None:
        if d.cached:
            self.log(f"tokenizer and tokens: served from cache in {d.seconds.get('cache_hit', 0):.2f}s")
        elif self._tokenizer_json is not None:
            self.log(f"tokenizer: {self._tokenizer_source} (not trained), encoded in {d.seconds['encode']:.2f}s")
        else:
            self.log(
                f"tokenizer: trained in {d.seconds['train_tokenizer']:.2f}s, "
                f"encoded in {d.seconds['encode']:.2f}s"
            )
        self.log(
            f"data: {len(d.tokens):,} tokens ({d.tokenizer.describe()}), "
            f"{len(d.train):,} train / {len(d.val):,} val, {d.val_tokens_per_byte:.3f} tokens per byte"
        )
        if d.corpus_kind != "txt" or d.skipped:
            self.log(f"data: {d.corpus_kind} corpus, {d.documents:,} documents from {d.files:,} files"
                     + (f"; {d.skipped_text()}" if d.skipped else ""))

    def _refuse_spent_budget(self, run: Run, config: Config, checkpoint: dict) -> None:
        """A resume without a budget of its own keeps the run's, counted over the run's whole time: once that
        is spent, there is nothing to train, which is said rather than reported as a completed resume."""
        if self._more_minutes or config.max_minutes <= 0 or int(checkpoint["step"]) >= config.max_iters:
            return
        if float(checkpoint["elapsed"]) >= config.max_minutes * 60:
            raise InputError(f"run {run.id} has used its time budget ({config.max_minutes:g} min over the "
                             "whole run); resume with --max-minutes M to train M more minutes")

    def _rebuild(self, run: Run, config: Config, vocab: int, checkpoint: dict, problem: str) -> None:
        """Rewrite state.json and model.safetensors from the sound checkpoint when they are damaged, so the
        resumed run can be talked to and listed again whatever happens next."""
        if not state_readable(run):
            run.file(STATE).unlink(missing_ok=True)
            run.write_state(status="stopped", step=int(checkpoint["step"]),
                            best_val_loss=_finite(float(checkpoint["best_val_loss"])),
                            best_val_bpb=checkpoint.get("best_val_bpb"),
                            duration=round(float(checkpoint["elapsed"]), 1))
            self.log("repaired: state.json was unreadable; rebuilt from checkpoint.pt "
                     f"(step {checkpoint['step']})")
        if check_files(run) is None:
            return
        model = GPT(ModelConfig.from_config(config, vocab))
        model.load_state_dict(checkpoint["model"])
        save_weights(run, model)
        step = int(checkpoint["step"])
        best = [m for m in run.metrics() if m.get("type") == "eval" and m.get("best") and m["step"] <= step]
        which = ("the best weights" if best and best[-1]["step"] == step else
                 "the latest weights, not necessarily the best: the next evaluation replaces them if worse")
        self.log(f"repaired: model.safetensors was damaged ({problem}); rebuilt from checkpoint.pt: "
                 f"step {step}, {which}")
        problem = check_files(run)
        if problem:
            raise DamagedRun(f"run {run.id} is damaged: {problem}")

    # --- the loop --------------------------------------------------------------------------------------------

    def run(self) -> ev.Finished:
        started = time.time()
        try:
            run, config, dataset, checkpoint = self._setup()
            self._owns_state = True  # from here on, a failure is this run's to record
            return self._train(run, config, dataset, checkpoint)
        except GptuiError as exc:
            self._fail(str(exc), started)
            raise
        except torch.OutOfMemoryError as exc:
            message = f"out of memory: {str(exc).splitlines()[0][:160]}; lower batch_size or block_size"
            self._fail(message, started)
            raise TrainingFailed(message) from None
        except OSError as exc:
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            message = f"could not write the run: {exc.strerror or exc}{where}"
            self._fail(message, started)
            raise TrainingFailed(message) from None
        except Exception as exc:
            lost = self.dist.explain(exc)  # DDP's gradient sync fails inside backward() when a rank dies
            if lost is not None:
                self._fail(lost, started)
                raise PeerLost(lost) from None
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            if self.run_dir is not None:
                try:
                    self.run_dir.log(traceback.format_exc())
                except OSError:
                    pass
            self._fail(message, started)
            raise TrainingFailed(message) from exc
        finally:
            if self._claim is not None:
                self._claim.release()
            self._close_trackers()

    def _close_trackers(self) -> None:
        """Normally closed by the Finished event; this covers a run that ends any other way (a second ctrl-c)."""
        for tracker in self._trackers:
            try:
                tracker.close(failed=True)
            except Exception:
                pass  # the run is over; its own error (if any) is the one to report
        self._trackers = []

    @property
    def owned_run(self) -> Run | None:
        """The run whose state this job answers for: one it created, or a resumed one once training began (a
        refused resume leaves the run be)."""
        run = self.run_dir
        return run if run is not None and (self._owns_state or not self.resume) else None

    def _fail(self, message: str, started: float) -> None:
        """Record a failure in the run, unless the job never got to train (a refused resume leaves the run be)."""
        if self.owned_run is not None:
            self.log(f"failed: {message}", "error")
        else:
            self._writer = None
        run_id = self.run_dir.id if self.run_dir is not None else ""
        self.emit(ev.Finished(run_id, "failed", message, 0, None, None, time.time() - started, 0.0))

    def _train(self, run: Run, config: Config, data: Dataset, checkpoint: dict | None) -> ev.Finished:
        return TrainingLoop(self, run, config, data, checkpoint).run()

    def log_header(self, run: Run, config: Config, params: int, device: str, dtype: str, resumed: bool) -> None:
        if resumed:
            self.log(f"resumed on {device} ({dtype}), {params:,} parameters")
        else:
            self.log(f"gptui {gptui.__version__}, torch {torch.__version__}; run {run.id}")
            self.log(f"device {device}, precision {dtype}, {params:,} parameters, "
                     f"{torch.get_num_threads()} CPU threads")
            if self._source is not None:
                self.log(f"fine-tuning: starts from {self._source.describe()} with its tokenizer; "
                         "the optimizer and the schedule start afresh at step 0")
        if self.dist.distributed:
            w = self.dist.world_size
            tokens = config.batch_size * config.block_size * config.grad_accum * w
            self.log(f"distributed: {self.dist.describe()}, global batch {tokens:,} tokens "
                     f"per step ({config.batch_size} x {config.block_size} x {config.grad_accum} x {w})")
        if resumed:
            return
        settings = config_to_dict(config)
        width = max(map(len, settings))
        for key, value in settings.items():
            self.log(f"  {key:<{width}} = {value}", "setting")


class TrainingLoop:
    """One training session of a run, in parts: the model and its optimizer built (and restored from a checkpoint),
    then `run()`: one `train_step` after another, with a `report` when due, an `evaluate` and a `save` every
    eval_interval steps, a sample now and then, and `finish` at the end. The loop's own state (`TrainingState`) is
    what a checkpoint keeps; the clocks and the loss summed since the last report are this session's alone."""

    def __init__(self, job: TrainJob, run: Run, config: Config, data: Dataset, checkpoint: dict | None):
        self.job, self.run_dir, self.config, self.data, self.dist = job, run, config, data, job.dist
        torch.manual_seed(config.seed)
        self.device = pick_device(config.device)
        self.dtype = pick_dtype(config.dtype, self.device)
        setup_backend(self.device)
        self.model = GPT(ModelConfig.from_config(config, data.tokenizer.vocab_size)).to(self.device)
        self.optimizer = self.model.configure_optimizer(
            config.weight_decay, config.lr, (config.beta1, config.beta2), self.device, config.optimizer,
            config.muon_lr, config.muon_momentum)
        self.scaler = torch.amp.GradScaler(self.device, enabled=self.dtype == "float16")
        # pinned host memory lets the copy to the GPU overlap the previous step's kernels
        self.train_batches = BatchSampler(data.train, config.block_size, config.batch_size, config.seed,
                                          rank=self.dist.rank, world_size=self.dist.world_size,
                                          pin_memory=self.device == "cuda")
        if self.dist.world_size > 1:
            torch.manual_seed(config.seed + self.dist.rank)  # one initialisation for all; dropout differs by rank
        self.state = TrainingState(world_size=self.dist.world_size)
        self.saved_world = self.dist.world_size  # the processes that trained the run before (a resume)
        self.resumed = checkpoint is not None
        if checkpoint is not None:
            self._restore(checkpoint)
        elif job._init_state is not None:  # a fine-tune: the source's weights, a fresh optimizer at step 0
            self.model.load_state_dict(job._init_state)
            job._init_state = None
        self.ddp = self.dist.wrap(self.model)  # DistributedDataParallel on a process group; else the model itself
        self.forward = self.ddp
        if config.compile:
            try:
                self.forward = torch.compile(self.ddp)
            except Exception as exc:
                job.log(f"torch.compile unavailable ({type(exc).__name__}); training eagerly", "warning")
        self.ctx = autocast(self.device, self.dtype)
        self.elapsed_before = self.state.elapsed  # the sessions before this one
        self.lr = 0.0

    def _restore(self, checkpoint: dict) -> None:
        """The weights, the optimizer and the training state of the checkpoint, and the random streams an
        uninterrupted run would be drawing from (those of the same rank when the number of processes is kept)."""
        dist, state = self.dist, from_checkpoint(checkpoint)
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.train_batches.set_state(state.batch_rng)
        same_world = state.world_size == dist.world_size
        if same_world and state.rank_rng is not None:
            torch.set_rng_state(state.rank_rng[dist.rank])
        elif dist.rank == 0:
            torch.set_rng_state(state.torch_rng)
        cuda_rng = state.cuda_rng if self.device == "cuda" else None
        if cuda_rng and (same_world or dist.rank == 0):  # dropout on CUDA draws from these
            torch.cuda.set_rng_state(cuda_rng[dist.rank if same_world else 0])
        if not same_world:
            self.run_dir.update_config(world_size=dist.world_size)
        self.run_dir.truncate_metrics(state.step)
        self.run_dir.write_state(status="running", pid=os.getpid(), host=socket.gethostname(),
                                 heartbeat=time.time(), error=None)
        self.saved_world = state.world_size
        self.state = state

    # --- before the first step -------------------------------------------------------------------------------

    def _announce(self) -> None:
        """The log's header, the trackers, the schedule, then `Started`."""
        job, dist, config = self.job, self.dist, self.config
        params = self.model.num_params()
        job.log_header(self.run_dir, config, params, self.device, self.dtype, self.resumed)
        saved_world = self.saved_world
        if saved_world != dist.world_size:
            job.log(f"data order changed: the checkpoint was trained by {saved_world} process"
                    f"{'es' if saved_world > 1 else ''}, this run has {dist.world_size}, so each step draws "
                    "other rows than an uninterrupted run would", "warning")
        job._log_prepare(self.data)
        if dist.is_main:
            job._trackers = open_trackers(config.trackers, config.tracker_project, self.run_dir, job.log)
        self._plan_schedule()
        job.emit(ev.Started(self.run_dir.id, str(self.run_dir.path), params, self.device, self.dtype,
                            self.state.step, self.config.max_iters, config_to_dict(self.config), dist.world_size))

    def _plan_schedule(self) -> None:
        """With a time budget: a schedule fitted before is kept for the same budget over the run's whole time; a
        resume given a budget of its own (that many more minutes) or another budget is fitted again once the
        first steps are timed (`BudgetFit`)."""
        job, config = self.job, self.config
        schedule = job._schedule if config.max_minutes > 0 and not job._more_minutes else None
        if schedule is not None:
            config = dataclasses.replace(config, max_iters=int(schedule["max_iters"]))
            if schedule.get("max_minutes") == config.max_minutes:
                job.log(f"schedule: ends at step {config.max_iters:,}, as fitted to the "
                        f"{config.max_minutes:g}-minute budget when the run started")
            else:
                schedule = None
        self.fit = BudgetFit(self.state.step) if config.max_minutes > 0 and schedule is None else None
        if self.fit and config.max_iters <= self.fit.fit_from + FIT_STEPS:  # it runs the steps it times
            config = dataclasses.replace(config, max_iters=self.fit.fit_from + FIT_STEPS + 1)
        self.fitted = schedule is not None
        self.config = config

    def _start_clocks(self) -> None:
        config = self.config
        self.sampler = TrainingSampler(self.model, _sample_prompt(self.data), config.sample_tokens, config.seed,
                                       self.job.log)
        self.tokens_per_step = config.batch_size * config.block_size * config.grad_accum  # this rank's share
        self.t_start = time.time()
        self.t_report = time.perf_counter()
        self.step_report, self.t_checkpoint = self.state.step, time.time()
        self.start_step = self.state.step
        self.loss_acc = torch.zeros((), device=self.device)
        self.n_acc = 0
        self.last_tps = 0.0
        spent = 0.0 if self.job._more_minutes else self.elapsed_before
        self.deadline = self.t_start + config.max_minutes * 60 - spent if config.max_minutes > 0 else None
        if self.fit:
            self.fit.start(self.deadline - self.t_start)
        self.last_eval_step = self.state.step if self.state.evaluated else -1  # a resume never evaluated: not yet

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t_start

    # --- the loop ----------------------------------------------------------------------------------------------

    def run(self) -> ev.Finished:
        self._announce()
        self._start_clocks()
        state, dist = self.state, self.dist
        early_stop = False
        stop, out_of_time = dist.any_true(self.job.stopping, self._out_of_time())
        self.model.train()
        while state.step < self.config.max_iters:
            if dist.world_size == 1:  # a stop asked for while the last step was reported (ranks agree after a step)
                stop = stop or self.job.stopping
            if stop or out_of_time:
                break
            self.train_step()
            # decided after the step, so the step that made a report due is in it, and the first one is reported
            stop, out_of_time, report_due, checkpoint_due = self.agree()
            self._time_for_schedule()
            config = self.config
            last = evaluates_at(state.step, config)
            if report_due or last or state.step == self.start_step + 1:
                self.report()
            if last:
                with self._aside("eval"):
                    self.evaluate()
                    self.save("running")
                if config.patience and state.bad_evals >= config.patience:
                    early_stop = True
                    break
            elif checkpoint_due:
                with self._aside("checkpoint"):
                    self.save("running")
            if config.sample_interval and state.step % config.sample_interval == 0 and dist.is_main and not stop:
                with self._aside("sample"):
                    self.sample()  # only the run's owner samples: the others would throw their text away
        return self.finish(stop and not early_stop, out_of_time, early_stop)

    def train_step(self) -> None:
        """One optimizer step: grad_accum micro-batches at this step's learning rate."""
        config, dist = self.config, self.dist
        self.lr = lr = lr_at(self.state.step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's groups run at muon_lr on the same schedule
        for micro in range(config.grad_accum):
            x, y = self.train_batches.next()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            # gradients are averaged over the ranks once a step, on the last micro-step
            with dist.no_sync(self.ddp) if micro < config.grad_accum - 1 else contextlib.nullcontext():
                loss = self._forward(x, y)
                self.scaler.scale(loss / config.grad_accum).backward()
            self.loss_acc += loss.detach()
            self.n_acc += 1
        if config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of one micro-batch; a compiled model that fails falls back to eager for the rest of the run."""
        try:
            with self.ctx:
                return self.forward(x, y)[1]
        except Exception as exc:
            if self.forward is self.ddp or isinstance(exc, torch.OutOfMemoryError):
                raise
            self.job.log(f"torch.compile failed ({type(exc).__name__}); training eagerly", "warning")
            self.forward = self.ddp
            with self.ctx:
                return self.forward(x, y)[1]

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def agree(self) -> tuple[bool, ...]:
        """Stop, out of time, report due, checkpoint due: each true when true on any rank, so every rank stops,
        reports and saves at the same step (one small collective a step; nothing on one process)."""
        return self.dist.any_true(
            self.job.stopping,
            self._out_of_time(),
            time.perf_counter() - self.t_report >= REPORT_SECONDS,
            time.time() - self.t_checkpoint >= CHECKPOINT_SECONDS,
        )

    def _aside(self, kind: str):
        """Work that is not a training step, taken out of the pace a time budget is fitted from."""
        return self.fit.aside(kind) if self.fit else contextlib.nullcontext()

    def _time_for_schedule(self) -> None:
        """With a time budget to fit: when the step just done is one to fit at, fix the step the schedule ends at."""
        pace = self.fit.pace_at(self.state.step) if self.fit else None
        if pace is not None:
            self.config = self._fit_schedule(pace)
            self.fitted = True

    def _fit_schedule(self, seconds_per_step: float) -> Config:
        """The run's config with max_iters where the time budget ends (the cosine ends there), recorded in
        config.json and the log. Every rank fits the same step from the ranks' mean times."""
        config, dist, fit, step = self.config, self.dist, self.fit, self.state.step
        refit = fit.refit_at is not None
        seconds_per_step = dist.mean(seconds_per_step)
        left = dist.mean(fit.seconds_left())  # to the deadline (a resume given a budget: that much more)
        measured = fit.measured.get("eval")
        eval_seconds = None if measured is None else dist.mean(measured)  # every rank evaluates at the same steps
        sample_seconds = dist.sum(fit.measured.get("sample", 0.0))  # the main process samples, alone
        end = fit_to_budget(step, seconds_per_step, left, config, dist.world_size, eval_seconds=eval_seconds,
                            sample_seconds=sample_seconds)
        if refit:
            fit.finish()
        else:
            fit.plan_refit(step, end, config.eval_interval)
        found = Fit(end, step, seconds_per_step, eval_seconds, refit)
        self.run_dir.update_config(schedule=found.record(config.max_minutes))
        pace = f"{seconds_per_step * 1000:,.1f} ms a step (steps {fit.fit_from + 1}-{step})"
        if eval_seconds is not None:
            pace += f" and {eval_seconds:,.1f} s an evaluation"
        then = f" (timed again at step {fit.refit_at:,})" if not refit and fit.refit_at < end else ""
        self.job.log(f"schedule: {pace}, so {end:,} steps fit the {config.max_minutes:g}-minute budget: the cosine "
                     f"ends at step {end:,} instead of {config.max_iters:,}{then}")
        return dataclasses.replace(config, max_iters=end)

    # --- the parts a step may call -----------------------------------------------------------------------------

    def report(self) -> None:
        """A Step event for the steps since the last report: the only sync with the device in the hot loop (over
        several ranks, the mean loss and the summed speed)."""
        dist, step, config = self.dist, self.state.step, self.config
        now = time.perf_counter()
        mean_loss = dist.mean(float(self.loss_acc) / max(1, self.n_acc))
        self.last_tps = dist.sum((step - self.step_report) * self.tokens_per_step / max(1e-9, now - self.t_report))
        # the ETA uses this session's whole pace, evaluations and samples included, so it does not jump
        per_step = (time.time() - self.t_start) / max(1, step - self.start_step)
        mem = memory_reading(self.device).as_dict()
        self.job.emit(ev.Step(step, config.max_iters, round(self.elapsed(), 3), mean_loss, self.lr, self.last_tps,
                              per_step * (config.max_iters - step), mem))
        self.loss_acc.zero_()
        self.n_acc, self.t_report, self.step_report = 0, now, step

    def evaluate(self) -> None:
        """Both splits' loss on the same batches as every evaluation; the weights kept when they are the best."""
        state = self.state
        losses = estimate_loss(self.model, self.data, self.config, self.ctx, self.device, self.config.seed + 1,
                               self.dist)
        bpb = losses["val"] / math.log(2) * self.data.val_tokens_per_byte
        improved = losses["val"] < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_val_bpb, state.bad_evals = losses["val"], bpb, 0
            save_weights(self.run_dir, self.model)
        else:
            state.bad_evals += 1
        self.last_eval_step = state.step
        self.job.emit(ev.Eval(state.step, round(self.elapsed(), 3), losses["train"], losses["val"], bpb, improved))
        self.job.log(
            f"step {state.step:>6}  train {losses['train']:.4f}  val {losses['val']:.4f}  "
            f"val bpb {bpb:.4f}{'  *best' if improved else ''}  {self.last_tps:,.0f} tok/s", "evaluation"
        )

    def save(self, status: str) -> None:
        """checkpoint.pt, then `Saved` (the run folder's writer brings state.json to match). model.safetensors
        holds evaluated weights only (written by evaluate(); a stop evaluates first)."""
        state, dist = self.state, self.dist
        rank_rng = dist.gather(torch.get_rng_state())  # each rank's dropout stream, for an exact resume
        cuda_rng = dist.gather(torch.cuda.get_rng_state()) if self.device == "cuda" else None
        state.elapsed, state.world_size = self.elapsed(), dist.world_size
        state.batch_rng, state.torch_rng = self.train_batches.state(), torch.get_rng_state()
        state.cuda_rng, state.rank_rng = cuda_rng, rank_rng if dist.world_size > 1 else None
        checkpoint = to_checkpoint(state, self.model.state_dict(), self.optimizer.state_dict())
        self.run_dir.write_file(CHECKPOINT, lambda p: torch.save(checkpoint, p))
        self.job.emit(ev.Saved(state.step, status, _finite(state.best_val_loss), state.best_val_bpb,
                               round(state.elapsed, 3)))
        self.t_checkpoint = time.time()

    def sample(self) -> None:
        t_sample = time.perf_counter()
        text = self.data.tokenizer.decode(self.sampler.sample(self.state.step))
        self.job.emit(ev.Sample(self.state.step, text, time.perf_counter() - t_sample))
        self.job.log(f"sample at step {self.state.step}:\n{text}\n", "sample")

    def finish(self, stopped: bool, out_of_time: bool, early_stop: bool) -> ev.Finished:
        """The last report, evaluation and checkpoint, then `Finished` (status and why)."""
        state, config, dist = self.state, self.config, self.dist
        if self.n_acc:
            self.report()  # the steps since the last report, when a stop or the time budget ended the run
        reason = "reached max_iters"
        if early_stop:
            reason = f"early stopping: no improvement in {config.patience} evaluations"
        elif stopped:
            reason = self.job.stop_reason if self.job.stopping else "stopped by another rank"
        elif out_of_time or self.fitted and state.step >= config.max_iters:
            reason = f"time budget of {config.max_minutes:g} min reached"  # or the steps fitted to it are done
        status = "stopped" if stopped else "completed"
        if state.step > 0 and self.last_eval_step != state.step:
            # a stop or the time budget ends between evaluations: measure where it got to, so what it learned
            # since the last one is kept when it is the best (a run stopped before its first evaluation still
            # leaves weights to talk to). Every rank takes part; the steps are on disk before it runs.
            self.save("running")
            self.evaluate()
        self.save(status)
        total = self.elapsed()
        trained = state.step - self.start_step
        run_tps = dist.sum(trained * self.tokens_per_step / max(1e-9, time.time() - self.t_start))
        best = state.best_val_loss
        self.job.log(
            f"finished: {status} ({reason}) after {state.step} steps in {_duration(total)}; "
            f"best val loss {_finite(best) if math.isfinite(best) else 'n/a'}"
            + (f", {state.best_val_bpb:.4f} bits per byte" if state.best_val_bpb else "")
            + f"; {run_tps:,.0f} tokens/s", "finish"
        )
        finished = ev.Finished(self.run_dir.id, status, reason, state.step, _finite(best), state.best_val_bpb,
                               total, run_tps)
        self.job.emit(finished)
        return finished


@torch.no_grad()
def estimate_loss(model: GPT, data: Dataset, config: Config, ctx, device: str, seed: int,
                  dist: Dist | None = None) -> dict[str, float]:
    """Mean loss over eval_iters batches of each split; the same batches every time, so evals compare.

    On several processes the ranks share out those same batches (batch k goes to rank k mod W) and add up
    their sums, so the result means what it means on one process, in 1/W of the time."""
    dist = dist or Dist()
    model.eval()
    out = {}
    for i, (split, tokens) in enumerate((("train", data.train), ("val", data.val))):
        sampler = BatchSampler(tokens, config.block_size, config.batch_size, seed + i)
        total = torch.zeros((), device=device)
        for k in range(config.eval_iters):
            if k % dist.world_size != dist.rank:
                sampler.skip()
                continue
            x, y = sampler.next()
            with ctx:
                _, loss = model(x.to(device), y.to(device))
            total += loss
        out[split] = dist.sum(float(total)) / config.eval_iters
    model.train()
    return out


def _load_source_weights(source: FineTuneSource, config: Config, vocab_size: int) -> dict:
    """The best weights of the run a fine-tune starts from, loaded into a model of the new run's shape on the CPU
    (so a file that does not fit is refused before the new run exists)."""
    from safetensors.torch import load_model

    model = GPT(ModelConfig.from_config(config, vocab_size))
    try:
        load_model(model, str(source.weights))
    except Exception as exc:  # safetensors' own errors, a shape or a name that does not fit
        raise DamagedRun(f"run {source.run.id} is damaged: {load_error(exc)}") from None
    return model.state_dict()


def save_weights(run: Run, model: GPT) -> None:
    from safetensors.torch import save_model

    run.write_file(WEIGHTS, lambda p: save_model(model, str(p)))


def _sample_prompt(data: Dataset) -> list[int]:
    try:
        ids = data.tokenizer.encode("\n")
    except InputError:
        ids = []
    return ids or [int(data.val[0])]


def _listener_name(listener: Listener) -> str:
    """A tracker says which ("wandb tracker"); any other listener goes by its function's or class's name."""
    if isinstance(listener, TrackerListener):
        return repr(listener)
    return f"listener {getattr(listener, '__qualname__', type(listener).__name__)}"


def _finite(x: float) -> float | None:
    return round(x, 6) if math.isfinite(x) else None


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"

