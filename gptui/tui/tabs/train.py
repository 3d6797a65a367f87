"""The Train tab: start, stop and resume a run, and watch it (loss plot, progress, numbers, sample, log). Made
ready to fine-tune a run (from the Runs tab), Start trains a new run from that run's weights and tokenizer.

With one process (the default) the engine's `TrainJob` runs in a thread worker; its events come back as
`TrainTab.EngineEvent` messages, so only the UI thread touches widgets. torch is imported inside the worker,
when the first run starts. With more, Start launches `gptui train --nproc-per-node N` (torchrun) as a child
process and a thread worker follows the run through its folder, turning what it reads into the same events.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.validation import Integer
from textual.widgets import Button, Input, Label, ProgressBar, RichLog, Static
from textual.worker import Worker, WorkerState

from gptui.core import events as ev
from gptui.core.config import Config, estimate_params, tokens_per_step
from gptui.core.errors import DamagedRun, GptuiError, RunBusy
from gptui.core.finetune import KEPT_SETTINGS
from gptui.core.request import TrainRequest, resolve_request
from gptui.core.runs import Run
from gptui.core.workspace import Workspace
from gptui.tui.formatting import human_duration, human_number, log_text, loss_text, memory_text
from gptui.tui.widgets.loss_plot import LossPlot

LOG_LINES = 400
MAX_PROCESSES = 256


class TrainTab(Vertical):
    class Ready(Message):
        """Mounted (lazily, after the first frame): the app hands down what this tab shows."""

    class EngineEvent(Message):
        """An event from the trainer thread, delivered on the UI thread."""

        def __init__(self, event: ev.Event) -> None:
            super().__init__()
            self.event = event

    class Failed(Message):
        def __init__(self, text: str, title: str = "Training failed") -> None:
            super().__init__()
            self.text = text
            self.title = title

    class ProcessesChanged(Message):
        """The processes setting changed to a valid number (the Model tab's tokens per step follow it)."""

        def __init__(self, processes: int) -> None:
            super().__init__()
            self.processes = processes

    class RunChanged(Message):
        """A run was created, finished or stopped: the Runs and Generate tabs should look again."""

        def __init__(self, run_id: str, status: str) -> None:
            super().__init__()
            self.run_id, self.status = run_id, status

    def __init__(self, workspace: Workspace, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.workspace = workspace
        self.corpus: str | None = None
        self.config: Config | None = None
        self.problems: dict[str, str] = {}
        self.resume_run: str | None = None  # the run Resume continues
        self.fine_tune_run: str | None = None  # the run Start fine-tunes, when set
        self._fine_tune_settings: dict[str, Any] = {}  # that run's settings (its model shape must stay)
        self.run_id: str | None = None  # the run on screen
        self._job: Any = None  # gptui.core.trainer.TrainJob, created in the worker
        self._process: Any = None  # gptui.core.follow.TrainProcess, when a run uses several processes
        self._stop_requested = False
        self._worker: Worker | None = None
        self._max_iters = 0

    def compose(self) -> ComposeResult:
        with Horizontal(id="train-controls"):
            yield Button("Start", id="train-start", variant="success", compact=True)
            yield Button("Stop", id="train-stop", variant="error", compact=True, disabled=True)
            yield Button("Resume", id="train-resume", variant="primary", compact=True, disabled=True)
            yield Label("processes", id="train-procs-label")
            yield Input("1", id="train-procs", type="integer", compact=True,
                        validators=[Integer(minimum=1, maximum=MAX_PROCESSES)],
                        tooltip="Processes to train on (torchrun): one per GPU on CUDA, CPU processes otherwise")
            yield Static(id="train-summary")
        with Horizontal(id="train-fine-tune"):
            yield Static(id="train-fine-tune-text")
            yield Button("From scratch", id="train-from-scratch", compact=True,
                         tooltip="Start trains a new model from scratch instead of fine-tuning")
        yield Static(id="train-blocked")
        with Horizontal(id="train-progress-row"):
            yield Label("idle", id="train-step")
            yield ProgressBar(id="train-progress", total=1, show_eta=False, show_percentage=True)
            yield Label("", id="train-eta")
        with Horizontal(id="train-middle"):
            yield LossPlot("loss (train, val) against step", id="train-plot")
            yield Static(id="train-stats")
        with Horizontal(id="train-bottom"):
            with VerticalScroll(id="train-sample-scroll"):
                yield Static("Samples appear here as the model learns.", id="train-sample")
            yield RichLog(id="train-log", max_lines=LOG_LINES, wrap=True, min_width=20)  # wrap at its own width

    def on_mount(self) -> None:
        self.query_one("#train-sample-scroll").border_title = "Latest sample"
        self.query_one("#train-log").border_title = "Log"
        self.stats: dict[str, str] = {}
        self._reset_stats()
        self.update_inputs(self.corpus, self.config, self.problems)
        self.post_message(self.Ready())

    # --- what the other tabs hand down ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    @property
    def processes_running(self) -> bool:
        """Whether the run on screen trains in child processes (torchrun) rather than in this one."""
        return self.running and self._process is not None

    @property
    def processes(self) -> int | None:
        """The processes setting, or None while it is not a whole number from 1 to MAX_PROCESSES."""
        try:
            value = int(self.query_one("#train-procs", Input).value.strip())
        except ValueError:
            return None
        return value if 1 <= value <= MAX_PROCESSES else None

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "train-procs":
            return
        event.stop()
        if self.processes is not None:
            self.post_message(self.ProcessesChanged(self.processes))
        self.update_inputs(self.corpus, self.config, self.problems)

    def update_inputs(self, corpus: str | None, config: Config | None, problems: dict[str, str]) -> None:
        self.corpus, self.config, self.problems = corpus, config, problems
        blocked = self.blocked_reason()
        summary = f"corpus [b]{corpus or '—'}[/b]"
        if config is not None:
            summary += (
                f" · {config.n_layer}×{config.n_embd}, {human_number(estimate_params(config))} params"
                f" · {config.tokenizer} · {config.max_iters:,} steps"
            )
            procs = self.processes or 1
            if procs > 1:  # the global batch: every process draws its own batch_size x block_size x grad_accum
                summary += f" · {tokens_per_step(config, procs):,} tokens/step"
        if self.resume_run:
            summary += f" · resume: {self.resume_run}"
        self.query_one("#train-summary", Static).update(summary)
        # the summary's second line, under it at every width: what Start starts from
        self.query_one("#train-fine-tune").display = self.fine_tune_run is not None
        if self.fine_tune_run is not None:
            self.query_one("#train-fine-tune-text", Static).update(
                Text(f"fine-tune from {self.fine_tune_run} (its weights and tokenizer)"))
        notice = self.query_one("#train-blocked", Static)
        notice.update(Text(f"✗ {blocked}") if blocked else "")
        notice.display = bool(blocked)
        self._sync_buttons()

    def set_resume(self, run_id: str | None) -> None:
        self.resume_run = run_id
        self.update_inputs(self.corpus, self.config, self.problems)

    def set_fine_tune(self, run_id: str | None, settings: dict[str, Any] | None = None) -> None:
        """Make Start fine-tune `run_id` (whose `settings` fix the model shape), or train from scratch (None)."""
        self.fine_tune_run = run_id
        self._fine_tune_settings = dict(settings or {}) if run_id else {}
        self.update_inputs(self.corpus, self.config, self.problems)

    def blocked_reason(self) -> str | None:
        """Why Start cannot start now, in words for the screen; None when it can."""
        if self.processes is None:
            return f"processes must be a whole number from 1 to {MAX_PROCESSES}."
        if self.corpus is None:
            return "No corpus selected: pick one on the Corpus tab."
        if self.problems or self.config is None:
            reasons = "; ".join(self.problems.values()) or "the settings are incomplete"
            return f"Fix the Model tab first: {reasons}"
        if self.fine_tune_run:
            changed = [f"{name} to {self._fine_tune_settings[name]}" for name in KEPT_SETTINGS
                       if name in self._fine_tune_settings
                       and getattr(self.config, name) != self._fine_tune_settings[name]]
            if changed:
                return (f"Fine-tuning {self.fine_tune_run} keeps its model: set {', '.join(changed)} on the Model "
                        "tab, or press From scratch.")
        return None

    def _sync_buttons(self) -> None:
        running = self.running
        self.query_one("#train-start", Button).disabled = running
        self.query_one("#train-stop", Button).disabled = not running
        self.query_one("#train-resume", Button).disabled = running or self.resume_run is None
        self.query_one("#train-procs", Input).disabled = running

    # --- actions ---------------------------------------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        actions = {"train-start": self.action_start, "train-stop": self.action_stop,
                   "train-resume": self.action_resume, "train-from-scratch": lambda: self.set_fine_tune(None)}
        if event.button.id in actions:
            actions[event.button.id]()

    def action_start(self) -> None:
        if self.running:
            self.notify("A run is already training; stop it first.", severity="warning")
            return
        blocked = self.blocked_reason()
        if blocked:
            self.notify(blocked, severity="error", title="Cannot start")
            return
        self._launch(TrainRequest.with_settings(self.corpus, self.config, init_from=self.fine_tune_run))

    def action_resume(self) -> None:
        if self.running:
            self.notify("A run is already training; stop it first.", severity="warning")
            return
        if not self.resume_run:
            self.notify("Nothing to resume: stop a run, or pick one on the Runs tab.", severity="warning")
            return
        if self.processes is None:
            self.notify(f"processes must be a whole number from 1 to {MAX_PROCESSES}.", severity="error",
                        title="Cannot resume")
            return
        self._launch(TrainRequest(resume=self.resume_run))

    def action_stop(self) -> None:
        if not self.running:
            self.notify("No run is training.", severity="warning")
            return
        self.stop("stopped by user")
        self._set_status("stopping: evaluating and saving…")

    def stop(self, reason: str = "stopped by user") -> None:
        """Ask the trainer to stop after the current step (it evaluates once more, then saves). Thread-safe."""
        self._stop_requested = True
        job = self._job
        if job is not None:
            job.stop(reason)
        process = self._process
        if process is not None:
            process.stop()

    async def wait(self) -> None:
        """Wait until the training worker has finished (saved and returned)."""
        if self._worker is not None:
            await self._worker.wait()

    def _launch(self, request: TrainRequest) -> None:
        self._stop_requested = False
        self._job = self._process = None
        self.run_id = None
        self._reset_stats()
        self.query_one("#train-plot", LossPlot).clear()
        self.query_one("#train-log", RichLog).clear()
        self.query_one("#train-sample", Static).update("Samples appear here as the model learns.")
        self.query_one("#train-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#train-step", Label).update("starting")
        self.query_one("#train-eta", Label).update("")
        processes = self.processes or 1
        if processes > 1:
            self._set_status(f"starting {processes} processes…")
            self._worker = self._train_processes(request, processes)
        else:
            self._set_status("loading the engine…")
            self._worker = self._train(request)
        self._sync_buttons()

    @work(thread=True, exclusive=True, exit_on_error=False, group="train")
    def _train(self, request: TrainRequest) -> None:
        try:
            plan = resolve_request(self.workspace, request)
            # the plan's job imports torch: here, in the worker, long after the first frame
            job = plan.job(self.workspace, on_event=lambda e: self.post_message(self.EngineEvent(e)))
            self._job = job
            if self._stop_requested:  # Stop (or quit) came while torch was loading
                job.stop("stopped by user")
            job.run()
        except (RunBusy, DamagedRun) as exc:  # refused before training: another writer, or a broken run
            self.post_message(self.Failed(str(exc), "Cannot resume" if request.resume else "Cannot start"))
        except GptuiError as exc:
            self.post_message(self.Failed(str(exc)))
        except Exception as exc:  # never a traceback on screen: one line, the log has the rest
            self.post_message(self.Failed(f"{type(exc).__name__}: {exc}"))

    @work(thread=True, exclusive=True, exit_on_error=False, group="train")
    def _train_processes(self, request: TrainRequest, processes: int) -> None:
        """Launch torchrun through the command line and follow the run it trains (no torch in this process)."""
        from gptui.core.follow import TrainProcess

        try:
            process = TrainProcess(self.workspace, request, processes)
        except OSError as exc:
            self.post_message(self.Failed(f"could not start the training processes: {exc.strerror or exc}"))
            return
        self._process = process
        if self._stop_requested:  # Stop (or quit) came before the launcher started
            process.stop()
        try:
            for event in process.events():
                self.post_message(self.EngineEvent(event))
            if process.failure:
                self.post_message(self.Failed(process.failure))
        finally:
            process.close()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is self._worker:
            self._sync_buttons()

    # --- showing events --------------------------------------------------------------------------------------

    def on_train_tab_engine_event(self, message: EngineEvent) -> None:
        message.stop()
        self.show_event(message.event)

    def on_train_tab_failed(self, message: Failed) -> None:
        self.notify(message.text, severity="error", title=message.title)
        refused = message.title != "Training failed"  # nothing was trained: the run is as it was
        self._set_status(f"{'refused' if refused else 'failed'}: {message.text}")

    def show_event(self, e: ev.Event) -> None:
        """Put one engine event on screen (public so tests and snapshots can feed fixed events)."""
        plot = self.query_one("#train-plot", LossPlot)
        if isinstance(e, ev.Prepare):
            bar = self.query_one("#train-progress", ProgressBar)
            bar.update(total=None if e.fraction is None else 100, progress=100 * (e.fraction or 0))
            self._set_status(f"preparing: {e.stage}")
        elif isinstance(e, ev.Started):
            self.run_id = e.run_id
            self._max_iters = e.max_iters
            if e.start_step and self._process is None:  # a followed run replays its whole metrics file
                self._load_history(e.run_path, plot)
            self.query_one("#train-progress", ProgressBar).update(total=e.max_iters, progress=e.start_step)
            self.query_one("#train-step", Label).update(f"step {e.start_step:,} / {e.max_iters:,}")
            procs = f" · {e.world_size} processes" if e.world_size > 1 else ""
            self.stats.update(run=e.run_id, device=f"{e.device} · {e.dtype}{procs}", params=f"{e.params:,}")
            self._set_status("training")
            self.post_message(self.RunChanged(e.run_id, "running"))
        elif isinstance(e, ev.Step):
            self.query_one("#train-progress", ProgressBar).update(total=e.max_iters, progress=e.step)
            self.query_one("#train-step", Label).update(f"step {e.step:,} / {e.max_iters:,}")
            eta = f"ETA {human_duration(e.eta_seconds)}" if e.eta_seconds is not None else ""
            self.query_one("#train-eta", Label).update(f"{eta} · {human_duration(e.elapsed)} elapsed")
            plot.append("train", e.step, e.loss)
            self.stats.update(loss=loss_text(e.loss), lr=f"{e.lr:.2e}", speed=f"{e.tokens_per_sec:,.0f} tok/s",
                              memory=memory_text(e.memory))
        elif isinstance(e, ev.Eval):
            plot.append("val", e.step, e.val_loss)
            best = " (best)" if e.best else ""
            self.stats.update(val=f"{e.val_loss:.4f}{best}", bpb=f"{e.val_bpb:.4f}",
                              train_eval=f"{e.train_loss:.4f}")
        elif isinstance(e, ev.Sample):
            self.query_one("#train-sample-scroll").border_title = f"Sample at step {e.step:,}"
            self.query_one("#train-sample", Static).update(Text(e.text))
        elif isinstance(e, ev.Log):
            log = self.query_one("#train-log", RichLog)
            for line in e.line.splitlines() or [""]:
                log.write(log_text(line, e.kind))
        elif isinstance(e, ev.Finished):
            self._finished(e)
        self._show_stats()

    def _finished(self, e: ev.Finished) -> None:
        status = f"{e.status}: {e.reason}"
        self._set_status(status)
        if e.status in ("stopped", "completed") and e.run_id:
            self.resume_run = e.run_id if e.status == "stopped" else self.resume_run
            best = f", best val loss {e.best_val_loss:.4f}" if e.best_val_loss is not None else ""
            self.notify(f"Run {e.run_id} {e.status} at step {e.step:,}{best}.", title="Training")
        self.query_one("#train-eta", Label).update(f"{human_duration(e.duration)} in all")
        if e.run_id:
            self.post_message(self.RunChanged(e.run_id, e.status))
        self.update_inputs(self.corpus, self.config, self.problems)

    def _load_history(self, run_path: str, plot: LossPlot) -> None:
        """A resumed run continues its earlier curves."""
        try:
            records = Run(run_path).metrics()
        except (OSError, ValueError):
            return
        for record in records:
            if record.get("type") == "train" and "loss" in record:
                plot.append("train", record["step"], record["loss"])
            elif record.get("type") == "eval" and "val_loss" in record:
                plot.append("val", record["step"], record["val_loss"])

    def _reset_stats(self) -> None:
        self.stats = {"status": "idle"}
        self._show_stats()

    def _set_status(self, text: str) -> None:
        self.stats["status"] = text
        self._show_stats()

    def _show_stats(self) -> None:
        rows = [
            ("status", "status"), ("run", "run"), ("device", "device"), ("params", "params"),
            ("loss", "loss"), ("val loss", "val"), ("val bpb", "bpb"), ("lr", "lr"), ("speed", "speed"),
            ("memory", "memory"),
        ]
        text = Text()
        for label, key in rows:
            text.append(f"{label:<9}", style="bold")
            text.append(f"{self.stats.get(key, '—')}\n")
        self.query_one("#train-stats", Static).update(text)
