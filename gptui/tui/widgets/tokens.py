"""The Tokens view: what the tokenizer makes of text, as in the tokenization lecture and the tiktokenizer app.

A passage of the prepared corpus (its own tokens.bin, so exactly what training sees), or a text you type, with
each token's span in alternating colours; the id, text and bytes of the token under the cursor (arrows or the
mouse); the corpus's characters and bytes per token; and the vocabulary by length, by frequency or by search.
Opened from the Corpus tab (t). The tokenizer is the selected corpus's prepared one, or a run's; the numbers
come from `gptui.core.vocabulary`, computed in a worker thread."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.cells import cell_len
from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, ScrollableContainer, Vertical
from textual.geometry import Region
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input, Label, Select, Static, TextArea
from textual.worker import get_current_worker

from gptui.core import vocabulary
from gptui.core.errors import GptuiError
from gptui.core.tokenizer import Tokenizer
from gptui.core.workspace import Workspace
from gptui.tui.tabs.corpus import _WorkerCancelled
from gptui.tui.widgets.token_style import quoted, visible

if TYPE_CHECKING:
    from gptui.core.data import TokenizerSpec

PASSAGE_TOKENS = 400  # a screenful or two of text; n moves on by as many
VOCAB_ROWS = 200  # rows the vocabulary list holds
TOKEN_CELL = 14  # characters of a token the vocabulary list shows (the cursor line shows it whole)
CORPUS = "corpus"  # the source value of the Corpus tab's tokenizer settings (runs go by their ids)
CACHED = "cache:"  # the source values of the other cache entries of the corpus, by their keys
# Alternating token backgrounds with white text: distinct from each other, readable on dark and light themes.
SPAN_COLOURS = [Style(bgcolor=Color.from_rgb(*rgb), color="white")
                for rgb in ((38, 76, 120), (112, 52, 96), (36, 100, 72), (120, 80, 30))]
END_OF_TEXT = Style(color="bright_black", italic=True)
CURSOR = Style(reverse=True, bold=True)


def shown(span: str, token_id: int, eot_id: int | None) -> str:
    """A span as drawn: whitespace other than spaces as symbols (a newline keeps its line break after ↵), the
    end-of-text token by its name, and the first token of a character split across tokens as a dot."""
    if token_id == eot_id:
        return "⟨endoftext⟩"
    if not span:
        return "·"
    return "".join("↵\n" if c == "\n" else c if c == " " else visible(c) for c in span)


@dataclass
class _Layout:
    width: int
    lines: list[list[tuple[str, int]]]  # each screen line: its pieces, each with the token it belongs to
    starts: list[tuple[int, int]]  # each token's first cell: (line, column)


class TokenText(Widget, can_focus=True):
    """Tokens laid out as wrapped text, one colour per token in turn, with a token cursor."""

    DEFAULT_CSS = """
    TokenText { height: auto; link-style: none; }
    TokenText:focus { background-tint: $foreground 3%; }
    """

    BINDINGS = [
        Binding("left", "move(-1)", "Token", show=False),
        Binding("right", "move(1)", "Token", show=False),
        Binding("up", "line(-1)", "Line", show=False),
        Binding("down", "line(1)", "Line", show=False),
        Binding("home", "jump(0)", show=False),
        Binding("end", "jump(-1)", show=False),
    ]

    class Moved(Message):
        """The cursor moved to another token."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.ids: list[int] = []
        self.spans: list[str] = []
        self.eot_id: int | None = None
        self.cursor = 0
        self.message = ""
        self._layout: _Layout | None = None

    def show(self, ids: list[int], spans: list[str], eot_id: int | None) -> None:
        self.ids, self.spans, self.eot_id, self.message = ids, spans, eot_id, ""
        self.cursor = 0
        self._layout = None
        self.refresh(layout=True)
        self.post_message(self.Moved())

    def show_message(self, message: str) -> None:
        self.ids, self.spans, self.message, self.cursor = [], [], message, 0
        self._layout = None
        self.refresh(layout=True)
        self.post_message(self.Moved())

    def layout(self, width: int) -> _Layout:
        """Wrap the drawn tokens at `width` cells, a character at a time (a token may straddle two lines)."""
        width = max(4, width)
        if self._layout is not None and self._layout.width == width:
            return self._layout
        lines: list[list[tuple[str, int]]] = [[]]
        starts: list[tuple[int, int]] = []
        x = 0
        for k, (span, token_id) in enumerate(zip(self.spans, self.ids, strict=True)):
            piece = shown(span, token_id, self.eot_id)
            head = cell_len(piece.split("\n", 1)[0])
            if 0 < x and x + head > width >= head:  # a token that fits on a line is not cut in two
                lines.append([])
                x = 0
            for n, char in enumerate(piece):
                if char == "\n":
                    lines.append([])
                    x = 0
                    continue
                w = cell_len(char)
                if x + w > width:
                    lines.append([])
                    x = 0
                if n == 0:
                    starts.append((len(lines) - 1, x))
                lines[-1].append((char, k))
                x += w
        self._layout = _Layout(width, lines, starts)
        return self._layout

    def get_content_height(self, container, viewport, width: int) -> int:
        if not self.ids:
            return max(1, len(Text(self.message).wrap(self.app.console, max(4, width))))
        return len(self.layout(width).lines)

    def on_resize(self) -> None:
        self._layout = None

    def render(self) -> Text:
        if not self.ids:
            return Text(self.message, style="italic")
        text = Text(no_wrap=True)
        cursor = self.cursor if self.has_focus else -1
        for n, line in enumerate(self.layout(self.size.width).lines):
            if n:
                text.append("\n")
            for char, k in line:
                style = END_OF_TEXT if self.ids[k] == self.eot_id else SPAN_COLOURS[k % len(SPAN_COLOURS)]
                if k == cursor:
                    style += CURSOR
                text.append(char, style=style + Style.from_meta({"@click": f"pick({k})"}))
        return text

    def action_pick(self, k: int) -> None:
        self.cursor = k
        self.focus()
        self._moved()

    def action_move(self, step: int) -> None:
        if self.ids:
            self.cursor = min(len(self.ids) - 1, max(0, self.cursor + step))
            self._moved()

    def action_jump(self, k: int) -> None:
        if self.ids:
            self.cursor = k % len(self.ids)
            self._moved()

    def action_line(self, step: int) -> None:
        """The token on the next line with a token starting on it (up or down), at about the same column."""
        if not self.ids:
            return
        starts = self.layout(self.size.width).starts
        line, column = starts[self.cursor]
        lines = sorted({ln for ln, _ in starts})
        later = [ln for ln in lines if (ln - line) * step > 0]
        if not later:
            return
        target = min(later, key=lambda ln: abs(ln - line))
        on_line = [k for k, (ln, _) in enumerate(starts) if ln == target]
        before = [k for k in on_line if starts[k][1] <= column]
        self.cursor = before[-1] if before else on_line[0]
        self._moved()

    def _moved(self) -> None:
        self.refresh()
        if self.ids:
            line, column = self.layout(self.size.width).starts[self.cursor]
            self.scroll_to_region(Region(column, line, 2, 1), animate=False)
        self.post_message(self.Moved())

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


class TokensScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("ctrl+e", "edit", "Text/tokens", priority=True),  # over the text area's end of line
        Binding("n", "passage(1)", "Next"),
        Binding("p", "passage(-1)", "Prev"),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("s", "source", "Tokenizer"),
        Binding("l", "order('longest')", "Longest"),
        Binding("f", "order('frequent')", "Frequent"),
    ]

    class _Loaded(Message):
        def __init__(self, tokenizer: Tokenizer | None, tokens: np.ndarray | None, counts: np.ndarray | None,
                     stats: vocabulary.CorpusStats | None, documents: int, note: str) -> None:
            super().__init__()
            self.tokenizer, self.tokens, self.counts, self.stats = tokenizer, tokens, counts, stats
            self.documents, self.note = documents, note

    class _Failed(Message):
        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    class _Prepared(Message):
        """The keys of the other cache entries of the corpus (other tokenizers it is prepared with)."""

        def __init__(self, keys: list[str]) -> None:
            super().__init__()
            self.keys = keys

    def __init__(self, workspace: Workspace, corpus: str, path: Path, spec: TokenizerSpec,
                 text_field: str = "text") -> None:
        super().__init__()
        self.workspace, self.corpus, self.path, self.spec, self.text_field = workspace, corpus, path, spec, text_field
        self.source = CORPUS
        self.tokenizer: Tokenizer | None = None
        self.tokens: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        self.stats: vocabulary.CorpusStats | None = None
        self.start = 0  # the passage's first token
        self.typed: str | None = None  # the text typed in, shown instead of a passage
        self.order = "longest"  # the vocabulary list: longest, frequent, or search
        self._refused = ""  # the last reason the typed text could not be tokenized, notified once
        self.note = ""  # why there is no passage (the corpus is not prepared with this tokenizer)
        self.documents = 0
        self.sources: list[tuple[str, str]] = []  # what the tokenizer menu offers: (label, source)

    def compose(self) -> ComposeResult:
        with Horizontal(id="tok-title-row"):
            yield Static(f"Tokens · {self.corpus}", id="tok-title")
            self.sources = self._sources()
            yield Select(self.sources, value=CORPUS, allow_blank=False, id="tok-source", compact=True)
        with Horizontal(id="tok-input-row"):
            yield Label("text")
            yield TextArea(id="tok-text", compact=True, soft_wrap=True,
                           placeholder="type a text to see its tokens as you type (empty: the corpus again)")
        with Horizontal(id="tok-middle"):
            with ScrollableContainer(id="tok-scroll", can_focus=False):
                yield TokenText(id="tok-tokens")
            with Vertical(id="tok-vocab-box"):
                yield Input(placeholder="search the vocabulary (text or id)", id="tok-search", compact=True)
                yield DataTable(id="tok-vocab", cursor_type="row", zebra_stripes=True)
        yield Static("", id="tok-cursor")
        yield Static("", id="tok-stats")
        yield Footer()

    def _sources(self) -> list[tuple[str, str]]:
        from gptui.core.runs import RunStore

        runs = [r.id for r in RunStore(self.workspace).runs() if r.file("tokenizer.json").is_file()]
        return [(f"{self.corpus} (tab settings)", CORPUS)] + [(f"run {r}", r) for r in runs]

    def on_mount(self) -> None:
        table = self.query_one("#tok-vocab", DataTable)
        table.add_column("id", key="id")
        table.add_column("token", key="token")
        table.add_column("count", key="count")
        table.add_column("bytes", key="bytes")
        self.query_one(TokenText).show_message("reading the prepared corpus…")
        self.query_one(TokenText).focus()
        self._load(self.source)

    # --- the tokenizer and its corpus (a thread: it hashes the corpus and counts its tokens) ---------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="tokens")
    def _load(self, source: str) -> None:
        from gptui.core.data import cache_entries, tokenizer_key
        from gptui.core.runs import RunStore
        from gptui.core.tokenizer import tokenizer_from_json

        try:
            tokenizer: Tokenizer | None = None
            if source == CORPUS:
                key: Any = self.spec
                whose = "these tokenizer settings (" + (
                    f"bpe, {self.spec.vocab_size} tokens, {self.spec.pattern})" if self.spec.kind == "bpe" else "char)")
            elif source.startswith(CACHED):
                key, whose = source[len(CACHED):], "that tokenizer"
            else:
                text = RunStore(self.workspace).resolve(source).file("tokenizer.json").read_text(encoding="utf-8")
                tokenizer, key, whose = tokenizer_from_json(text), tokenizer_key(text), f"run {source}'s tokenizer"
            # closing the view stops the hashing of a large corpus mid-way
            entries = cache_entries(self.workspace.cache, self.path, self.text_field,
                                    cancel=_WorkerCancelled(get_current_worker()))
            # offered as choices: every entry but the tab settings' and a run's own (those are offered already)
            shown = {entries.key(self.spec)} | ({entries.key(key)} if tokenizer is not None else set())
            others = [k for k in entries.folders if k not in shown]
            self.post_message(self._Prepared(others))
            entry = entries.load(key)
            if entry is None:
                how = ("press Prepare on the Corpus tab (escape), or pick (s) " + (
                    "another tokenizer it is prepared with above." if others else "a run's tokenizer above.")
                    if source == CORPUS else "fine-tuning that run on it prepares it. Type a text above.")
                note = f"{self.corpus} is not prepared with {whose}: {how}"
                self.post_message(self._Loaded(tokenizer, None, None, None, 0, note))
                return
            folder, data = entry
            counts = vocabulary.token_counts(data.tokens, data.tokenizer.vocab_size, folder)
            stats = vocabulary.corpus_stats(data.tokenizer, counts)
            self.post_message(self._Loaded(data.tokenizer, data.tokens, counts, stats, data.documents, ""))
        except GptuiError as exc:
            self.post_message(self._Failed(str(exc)))
        except (OSError, ValueError, KeyError) as exc:  # an unreadable tokenizer.json: one line, no traceback
            self.post_message(self._Failed(f"cannot read the tokenizer ({type(exc).__name__}: {exc})"))

    @on(_Prepared)
    def _prepared(self, message: _Prepared) -> None:
        """Offer the other tokenizers the corpus is already prepared with."""
        select = self.query_one("#tok-source", Select)
        options = self._sources() + [(f"{self.corpus} as {_key_label(k)}", CACHED + k) for k in message.keys]
        if self.source.startswith(CACHED) and self.source not in [value for _, value in options]:
            # an entry deleted meanwhile: kept while it is shown
            options.append((f"{self.corpus} as {_key_label(self.source[len(CACHED):])}", self.source))
        self.sources = options
        with select.prevent(Select.Changed):
            select.set_options(options)
            select.value = self.source

    @on(_Loaded)
    def _loaded(self, message: _Loaded) -> None:
        self.tokenizer, self.tokens, self.counts = message.tokenizer, message.tokens, message.counts
        self.note, self.stats = message.note, message.stats
        which = f"run {self.source}" if self.source not in (CORPUS,) and not self.source.startswith(CACHED) \
            else self.corpus
        described = f" · {self.tokenizer.describe()}" if self.tokenizer is not None else ""
        self.query_one("#tok-title", Static).update(f"Tokens · {which}{described}")
        self.documents = message.documents
        if self.order == "frequent" and self.counts is None:
            self.order = "longest"
        self._fill_vocabulary()
        typed = self.query_one("#tok-text", TextArea).text
        self._refused = ""
        if typed and self.tokenizer is not None and self._tokenize(typed):
            pass
        elif self.tokens is not None:
            self.typed = None
            self._show_passage(0)
        else:
            self.typed = None
            self.query_one("#tok-scroll").border_title = ""
            self.query_one(TokenText).show_message(message.note)
            self._show_stats()

    @on(_Failed)
    def _failed(self, message: _Failed) -> None:
        self.notify(message.error, severity="error", title="Cannot show tokens")
        self.query_one(TokenText).show_message(message.error)

    @on(Select.Changed, "#tok-source")
    def _source_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.value == self.source or event.value is Select.BLANK:
            return
        self.source = str(event.value)
        self.query_one(TokenText).show_message("reading…")
        self._load(self.source)

    # --- what is shown: a passage, or the typed text ------------------------------------------------------

    def _show_passage(self, start: int) -> None:
        assert self.tokenizer is not None and self.tokens is not None
        part = vocabulary.passage(self.tokens, self.tokenizer, start, PASSAGE_TOKENS)
        self.start = part.start
        self.query_one("#tok-scroll").border_title = (
            f"passage · tokens {part.start:,}–{part.end - 1:,} of {len(self.tokens):,} · n/p: next/previous")
        self.query_one(TokenText).show(part.ids, part.spans, self.tokenizer.eot_id)
        self._show_stats()
        self.query_one("#tok-scroll").scroll_home(animate=False)

    def action_passage(self, step: int) -> None:
        if self.tokens is None or self.tokenizer is None:
            self.notify("No prepared corpus to page through: type a text instead.", severity="warning")
            return
        self.typed = None
        last = max(0, len(self.tokens) - PASSAGE_TOKENS)
        self._show_passage(min(last, max(0, self.start + step * PASSAGE_TOKENS)))

    @on(TextArea.Changed, "#tok-text")
    def _typed(self, event: TextArea.Changed) -> None:
        """Tokenized as it is typed; an empty text shows the corpus again."""
        event.stop()
        text = event.text_area.text
        if not text:
            self.typed, self._refused = None, ""
            if self.tokens is not None and self.tokenizer is not None:
                self._show_passage(self.start)
            else:
                self.query_one("#tok-scroll").border_title = ""
                self.query_one(TokenText).show_message(self.note)
                self._show_stats()
            return
        if self.tokenizer is None:
            self._refuse("No tokenizer yet: prepare the corpus, or pick a run's tokenizer above.", "warning")
            return
        self._tokenize(text)

    def _tokenize(self, text: str) -> bool:
        assert self.tokenizer is not None
        try:
            ids, spans = vocabulary.encode_text(self.tokenizer, text)
        except GptuiError as exc:
            self._refuse(str(exc), "error")
            return False
        self.typed, self._refused = text, ""
        n = len(ids)
        self.query_one("#tok-scroll").border_title = f"your text · {n:,} tokens · empty it for the corpus"
        self.query_one(TokenText).show(ids, spans, self.tokenizer.eot_id)
        self._show_stats()
        return True

    def _refuse(self, why: str, severity: str) -> None:
        """A notification once per reason, not once per key typed; what was shown stays."""
        if why != self._refused:
            self._refused = why
            self.notify(why, severity=severity, title="Cannot tokenize")

    @on(TokenText.Moved)
    def _moved(self) -> None:
        grid = self.query_one(TokenText)
        line = Text()
        if grid.ids and self.tokenizer is not None:
            k, token_id = grid.cursor, grid.ids[grid.cursor]
            tok = self.tokenizer
            line.append(f"token {k + (0 if self.typed is not None else self.start):,}", style="bold")
            line.append(f" · id {token_id} · ")
            line.append(quoted(vocabulary.token_text(tok, token_id), 24), style="bold")
            size = len(tok.token_bytes[token_id])
            line.append(f" · {size} byte{'' if size == 1 else 's'}")
            if size:
                line.append(f" {vocabulary.token_hex(tok, token_id)}")
            if not vocabulary.is_whole(tok, token_id):
                line.append(" (part of a character)")
            if self.counts is not None:
                line.append(f" · {int(self.counts[token_id]):,}× in the corpus")
        self.query_one("#tok-cursor", Static).update(line)

    def _show_stats(self) -> None:
        """The typed text's characters and bytes per token (when there is one), and the whole corpus's."""
        text = Text()
        if self.typed is not None and self.query_one(TokenText).ids:
            n, typed = len(self.query_one(TokenText).ids), self.typed
            chars, size = len(typed), len(typed.encode("utf-8"))
            text.append("your text: ", style="bold")
            text.append(f"{n:,} tokens, {chars:,} characters, {size:,} bytes · ")
            text.append(f"{chars / n:.2f} characters and {size / n:.2f} bytes per token\n", style="bold")
        if self.stats is not None:
            s = self.stats
            text.append(f"{self.corpus}: ", style="bold")
            text.append(f"{s.tokens:,} tokens, {s.chars:,} characters, {s.bytes:,} bytes · ")
            text.append(f"{s.chars_per_token:.2f} characters and {s.bytes_per_token:.2f} bytes per token",
                        style="bold")
            if s.end_of_text:
                text.append(f" · {self.documents:,} documents")
        text.rstrip()
        self.query_one("#tok-stats", Static).update(text)

    # --- the vocabulary -----------------------------------------------------------------------------------

    def action_order(self, order: str) -> None:
        if order == "frequent" and self.counts is None:
            self.notify("Frequencies need the corpus prepared with this tokenizer.", severity="warning")
            return
        self.order = order
        self.query_one("#tok-search", Input).value = ""
        self._fill_vocabulary()

    def action_source(self) -> None:
        """The tokenizer to look through: the Corpus tab's settings, another it is prepared with, or a run's."""
        select = self.query_one("#tok-source", Select)
        select.focus()
        select.expanded = True

    def action_search(self) -> None:
        self.query_one("#tok-search", Input).focus()

    def action_edit(self) -> None:
        """From the tokens to the text and back."""
        text = self.query_one("#tok-text", TextArea)
        if text.has_focus:
            self.query_one(TokenText).focus()
        else:
            text.focus()

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Input.Changed, "#tok-search")
    def _search_changed(self, event: Input.Changed) -> None:
        event.stop()
        if event.value:
            self.order = "search"
        elif self.order == "search":
            self.order = "longest"
        self._fill_vocabulary()

    @on(Input.Submitted, "#tok-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#tok-vocab", DataTable).focus()

    def _fill_vocabulary(self) -> None:
        table = self.query_one("#tok-vocab", DataTable)
        box = self.query_one("#tok-vocab-box")
        table.clear()
        tok = self.tokenizer
        if tok is None:
            box.border_title = "vocabulary"
            return
        if self.order == "frequent" and self.counts is not None:
            ids = vocabulary.most_frequent(self.counts, VOCAB_ROWS)
            box.border_title = "most frequent (l: longest)"
        elif self.order == "search":
            query = self.query_one("#tok-search", Input).value
            ids = vocabulary.search(tok, query, VOCAB_ROWS)
            box.border_title = f"{len(ids)}{'+' if len(ids) == VOCAB_ROWS else ''} found"
        else:
            ids = vocabulary.longest(tok, VOCAB_ROWS)
            box.border_title = "longest" + (" (f: most frequent)" if self.counts is not None else "")
        for i in ids:
            shown_token = visible(vocabulary.token_label(tok, i))
            if len(shown_token) > TOKEN_CELL:
                shown_token = shown_token[: TOKEN_CELL - 1] + "…"
            table.add_row(str(i), shown_token, "" if self.counts is None else f"{int(self.counts[i]):,}",
                          str(len(tok.token_bytes[i])), key=str(i))


def _key_label(key: str) -> str:
    """A cache key as a reader names the tokenizer: 'bpe512-gpt4-v1' -> 'bpe512-gpt4'; a run's tokenizer's key
    (its sha256) -> "a run's tokenizer"."""
    if key.startswith("tok"):
        return f"a run's tokenizer ({key[3:11]})"
    return key.rsplit("-v", 1)[0]
