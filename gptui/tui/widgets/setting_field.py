"""One form row generated from a `Setting` declaration: its name, an editor that fits its type, and a note
with its range and help text, or the reason its value is refused. The Model form and the Corpus tab's tokenizer
controls are both built from these, so a setting is described in one place (gptui.core.config)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.validation import ValidationResult, Validator
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, Static

from gptui.core.config import Setting


class OnOff(Checkbox):
    """A checkbox whose label says its state, "on" or "off", so it reads right without colour."""

    def __init__(self, value: bool, **kwargs) -> None:
        super().__init__("on" if value else "off", value, **kwargs)

    def watch_value(self) -> None:
        super().watch_value()
        self.label = "on" if self.value else "off"


class SettingValidator(Validator):
    """The declaration's own parse and range check, so the Input turns red as soon as a value is refused."""

    def __init__(self, setting: Setting) -> None:
        super().__init__()
        self.setting = setting

    def validate(self, value: str) -> ValidationResult:
        try:
            reason = self.setting.check(self.setting.parse(value))
        except ValueError as exc:
            reason = str(exc)
        return self.failure(reason) if reason else self.success()


def format_value(setting: Setting, value: Any) -> str:
    if setting.type is float and isinstance(value, (int, float)):
        return f"{value:g}"
    return str(value)


class SettingField(Horizontal):
    """Posts `SettingField.Changed` when the user edits; the parent sets `.raw` and `show_error` from above.

    Kept to four widgets (row, name, editor, note): the Model form has thirty of these and each widget costs
    start-up time."""

    class Changed(Message):
        def __init__(self, field: SettingField) -> None:
            super().__init__()
            self.field = field

        @property
        def control(self) -> SettingField:
            return self.field

    def __init__(self, setting: Setting, value: Any, *, id_prefix: str = "set") -> None:
        super().__init__(id=f"{id_prefix}-{setting.name}", classes="setting-field")
        self.setting = setting
        self._initial = value
        self._last: Any = None  # the raw value last seen, so only real edits are announced
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Label(self.setting.name, classes="field-name")
        yield self._make_editor(self._initial)
        yield Static(self._note(), classes="field-note")

    def on_mount(self) -> None:
        self._last = self.raw

    def _make_editor(self, value: Any) -> Widget:
        s = self.setting
        if s.type is bool:
            return OnOff(bool(value), compact=True, classes="field-editor")
        if s.choices:
            return Select([(c, c) for c in s.choices], value=value, allow_blank=False, compact=True,
                          classes="field-editor")
        return Input(format_value(s, value), type="integer" if s.type is int else "text",
                     validators=[SettingValidator(s)], compact=True, classes="field-editor")

    def _note(self) -> Text:
        s = self.setting
        text = Text()
        if self.error:
            text.append(f"✗ {self.error}", style="bold red")
            return text
        if s.range_text:
            text.append(s.range_text, style="bold")
            text.append("  ")
        text.append(s.help)
        return text

    @property
    def editor(self) -> Widget:
        return self.query_one(".field-editor")

    @property
    def raw(self) -> Any:
        """What the user entered: a string for text fields, a bool for checkboxes, the choice for selects."""
        editor = self.editor
        if isinstance(editor, Checkbox):
            return editor.value
        if isinstance(editor, Select):
            return editor.value if editor.value is not Select.NULL else self.setting.default
        return editor.value

    @raw.setter
    def raw(self, value: Any) -> None:
        """Set from above (a preset, a mirrored field): no Changed message, so two views of one setting
        never echo each other; whoever sets values revalidates itself."""
        editor = self.editor
        with self.prevent(Input.Changed, Select.Changed, Checkbox.Changed):
            if isinstance(editor, Input):
                text = format_value(self.setting, value)
                if editor.value != text:
                    editor.value = text
            elif isinstance(editor, Checkbox):
                editor.value = self.setting.parse(value)
            elif editor.value != value:
                editor.value = value
        self._last = self.raw

    def show_error(self, reason: str | None) -> None:
        if reason == self.error:
            return
        self.error = reason
        self.set_class(bool(reason), "-invalid")
        self.query_one(".field-note", Static).update(self._note())

    def _edited(self) -> None:
        raw = self.raw
        if raw != self._last:  # editors also announce their first value on mount: not an edit
            self._last = raw
            self.post_message(self.Changed(self))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._edited()

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._edited()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self._edited()
