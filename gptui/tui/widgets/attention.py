"""The attention view: for a short text, one layer's attention weights as a heatmap of shaded cells with the
tokens on both axes (a row is a query token, its cells the earlier tokens it attends to), head by head or the
mean over the heads, as in the "Let's build GPT" lecture's matrices and bertviz.

Opened from the Runs tab (a) or the Generate tab (ctrl+n). The weights come from `gptui.core.inspect`, which the
worker imports (torch with it); the screen holds only plain lists of numbers."""

from __future__ import annotations

from typing import Any

from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, ScrollableContainer
from textual.geometry import Region
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, Label, Static

from gptui.core.errors import GptuiError
from gptui.core.runs import RunStore
from gptui.core.workspace import Workspace
from gptui.tui.widgets.token_style import legend, quoted, shade, visible

MAX_TOKENS = 64  # a heatmap wider than this is more scrolling than seeing
LABEL = 13  # the row labels' width: "  7 ␣Citizen "
CELL = 2  # characters a cell is wide


class AttentionMap(Widget, can_focus=True):
    """The heatmap of one matrix with a cell cursor; arrows move it, the keys below step layer and head."""

    DEFAULT_CSS = """
    AttentionMap { width: auto; height: auto; }
    AttentionMap:focus { background-tint: $foreground 3%; }
    """
    BINDINGS = [
        Binding("up", "move(-1, 0)", "Up", show=False),
        Binding("down", "move(1, 0)", "Down", show=False),
        Binding("left", "move(0, -1)", "Left", show=False),
        Binding("right", "move(0, 1)", "Right", show=False),
        Binding("left_square_bracket", "screen.layer(-1)", "Layer-", key_display="["),
        Binding("right_square_bracket", "screen.layer(1)", "Layer+", key_display="]"),
        Binding("comma", "screen.head(-1)", "Head-", key_display=","),
        Binding("full_stop", "screen.head(1)", "Head+", key_display="."),
        Binding("m", "screen.mean", "Mean"),
    ]

    class Moved(Message):
        """The cursor moved to (row, column)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tokens: list[str] = []
        self.matrix: list[list[float]] = []
        self.row = self.column = 0

    def show(self, tokens: list[str], matrix: list[list[float]]) -> None:
        self.tokens, self.matrix = tokens, matrix
        n = len(tokens)
        self.row, self.column = min(self.row, max(0, n - 1)), min(self.column, max(0, n - 1))
        self.column = min(self.column, self.row)
        self.refresh(layout=True)
        self.post_message(self.Moved())

    def action_move(self, rows: int, columns: int) -> None:
        if not self.tokens:
            return
        n = len(self.tokens)
        self.row = min(n - 1, max(0, self.row + rows))
        # a query attends only to itself and earlier keys: the cursor stays on or below the diagonal
        self.column = min(self.row, max(0, self.column + columns))
        self.refresh()
        self.scroll_visible_cell()
        self.post_message(self.Moved())

    def scroll_visible_cell(self) -> None:
        self.scroll_to_region(Region(LABEL + CELL * self.column, 1 + self.row, CELL, 1), animate=False)

    def get_content_width(self, container, viewport) -> int:
        return LABEL + CELL * len(self.tokens) + 1

    def get_content_height(self, container, viewport, width: int) -> int:
        return 1 + len(self.tokens)

    def render(self) -> Text:
        text = Text(no_wrap=True)
        if not self.tokens:
            return text
        cursor = Style(bold=True, reverse=True)
        text.append(" " * LABEL)
        for j, token in enumerate(self.tokens):
            mark = visible(token)[:1] or " "
            text.append(f"{mark:<{CELL}}", style=cursor if j == self.column else "bold")
        for i, (token, row) in enumerate(zip(self.tokens, self.matrix, strict=True)):
            text.append("\n")
            label = f"{i:>3} {visible(token)[:8]:<8} "
            text.append(label, style=cursor if i == self.row else "")
            for j, weight in enumerate(row):
                if j > i:  # above the diagonal: a query never sees later tokens
                    text.append(" " * CELL)
                    continue
                here = (i, j) == (self.row, self.column)
                text.append("▐▌" if here else " " * CELL, style=shade(weight))
        return text


class AttentionScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("ctrl+e", "edit", "Text"),
    ]

    class _Computed(Message):
        def __init__(self, tokens: list[str], layers: list[list[list[list[float]]]], cut: int) -> None:
            super().__init__()
            self.tokens, self.layers, self.cut = tokens, layers, cut

    class _Failed(Message):
        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def __init__(self, workspace: Workspace, run_id: str, text: str = "") -> None:
        super().__init__()
        self.workspace, self.run_id, self.text = workspace, run_id, text
        self.tokens: list[str] = []
        self.weights: list[list[list[list[float]]]] = []  # layer -> head -> query row -> key column
        self.layer_index = 0
        self.head: int | None = 0  # None: the mean over the heads
        self._loaded: Any = None  # gptui.core.generate.LoadedModel, loaded once by the worker

    def compose(self) -> ComposeResult:
        yield Static(f"Attention · {self.run_id}", id="att-title")
        with Horizontal(id="att-input-row"):
            yield Label("text")
            yield Input(self.text, placeholder="a short text, then Enter", id="att-text", compact=True)
        with ScrollableContainer(id="att-scroll", can_focus=False):
            yield AttentionMap(id="att-map")
        yield Static("", id="att-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#att-scroll").border_title = "rows: query tokens · columns: the keys they attend to"
        if self.text.strip():
            self.query_one(AttentionMap).focus()
            self._compute(self.text)
        else:
            self.query_one("#att-text", Input).focus()
            self._status(Text("Type a short text and press Enter."))

    def action_close(self) -> None:
        self.dismiss(None)

    def action_edit(self) -> None:
        self.query_one("#att-text", Input).focus()

    @on(Input.Submitted, "#att-text")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value:
            self.notify("Type a text first.", severity="warning")
            return
        self.text = event.value
        self._status(Text("computing…"))
        self._compute(event.value)

    @work(thread=True, exclusive=True, exit_on_error=False, group="attention")
    def _compute(self, text: str) -> None:
        try:
            from gptui.core import inspect  # loads torch
            from gptui.core.generate import load_model

            if self._loaded is None:
                self._loaded = load_model(RunStore(self.workspace).resolve(self.run_id), "auto", "float32")
            model, tok = self._loaded.model, self._loaded.tokenizer
            ids = inspect.encode(tok, text)
            limit = min(MAX_TOKENS, model.config.block_size)
            layers = inspect.attention_layers(model, tok, ids[:limit])
            self.post_message(self._Computed(layers[0].tokens, [a.weights.tolist() for a in layers],
                                             max(0, len(ids) - limit)))
        except GptuiError as exc:
            self.post_message(self._Failed(str(exc)))
        except Exception as exc:  # one line on screen, never a traceback
            self.post_message(self._Failed(f"{type(exc).__name__}: {exc}"))

    @on(_Computed)
    def _computed(self, message: _Computed) -> None:
        self.tokens, self.weights = message.tokens, message.layers
        self.layer_index = min(self.layer_index, len(self.weights) - 1)
        if self.head is not None:
            self.head = min(self.head, len(self.weights[0]) - 1)
        if message.cut:
            self.notify(f"Showing the first {len(self.tokens)} tokens ({message.cut} more are left out).",
                        timeout=4)
        self._redraw()
        self.query_one(AttentionMap).focus()

    @on(_Failed)
    def _failed(self, message: _Failed) -> None:
        self.notify(message.error, severity="error", title="Cannot show attention")
        self._status(Text(message.error))

    # --- stepping through layers and heads -------------------------------------------------------------------

    @property
    def heads(self) -> int:
        return len(self.weights[0]) if self.weights else 0

    @property
    def matrix(self) -> list[list[float]]:
        """The matrix on screen: one head's, or the mean over the heads."""
        heads = self.weights[self.layer_index]
        if self.head is not None:
            return heads[self.head]
        n = len(heads)
        return [[sum(h[i][j] for h in heads) / n for j in range(len(heads[0][i]))] for i in range(len(heads[0]))]

    def action_layer(self, step: int) -> None:
        if self.weights:
            self.layer_index = (self.layer_index + step) % len(self.weights)
            self._redraw()

    def action_head(self, step: int) -> None:
        if self.weights:
            self.head = ((self.head if self.head is not None else -1 if step > 0 else 0) + step) % self.heads
            self._redraw()

    def action_mean(self) -> None:
        if self.weights:
            self.head = None if self.head is not None else 0
            self._redraw()

    def _redraw(self) -> None:
        which = "mean over heads" if self.head is None else f"head {self.head} of {self.heads}"
        self.query_one("#att-title", Static).update(
            f"Attention · {self.run_id} · layer {self.layer_index} of {len(self.weights)} · {which}")
        self.query_one(AttentionMap).show(self.tokens, self.matrix)

    @on(AttentionMap.Moved)
    def _moved(self) -> None:
        grid = self.query_one(AttentionMap)
        if not self.tokens:
            return
        i, j = grid.row, grid.column
        weight = self.matrix[i][j]
        text = Text()
        text.append(f"query {i} {quoted(self.tokens[i], 16)}", style="bold")
        text.append(" attends to ")
        text.append(f"key {j} {quoted(self.tokens[j], 16)}", style="bold")
        text.append(f": {weight:.4f}    0 ")
        for piece, style in legend():
            text.append(piece, style=style)
        text.append(" 1")
        self._status(text)

    def _status(self, text: Text) -> None:
        self.query_one("#att-status", Static).update(text)
