"""The Corpus tab: the corpora in inputs/ (every kind), a preview, adding one by path, the tokenizer settings and
Prepare (with Cancel)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Static
from textual.worker import get_current_worker

from gptui.core.config import SETTINGS, SETTINGS_BY_NAME
from gptui.core.corpus import KIND_NAMES
from gptui.core.errors import GptuiError
from gptui.core.workspace import SAMPLE_CORPUS, CorpusInfo, Workspace
from gptui.tui.formatting import human_bytes
from gptui.tui.widgets.setting_field import SettingField

if TYPE_CHECKING:
    from gptui.core.data import TokenizerSpec

# the "Data and tokenizer" group: everything preparing a corpus reads (where its text is, how it is cut into tokens)
TOKENIZER_SETTINGS = tuple(s.name for s in SETTINGS if s.group == "data")
PREVIEW_BYTES = 6000


class CorpusTab(Vertical):
    """Posts `Selected` when the highlighted corpus changes and `TokenizerChanged` when its settings change."""

    class Selected(Message):
        def __init__(self, name: str | None) -> None:
            super().__init__()
            self.name = name

    class TokenizerChanged(Message):
        def __init__(self, values: dict[str, Any]) -> None:
            super().__init__()
            self.values = values

    class _CacheStatus(Message):
        def __init__(self, status: dict[str, bool]) -> None:
            super().__init__()
            self.status = status

    class _PrepareProgress(Message):
        def __init__(self, stage: str, fraction: float | None) -> None:
            super().__init__()
            self.stage, self.fraction = stage, fraction

    class _Prepared(Message):
        def __init__(self, text: str, error: bool = False) -> None:
            super().__init__()
            self.text, self.error = text, error

    BINDINGS = [Binding("t", "tokens", "Tokens", tooltip="The selected corpus's tokens, its characters and bytes "
                        "per token, and the tokenizer's vocabulary")]

    def __init__(self, workspace: Workspace, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.workspace = workspace
        self.corpus: str | None = None
        self.infos: dict[str, CorpusInfo] = {}
        self.cache: dict[str, bool] = {}
        self._cancel_prepare = threading.Event()

    def compose(self) -> ComposeResult:
        table: DataTable = DataTable(id="corpus-table", cursor_type="row", zebra_stripes=True)
        table.add_column("corpus", key="name")
        table.add_column("kind", key="kind")
        table.add_column("size", key="size")
        table.add_column("documents", key="documents")
        table.add_column("files", key="files")
        table.add_column("tokenized", key="cache")
        yield table
        with Horizontal(id="corpus-add"):
            yield Label("Add a corpus", classes="inline-label")
            yield Input(placeholder="path of a text, .jsonl or .parquet file or a folder, then Enter",
                        id="corpus-path", compact=True)
            yield Button("Add", id="corpus-add-button", compact=True)
        with Horizontal(id="corpus-bottom"):
            with Vertical(id="corpus-tokenizer-box"):
                yield Static("Tokenizer", classes="group-title")
                for name in TOKENIZER_SETTINGS:
                    setting = SETTINGS_BY_NAME[name]
                    yield SettingField(setting, setting.default, id_prefix="corpus-set")
                with Horizontal(id="prepare-row"):
                    yield Button("Prepare", id="prepare", compact=True, variant="primary")
                    yield Button("Cancel", id="prepare-cancel", compact=True, disabled=True)
                    yield Button("Tokens", id="corpus-tokens", compact=True)
                    yield ProgressBar(id="prepare-progress", total=100, show_eta=False)
                yield Static("Prepare trains the tokenizer and encodes the text (cached).", id="prepare-status")
            with Vertical(id="corpus-preview-box"):
                yield Label("Preview", classes="group-title", id="corpus-preview-title")
                with VerticalScroll(id="corpus-preview-scroll"):
                    yield Static(id="corpus-preview")

    def on_mount(self) -> None:
        self.reload(select=None)

    # --- listing ---------------------------------------------------------------------------------------------

    def reload(self, select: str | None = None) -> None:
        """Re-read inputs/; highlight `select`, else the current corpus, else the sample, else the first."""
        table = self.query_one("#corpus-table", DataTable)
        infos = self.workspace.corpora()
        names = [i.name for i in infos]
        # a corpus goes by its name; two of one name (notes.txt, notes.jsonl) by their entries in inputs/
        self.infos = {(i.name if names.count(i.name) == 1 else i.file_name): i for i in infos}
        table.clear()
        for key, info in self.infos.items():
            table.add_row(
                key, KIND_NAMES.get(info.kind, info.kind), human_bytes(info.bytes),
                "?" if info.documents is None else f"{info.documents:,}", f"{info.files:,}",
                self._cache_text(key), key=key,
            )
        infos = list(self.infos.values())
        wanted = select or self.corpus or Path(SAMPLE_CORPUS).stem
        if wanted not in self.infos and infos:
            wanted = next(iter(self.infos))
        if wanted in self.infos:
            table.move_cursor(row=table.get_row_index(wanted))
            self._select(wanted)
        else:
            self._select(None)
        self.refresh_cache_status()

    def _cache_text(self, name: str) -> str:
        info = self.infos.get(name)
        if info is not None and info.error:
            return info.error
        if name not in self.cache:
            return "…"
        return "cached" if self.cache[name] else "no"

    @on(DataTable.RowHighlighted, "#corpus-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value is not None:
            self._select(event.row_key.value)

    def _select(self, name: str | None) -> None:
        if name == self.corpus:
            return
        self.corpus = name
        self._show_preview()
        self.post_message(self.Selected(name))

    def _show_preview(self) -> None:
        preview = self.query_one("#corpus-preview", Static)
        title = self.query_one("#corpus-preview-title", Label)
        info = self.infos.get(self.corpus or "")
        if info is None:
            title.update("Preview")
            preview.update("No corpus: add a text file, a folder, a .jsonl or a .parquet file above.")
            return
        title.update(f"Preview of {info.path.name}{'/' if info.path.is_dir() else ''}")
        from gptui.core.corpus import preview as corpus_preview

        preview.update(Text(corpus_preview(info.path, self._text_field(), PREVIEW_BYTES)))

    def _text_field(self) -> str:
        raw = str(self.query_one("#corpus-set-text_field", SettingField).raw).strip()
        return raw or SETTINGS_BY_NAME["text_field"].default

    # --- tokenizer settings (mirrored with the Model tab through the app) ---------------------------------

    def tokenizer_values(self) -> dict[str, Any]:
        return {name: self.query_one(f"#corpus-set-{name}", SettingField).raw for name in TOKENIZER_SETTINGS}

    def set_tokenizer_values(self, values: dict[str, Any]) -> None:
        """Mirror the Model form; only changed fields are touched, so mirroring stops after one round."""
        changed = False
        for name in TOKENIZER_SETTINGS:
            if name in values:
                field = self.query_one(f"#corpus-set-{name}", SettingField)
                if field.raw != values[name]:
                    field.raw = values[name]
                    changed = True
        if changed:
            self.refresh_cache_status()

    def on_setting_field_changed(self, event: SettingField.Changed) -> None:
        event.stop()
        self.post_message(self.TokenizerChanged(self.tokenizer_values()))
        self.refresh_cache_status()

    def _spec(self) -> TokenizerSpec:
        return _spec_of(self.tokenizer_values())

    # --- cache status and Prepare (threads: they hash and tokenize files) ----------------------------------

    def refresh_cache_status(self) -> None:
        self._check_cache(self.tokenizer_values(), {k: i.path for k, i in self.infos.items() if not i.error},
                          self._text_field())

    @work(thread=True, exclusive=True, group="corpus-cache", exit_on_error=False)
    def _check_cache(self, values: dict[str, Any], paths: dict[str, Path], text_field: str) -> None:
        # the spec is made here too: gptui.core.data brings numpy, which the first frame need not wait for
        from gptui.core.data import cache_status

        try:
            spec = _spec_of(values)
        except (GptuiError, ValueError):
            return  # a half-typed vocabulary size: the field already says why
        worker = get_current_worker()
        cancelled = _WorkerCancelled(worker)  # a newer check stops this one mid-way through a large corpus
        status = {}
        for key, path in paths.items():
            if worker.is_cancelled:
                return
            status[key] = cache_status(self.workspace.cache, path, spec, text_field, cancel=cancelled)
        if not worker.is_cancelled:
            self.post_message(self._CacheStatus(status))

    def on_corpus_tab__cache_status(self, event: _CacheStatus) -> None:
        self.cache = event.status
        table = self.query_one("#corpus-table", DataTable)
        for name in self.infos:
            if name in table.rows:
                table.update_cell(name, "cache", self._cache_text(name))

    def _selected_spec(self) -> TokenizerSpec | None:
        """The tokenizer settings for the selected corpus; None (and a notification) without a corpus or with
        settings that do not make a tokenizer."""
        if self.corpus is None:
            self.notify("Select a corpus first.", severity="warning")
            return None
        try:
            return self._spec()
        except (GptuiError, ValueError) as exc:
            self.notify(f"Fix the tokenizer settings first: {exc}", severity="error")
            return None

    @on(Button.Pressed, "#prepare")
    def action_prepare(self) -> None:
        spec = self._selected_spec()
        if spec is None:
            return
        self.query_one("#prepare", Button).disabled = True
        self.query_one("#prepare-cancel", Button).disabled = False
        self.query_one("#prepare-progress", ProgressBar).update(total=None, progress=0)
        self._cancel_prepare = threading.Event()
        self._prepare(self.infos[self.corpus].path, spec, self._text_field(), self._cancel_prepare)

    @on(Button.Pressed, "#corpus-tokens")
    def action_tokens(self) -> None:
        """The Tokens view of the selected corpus, with its tokenizer settings' prepared cache (or a run's)."""
        from gptui.tui.widgets.tokens import TokensScreen

        spec = self._selected_spec()
        if spec is None:
            return
        self.app.push_screen(TokensScreen(self.workspace, self.corpus, self.infos[self.corpus].path, spec,
                                          self._text_field()))

    @on(Button.Pressed, "#prepare-cancel")
    def cancel_prepare(self) -> None:
        self._cancel_prepare.set()
        self.query_one("#prepare-cancel", Button).disabled = True
        self.query_one("#prepare-status", Static).update(Text("cancelling…"))

    @work(thread=True, exclusive=True, group="corpus-prepare", exit_on_error=False)
    def _prepare(self, path: Path, spec, text_field: str, cancel: threading.Event) -> None:
        from gptui.core.data import prepare

        try:
            data = prepare(path, spec, self.workspace.cache,
                           progress=lambda stage, frac: self.post_message(self._PrepareProgress(stage, frac)),
                           text_field=text_field, cancel=cancel)
        except GptuiError as exc:
            if cancel.is_set():
                self.post_message(self._Prepared("cancelled: nothing was cached", error=True))
                return
            self.post_message(self._Prepared(str(exc), error=True))
            return
        except Exception as exc:  # shown, never a traceback
            self.post_message(self._Prepared(f"{type(exc).__name__}: {exc}", error=True))
            return
        how = "served from cache" if data.cached else (
            f"hashing {data.seconds.get('hash', 0):.1f}s, tokenizer {data.seconds.get('train_tokenizer', 0):.1f}s, "
            f"encoding {data.seconds.get('encode', 0):.1f}s"
        )
        skipped = f", {data.skipped_text()}" if data.skipped else ""
        self.post_message(self._Prepared(
            f"{path.name}: {data.documents:,} documents, {len(data.tokens):,} tokens, "
            f"{data.tokenizer.describe()}{skipped}; {how}"
        ))

    def on_corpus_tab__prepare_progress(self, event: _PrepareProgress) -> None:
        bar = self.query_one("#prepare-progress", ProgressBar)
        if event.fraction is None:
            bar.update(total=None)
        else:
            bar.update(total=100, progress=100 * event.fraction)
        self.query_one("#prepare-status", Static).update(Text(event.stage))

    def on_corpus_tab__prepared(self, event: _Prepared) -> None:
        self.query_one("#prepare", Button).disabled = False
        self.query_one("#prepare-cancel", Button).disabled = True
        bar = self.query_one("#prepare-progress", ProgressBar)
        bar.update(total=100, progress=0 if event.error else 100)
        self.query_one("#prepare-status", Static).update(Text(("✗ " if event.error else "✓ ") + event.text))
        if event.error and not self._cancel_prepare.is_set():
            self.notify(event.text, severity="error", title="Prepare failed")
        self.refresh_cache_status()

    # --- adding a corpus -----------------------------------------------------------------------------------

    @on(Input.Submitted, "#corpus-path")
    @on(Button.Pressed, "#corpus-add-button")
    def add_file(self) -> None:
        field = self.query_one("#corpus-path", Input)
        raw = field.value.strip()
        if not raw:
            self.notify("Type the path of a text file, a folder, a .jsonl or a .parquet file to add.",
                        severity="warning")
            return
        try:
            dest = self.workspace.add_corpus(raw)
        except GptuiError as exc:
            self.notify(str(exc), severity="error", title="Cannot add corpus")
            return
        except OSError as exc:
            self.notify(f"{raw}: {exc.strerror or exc}", severity="error", title="Cannot add corpus")
            return
        field.value = ""
        how = "linked into" if dest.is_symlink() else "copied to"
        self.notify(f"Added {dest.name}: {how} inputs/ (checked when it is prepared).")
        self.reload(select=None)
        key = next((k for k, i in self.infos.items() if i.path == dest), None)
        if key is not None:
            self.reload(select=key)


class _WorkerCancelled:
    """A worker's cancellation, seen as the event the engine's long passes poll."""

    def __init__(self, worker) -> None:
        self.worker = worker

    def is_set(self) -> bool:
        return self.worker.is_cancelled


def _spec_of(values: dict[str, Any]) -> TokenizerSpec:
    """The tokenizer the Corpus tab's settings describe (GptuiError or ValueError for settings that make none)."""
    from gptui.core.config import Config, apply_overrides
    from gptui.core.data import TokenizerSpec

    return TokenizerSpec.from_config(apply_overrides(Config(), values))
