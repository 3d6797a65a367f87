"""Small dialogs: a yes/no confirmation, a one-line text prompt, a path prompt and a pick from a list. They return
their answer by dismissing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList
from textual.widgets.option_list import Option


class ConfirmModal(ModalScreen[bool]):
    BINDINGS = [Binding("escape", "dismiss(False)", "Cancel"), Binding("y", "dismiss(True)", "Yes", show=False)]

    def __init__(self, question: str, yes: str = "Yes", no: str = "Cancel", *, danger: bool = False) -> None:
        super().__init__()
        self.question, self.yes, self.no, self.danger = question, yes, no, danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, id="yes", variant="error" if self.danger else "primary")
                yield Button(self.no, id="no")

    def on_mount(self) -> None:
        self.query_one("#no" if self.danger else "#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")


class TextPromptModal(ModalScreen[str | None]):
    """Ask for one line of text (a new run name); Escape cancels with None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, question: str, value: str = "", ok: str = "OK") -> None:
        super().__init__()
        self.question, self.value, self.ok = question, value, ok

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-text")
            yield Input(self.value, id="answer")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.ok, id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._answer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self._answer()
        else:
            self.dismiss(None)

    def _answer(self) -> None:
        text = self.query_one("#answer", Input).value.strip()
        if not text:
            self.notify("Type a name, or press Escape to cancel.", severity="warning")
            return
        self.dismiss(text)


class PathPromptModal(TextPromptModal):
    """Ask for a file or folder path (an export's destination); `~` expands. Dismisses with the Path, or None on
    Escape or Cancel. `check(path)` may return why the path will not do: the reason is shown and the dialog stays
    open for another answer."""

    def __init__(self, question: str, value: str = "", ok: str = "OK",
                 check: Callable[[Path], str | None] | None = None) -> None:
        super().__init__(question, value, ok)
        self.check = check

    def _answer(self) -> None:
        text = self.query_one("#answer", Input).value.strip()
        if not text:
            self.notify("Type a path, or press Escape to cancel.", severity="warning")
            return
        path = Path(text).expanduser()
        problem = self.check(path) if self.check is not None else None
        if problem:
            self.notify(problem, severity="warning")
            return
        self.dismiss(path)


class PickModal(ModalScreen[str | None]):
    """Pick one of a few choices (a corpus to fine-tune on): `choices` are (key, label) pairs; Enter, a click or
    the OK button dismisses with the highlighted key, Escape or Cancel with None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, question: str, choices: list[tuple[str, str]], ok: str = "OK", value: str | None = None) -> None:
        super().__init__()
        self.question, self.choices, self.ok, self.value = question, choices, ok, value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-text")
            yield OptionList(*(Option(label, id=key) for key, label in self.choices), id="choices")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.ok, id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        options = self.query_one("#choices", OptionList)
        keys = [key for key, _ in self.choices]
        options.highlighted = keys.index(self.value) if self.value in keys else 0
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id != "ok":
            self.dismiss(None)
            return
        options = self.query_one("#choices", OptionList)
        if options.highlighted is None:
            self.notify("Pick one, or press Escape to cancel.", severity="warning")
            return
        self.dismiss(options.get_option_at_index(options.highlighted).id)
