"""The Runs tab: every run in models/ (also those a CLI in another terminal is training), its settings, curves
and log; several runs marked to overlay their validation curves; open, resume, fine-tune, export, rename, delete.

Below 100 columns the table keeps the columns that tell runs apart (a shorter id, size, steps, bits per byte,
status, date, time) so it fits without a sideways scroll; the detail pane names the whole id and the rest."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import Button, DataTable, RichLog, Static, TabbedContent, TabPane

from gptui.core.config import config_to_dict
from gptui.core.errors import GptuiError
from gptui.core.finetune import fine_tune_source
from gptui.core.runs import Run, RunInfo, RunStore, log_lines, resume_mends
from gptui.core.workspace import Workspace
from gptui.tui.formatting import human_bytes, human_duration, human_number, log_text, loss_text
from gptui.tui.widgets.attention import AttentionScreen
from gptui.tui.widgets.loss_plot import LossPlot
from gptui.tui.widgets.modals import ConfirmModal, PathPromptModal, PickModal, TextPromptModal

POLL_SECONDS = 3.0  # how often models/ is looked at again, for runs started elsewhere
LOG_RECORDS = 2000  # the last log lines the Log pane shows (as many as it keeps)
LOG_CHARS = 100_000  # of train.log's end, for a run folder from before log lines were records

COLUMNS: list[tuple[str, str]] = [
    ("id", "run"), ("corpus", "corpus"), ("params", "params"), ("tokenizer", "tokenizer"), ("world_size", "procs"),
    ("steps", "steps"), ("best_val_loss", "val loss"), ("val_bpb", "val bpb"), ("status", "status"),
    ("created", "date"), ("duration", "time"),
]
ID_WIDTH = 30  # longer ids are cut in the table (the detail pane names the whole id), so 120 columns fit all
CORPUS_WIDTH = 12
NARROW_WIDTH = 100  # the app's -narrow breakpoint: below it the table keeps NARROW_COLUMNS
NARROW_COLUMNS = ("id", "params", "steps", "val_bpb", "status", "created", "duration")
NARROW_ID_WIDTH = 20  # and shows an id without its date-time stamp (the date column has it), so 80 columns fit
_STAMP = re.compile(r"^\d{8}-\d{6}-(?=.)")
MARK = "●"
RESUMABLE = ("stopped", "interrupted", "failed")


def _sort_key(column: str):
    def key(info: RunInfo) -> Any:
        value = getattr(info, column, None)
        # missing numbers sort last whichever the direction, as (flag, value) pairs
        return (value is None, value if value is not None else 0)

    return key


class RunsTab(Vertical):
    BINDINGS = [
        Binding("space", "mark", "Mark"),
        Binding("g", "generate", "Generate"),
        Binding("a", "attention", "Attention"),
        Binding("r", "resume", "Resume"),
        Binding("f", "fine_tune", "Fine-tune"),
        Binding("e", "export", "Export"),
        Binding("n", "rename", "Rename"),
        Binding("d,delete", "delete", "Delete"),
        Binding("s", "sort", "Sort"),
    ]

    class OpenInGenerate(Message):
        def __init__(self, run_id: str) -> None:
            super().__init__()
            self.run_id = run_id

    class ResumeInTrain(Message):
        def __init__(self, run_id: str) -> None:
            super().__init__()
            self.run_id = run_id

    class FineTuneInTrain(Message):
        """Fine-tune `run_id` on `corpus`: the Train tab gets ready to, with the run's `settings` in the form."""

        def __init__(self, run_id: str, corpus: str, settings: dict[str, Any]) -> None:
            super().__init__()
            self.run_id, self.corpus, self.settings = run_id, corpus, settings

    class _Exported(Message):
        def __init__(self, run_id: str, path: Path | None, error: str | None = None, hf_class: str = "") -> None:
            super().__init__()
            self.run_id, self.path, self.error, self.hf_class = run_id, path, error, hf_class

    class Listed(Message):
        """A fresh listing of models/ (the Generate tab uses it for its run picker)."""

        def __init__(self, infos: list[RunInfo]) -> None:
            super().__init__()
            self.infos = infos

    class _Detail(Message):
        def __init__(self, run_id: str, settings: Text, log: Text, series: dict[str, tuple[list, list]],
                     title: str) -> None:
            super().__init__()
            self.run_id, self.settings, self.log, self.series, self.title = run_id, settings, log, series, title

    def __init__(self, workspace: Workspace, *, id: str | None = None, poll: bool = True) -> None:
        super().__init__(id=id)
        self.workspace = workspace
        self.store = RunStore(workspace)
        self.infos: list[RunInfo] = []
        self.marked: set[str] = set()
        self.sort_column = "created"
        self.sort_reverse = True
        self.poll_enabled = poll
        self._detail_key: Any = None  # what the detail pane shows, to reload it only when that changes
        self._narrow: bool | None = None  # whether the table shows the narrow set of columns

    def compose(self) -> ComposeResult:
        # one space between columns instead of DataTable's two, so that every column fits in 120 cells
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True, cell_padding=0)
        with Horizontal(id="runs-actions"):
            yield Button("Generate", id="runs-generate", compact=True, variant="primary")
            yield Button("Resume", id="runs-resume", compact=True)
            yield Button("Fine-tune", id="runs-fine-tune", compact=True)
            yield Button("Export", id="runs-export", compact=True)
            yield Button("Rename", id="runs-rename", compact=True)
            yield Button("Delete", id="runs-delete", compact=True, variant="error")
            yield Static("space marks runs to overlay", id="runs-hint")
        with TabbedContent(id="runs-detail"):
            with TabPane("Curves", id="runs-curves"):
                yield LossPlot("select a run", id="runs-plot")
            with TabPane("Settings", id="runs-settings-pane"):
                with VerticalScroll():
                    yield Static(id="runs-settings")
            with TabPane("Log", id="runs-log-pane"):
                yield RichLog(id="runs-log", max_lines=2000, wrap=True, min_width=20)  # wrap at its own width

    def on_mount(self) -> None:
        self._set_columns()
        self.poll()
        if self.poll_enabled:
            self.set_interval(POLL_SECONDS, self.poll)

    @property
    def columns(self) -> list[tuple[str, str]]:
        """The (key, label) of each column the table shows at this width."""
        return [c for c in COLUMNS if not self._narrow or c[0] in NARROW_COLUMNS]

    def _set_columns(self) -> bool:
        """Lay the columns out for the terminal's width; True when that changed them."""
        narrow = self.app.size.width < NARROW_WIDTH
        if narrow == self._narrow:
            return False
        self._narrow = narrow
        table = self.query_one("#runs-table", DataTable)
        table.clear(columns=True)
        for key, label in self.columns:
            table.add_column(f"{label} ", key=key)
        return True

    def on_resize(self) -> None:
        if self._set_columns():
            self._fill_table()

    # --- listing ---------------------------------------------------------------------------------------------

    def poll(self) -> None:
        self._list_runs()

    @work(thread=True, exclusive=True, group="runs-list", exit_on_error=False)
    def _list_runs(self) -> None:
        try:
            infos = self.store.list()
        except OSError:
            return  # models/ vanished or is unreadable for a moment: try again at the next poll
        self.post_message(self.Listed(infos))

    def on_runs_tab_listed(self, message: Listed) -> None:
        # not stopped: the app hands the listing to the Generate tab too
        try:
            if message.infos != self.infos:
                self.infos = message.infos
                self.marked &= {i.id for i in self.infos}
                self._fill_table()
            self._show_detail()
        except NoMatches:
            pass  # a listing that arrives while the app quits finds the tab's widgets already taken down

    def _fill_table(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        current = self.current_id
        self._set_columns()
        table.clear()
        for info in sorted(self.infos, key=_sort_key(self.sort_column), reverse=self.sort_reverse):
            table.add_row(*self._cells(info), key=info.id)
        if current is not None and current in table.rows:
            table.move_cursor(row=table.get_row_index(current), animate=False)
        for key, label in self.columns:
            arrow = ("▼" if self.sort_reverse else "▲") if key == self.sort_column else ""
            table.columns[key].label = Text(f"{'  ' if key == 'id' else ''}{label}{arrow} ")

    def _cells(self, info: RunInfo) -> list[Any]:
        status = Text(info.status + " ", style={"running": "bold green", "damaged": "red", "failed": "red",
                                                "interrupted": "yellow"}.get(info.status, ""))
        mark = Text(f"{MARK} " if info.id in self.marked else "  ", style="bold")
        shown = _cut(_STAMP.sub("", info.id), NARROW_ID_WIDTH) if self._narrow else _cut(info.id, ID_WIDTH)
        cells = {
            "id": mark + shown + " ", "corpus": _cut(info.corpus, CORPUS_WIDTH) + " ",
            "params": (human_number(info.params) if info.params else "—") + " ", "tokenizer": info.tokenizer + " ",
            "world_size": f"{info.world_size} ", "steps": f"{info.steps:,} ",
            "best_val_loss": loss_text(info.best_val_loss) + " ", "val_bpb": loss_text(info.val_bpb) + " ",
            "status": status, "created": _short_date(info.created) + " ", "duration": human_duration(info.duration),
        }
        return [cells[key] for key, _ in self.columns]

    @property
    def current_id(self) -> str | None:
        table = self.query_one("#runs-table", DataTable)
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # cursor past the end after rows were removed
            return None

    def info(self, run_id: str | None) -> RunInfo | None:
        return next((i for i in self.infos if i.id == run_id), None)

    @on(DataTable.RowHighlighted, "#runs-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_detail()

    @on(DataTable.HeaderSelected, "#runs-table")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        column = str(event.column_key.value)
        self.sort_reverse = not self.sort_reverse if column == self.sort_column else column in (
            "created", "steps", "params", "duration", "world_size")
        self.sort_column = column
        self._fill_table()

    def action_sort(self) -> None:
        """Cycle the sort through the columns (a click on a header does the same for that column)."""
        keys = [k for k, _ in self.columns]
        at = keys.index(self.sort_column) if self.sort_column in keys else -1
        self.sort_column = keys[(at + 1) % len(keys)]
        self.sort_reverse = self.sort_column in ("created", "steps", "params", "duration", "world_size")
        self._fill_table()
        self.notify(f"sorted by {dict(COLUMNS)[self.sort_column]}", timeout=1.5)

    # --- detail: settings, curves, log -------------------------------------------------------------------

    def _show_detail(self) -> None:
        run_id = self.current_id
        info = self.info(run_id)
        key = (run_id, info.steps if info else None, info.status if info else None, tuple(sorted(self.marked)))
        if key == self._detail_key:
            return
        self._detail_key = key
        if run_id is None:
            self.query_one("#runs-plot", LossPlot).clear("no runs yet: train one on the Train tab")
            self.query_one("#runs-settings", Static).update("")
            self.query_one("#runs-log", RichLog).clear()
            return
        self._load_detail(run_id, sorted(self.marked))

    @work(thread=True, exclusive=True, group="runs-detail", exit_on_error=False)
    def _load_detail(self, run_id: str, marked: list[str]) -> None:
        run = Run(self.store.root / run_id)
        metrics = _metrics(run)
        try:
            config = run.read_config()
        except (OSError, ValueError):
            config = {}
        settings = _settings_text(run_id, config if isinstance(config, dict) else {}, run.read_state())
        series: dict[str, tuple[list, list]] = {}
        if marked:
            title = f"validation bits per byte of {len(marked)} marked run{'s' if len(marked) > 1 else ''}"
            for other in marked:
                others = metrics if other == run_id else _metrics(Run(self.store.root / other))
                evals = [m for m in others if m.get("type") == "eval"]
                series[other[-24:]] = ([m["step"] for m in evals], [m.get("val_bpb", m["val_loss"]) for m in evals])
        else:
            title = f"loss of {run_id}"
            train = [m for m in metrics if m.get("type") == "train" and "loss" in m]
            evals = [m for m in metrics if m.get("type") == "eval" and "val_loss" in m]
            series["train"] = ([m["step"] for m in train], [m["loss"] for m in train])
            series["val"] = ([m["step"] for m in evals], [m["val_loss"] for m in evals])
        self.post_message(self._Detail(run_id, settings, _log_text(run, metrics), series, title))

    @on(_Detail)
    def _detail(self, message: _Detail) -> None:
        try:
            plot = self.query_one("#runs-plot", LossPlot)
            settings = self.query_one("#runs-settings", Static)
            log = self.query_one("#runs-log", RichLog)
        except NoMatches:
            return  # the app quit while the worker read the run: its widgets are being taken down
        plot.clear(message.title)
        for name, (xs, ys) in message.series.items():
            plot.set_series(name, xs, ys)
        settings.update(message.settings)
        log.clear()
        log.write(message.log)

    # --- actions ---------------------------------------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        action = {"runs-generate": self.action_generate, "runs-resume": self.action_resume,
                  "runs-fine-tune": self.action_fine_tune, "runs-export": self.action_export,
                  "runs-rename": self.action_rename, "runs-delete": self.action_delete}.get(event.button.id or "")
        if action:
            action()

    def _current_or_warn(self) -> RunInfo | None:
        info = self.info(self.current_id)
        if info is None:
            self.notify("No run selected.", severity="warning")
        return info

    def action_mark(self) -> None:
        info = self._current_or_warn()
        if info is None:
            return
        self.marked ^= {info.id}
        table = self.query_one("#runs-table", DataTable)
        table.update_cell(info.id, "id", self._cells(info)[0])
        self._show_detail()

    def action_generate(self) -> None:
        info = self._current_or_warn()
        if info is not None:
            self.post_message(self.OpenInGenerate(info.id))

    def action_attention(self) -> None:
        info = self._current_or_warn()
        if info is None:
            return
        if info.damaged or not info.has_weights:
            self.notify(f"Run {info.id} has no saved weights to look into yet.", severity="warning")
            return
        self.app.push_screen(AttentionScreen(self.workspace, info.id))

    def action_resume(self) -> None:
        info = self._current_or_warn()
        if info is None:
            return
        mends = info.status == "damaged" and resume_mends(Run(Path(info.path)))  # rebuilt from its checkpoint
        if info.status not in RESUMABLE and not mends:
            why = "it is still training" if info.status == "running" else f"it is {info.status}"
            if info.damaged:
                why += f" ({info.damaged})"
            self.notify(f"Cannot resume {info.id}: {why}.", severity="warning")
            return
        self.post_message(self.ResumeInTrain(info.id))

    def action_fine_tune(self) -> None:
        """Ask for a corpus, then have the Train tab fine-tune this run on it (its weights and tokenizer)."""
        info = self._current_or_warn()
        if info is None:
            return
        try:
            source = fine_tune_source(self.store.resolve(info.id))
        except (GptuiError, OSError) as exc:
            self.notify(str(exc), severity="error", title="Cannot fine-tune")
            return
        corpora = [c for c in self.workspace.corpora() if c.error is None]
        if not corpora:
            self.notify("No corpus to fine-tune on: add a text file on the Corpus tab.", severity="warning")
            return
        names = [c.name for c in corpora]  # two corpora of one name (notes.txt, notes.jsonl) go by their entries
        keys = [c.name if names.count(c.name) == 1 else c.file_name for c in corpora]
        choices = [(key, f"{key}  ({human_bytes(c.bytes)})") for key, c in zip(keys, corpora, strict=True)]
        settings = config_to_dict(source.config)

        def picked(corpus: str | None) -> None:
            if corpus:
                self.post_message(self.FineTuneInTrain(info.id, corpus, settings))

        self.app.push_screen(
            PickModal(f"Fine-tune {info.id} on which corpus? It keeps the run's model and tokenizer.", choices,
                      ok="Fine-tune", value=info.corpus),
            picked,
        )

    def action_export(self) -> None:
        from gptui.core.export import export_target_problem  # not at start-up: it brings numpy

        info = self._current_or_warn()
        if info is None:
            return

        def on_path(path: Path | None) -> None:
            if path is not None:
                self.notify(f"Exporting {info.id}…", timeout=3)
                self._export(info.id, path)

        self.app.push_screen(
            PathPromptModal(f"Export {info.id} as a Hugging Face transformers folder to:",
                            str(self.workspace.home / "exports" / f"{info.id}-hf"), ok="Export",
                            check=export_target_problem),
            on_path,
        )

    @work(thread=True, group="runs-export", exit_on_error=False)
    def _export(self, run_id: str, path: Path) -> None:
        # a thread: the export loads torch and reads the weights
        from gptui.core.export import export_run, exported_class

        try:
            run = self.store.resolve(run_id)
            written = export_run(run, path, "hf")
            hf_class = exported_class(written)
        except GptuiError as exc:
            self.post_message(self._Exported(run_id, None, str(exc)))
        except OSError as exc:
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            self.post_message(self._Exported(run_id, None, f"{exc.strerror or exc}{where}"))
        except Exception as exc:  # never a traceback on screen
            self.post_message(self._Exported(run_id, None, f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(self._Exported(run_id, written, hf_class=hf_class))

    @on(_Exported)
    def _exported(self, message: _Exported) -> None:
        if message.error is not None:
            self.notify(message.error, severity="error", title="Cannot export")
        else:
            self.notify(f"Exported {message.run_id} to {message.path} ({message.hf_class})", title="Export",
                        timeout=8)

    def action_rename(self) -> None:
        info = self._current_or_warn()
        if info is None:
            return

        def renamed(name: str | None) -> None:
            if not name:
                return
            try:
                run = self.store.rename(self.store.resolve(info.id), name)
            except (GptuiError, OSError) as exc:
                self.notify(str(exc), severity="error", title="Cannot rename")
                return
            self.notify(f"Renamed to {run.id}.")
            self.poll()

        self.app.push_screen(TextPromptModal(f"New name for {info.id}:", info.id, ok="Rename"), renamed)

    def action_delete(self) -> None:
        info = self._current_or_warn()
        if info is None:
            return

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.store.delete(self.store.resolve(info.id))
            except (GptuiError, OSError) as exc:
                self.notify(str(exc), severity="error", title="Cannot delete")
                return
            self.marked.discard(info.id)
            self.notify(f"Deleted {info.id}.")
            self.poll()

        self.app.push_screen(
            ConfirmModal(f"Delete run {info.id}?\nIts weights, checkpoint, log and generations are removed for good.",
                         yes="Delete", danger=True),
            confirmed,
        )


def _cut(text: str, width: int) -> Text:
    return Text(text if len(text) <= width else text[: width - 1] + "…")


def _short_date(created: str) -> str:
    """'2024-01-02T03:04:05' -> '01-02 03:04' (the year is in the Settings pane)."""
    return created[5:16].replace("T", " ") if len(created) >= 16 else created


def _metrics(run: Run) -> list[dict]:
    try:
        return run.metrics()
    except (OSError, ValueError):
        return []


def _log_text(run: Run, metrics: list[dict]) -> Text:
    """The run's log as its train.log reads, each line styled by its record's kind as the Train tab shows it; a run
    folder written before log lines were records shows train.log's text as it is."""
    records = [m for m in metrics if m.get("type") == "log" and isinstance(m.get("line"), str)]
    if not records:
        return Text(run.read_log()[-LOG_CHARS:])
    text = Text()
    for record in records[-LOG_RECORDS:]:
        when = record.get("time")
        for line in log_lines(record["line"], when if isinstance(when, int | float) else None):
            text.append_text(log_text(line + "\n", record.get("kind", "info")))
    text.rstrip()
    return text


def _settings_text(run_id: str, config: dict[str, Any], state: dict[str, Any]) -> Text:
    text = Text()
    best, bpb = state.get("best_val_loss"), state.get("best_val_bpb")
    facts = {
        "run": run_id, "fine-tuned from": config.get("init_from"),
        "corpus": config.get("corpus"), "parameters": f"{config['params']:,}" if config.get("params") else None,
        "vocabulary": config.get("vocab_size"), "processes": config.get("world_size", 1 if config else None),
        "created": config.get("created"),
        "status": state.get("status"), "steps": state.get("step"), "stop reason": state.get("stop_reason"),
        "best val loss": loss_text(best) if isinstance(best, (int, float)) else None,
        "val bpb": loss_text(bpb) if isinstance(bpb, (int, float)) else None,
        "error": state.get("error"), "gptui": config.get("gptui_version"), "torch": config.get("torch_version"),
    }
    for key, value in facts.items():
        if value is not None:
            text.append(f"{key:<16}", style="bold")
            text.append(f"{value}\n")
    settings = config.get("settings")
    if isinstance(settings, dict):
        text.append("\nsettings\n", style="bold underline")
        for key, value in settings.items():
            text.append(f"  {key:<16}", style="bold")
            text.append(f"{json.dumps(value) if isinstance(value, str) else value}\n")
    return text
