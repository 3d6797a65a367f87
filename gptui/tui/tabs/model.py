"""The Model tab: every setting as a validated field, grouped as the declarations group them, with presets and
live estimates (parameters, memory, tokens per step)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Label, Select, Static

from gptui.core.config import (
    DEFAULT_PRESET,
    GROUPS,
    PRESETS,
    SETTINGS,
    Config,
    ConfigError,
    apply_overrides,
    config_to_dict,
    estimate_memory_bytes,
    estimate_params,
    preset_config,
    tokens_per_step,
    validate,
)
from gptui.tui.formatting import human_bytes, human_number
from gptui.tui.widgets.setting_field import SettingField


class ModelTab(Vertical):
    """Posts `ModelTab.ConfigChanged` after every edit with the parsed config (None while invalid) and reasons."""

    class ConfigChanged(Message):
        def __init__(self, config: Config | None, problems: dict[str, str], values: dict[str, Any]) -> None:
            super().__init__()
            self.config = config  # None unless every setting is valid
            self.problems = problems
            self.values = values  # raw values of every field, for tabs that mirror some of them

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.config: Config | None = preset_config(DEFAULT_PRESET)
        self.problems: dict[str, str] = {}
        self.processes = 1  # from the Train tab: tokens per step count every process's batch

    def compose(self) -> ComposeResult:
        initial = preset_config(DEFAULT_PRESET)
        with Horizontal(id="model-top"):
            yield Label("Preset", classes="inline-label")
            yield Select([(name, name) for name in PRESETS], value=DEFAULT_PRESET, allow_blank=False,
                         compact=True, id="preset")
            yield Static(id="model-estimates")
        yield Static(id="model-status")
        with VerticalScroll(id="model-form", can_focus=False):  # Tab goes field to field
            for group, title in GROUPS.items():
                yield Static(title, classes="group-title")
                for setting in SETTINGS:
                    if setting.group == group:
                        yield SettingField(setting, getattr(initial, setting.name))

    def on_mount(self) -> None:
        self._fields = {f.setting.name: f for f in self.query(SettingField)}  # fixed after compose
        self.revalidate()

    @property
    def fields(self) -> list[SettingField]:
        return list(self._fields.values())

    def field(self, name: str) -> SettingField:
        return self._fields[name]

    def set_values(self, values: dict[str, Any]) -> None:
        """Put values into fields (from a preset, or mirrored from the Corpus tab); revalidates."""
        for name, value in values.items():
            self.field(name).raw = value
        self.revalidate()

    def set_processes(self, processes: int) -> None:
        if processes != self.processes:
            self.processes = processes
            self._show_estimates(self.config)

    def apply_preset(self, name: str) -> None:
        self.set_values(config_to_dict(preset_config(name)))

    @on(Select.Changed, "#preset")
    def _preset_chosen(self, event: Select.Changed) -> None:
        event.stop()
        if isinstance(event.value, str):
            self.apply_preset(event.value)

    def on_setting_field_changed(self, event: SettingField.Changed) -> None:
        event.stop()
        self.revalidate()

    def revalidate(self) -> None:
        values = {f.setting.name: f.raw for f in self.fields}
        parsed: Config | None
        try:
            parsed = apply_overrides(Config(), values)
            problems = validate(parsed)
        except ConfigError as exc:
            parsed, problems = None, exc.problems
        for f in self.fields:
            f.show_error(problems.get(f.setting.name))
        self.config = parsed if not problems else None
        self.problems = problems
        self._show_estimates(parsed)
        self._show_status(parsed, problems)
        self.post_message(self.ConfigChanged(self.config, dict(problems), values))

    def _show_estimates(self, config: Config | None) -> None:
        # short enough to fit beside the preset at 80 columns
        text = "params — · memory — · tokens/step —"
        if config is not None:
            try:
                text = (
                    f"params [b]{human_number(estimate_params(config))}[/b] · "
                    f"memory ≈ [b]{human_bytes(estimate_memory_bytes(config))}[/b] · "
                    f"tokens/step [b]{tokens_per_step(config, self.processes):,}[/b]"
                    + (f" ({self.processes} processes)" if self.processes > 1 else "")
                )
            except (ArithmeticError, ValueError, TypeError):
                pass  # a half-typed value: keep the placeholders until it parses
        self.query_one("#model-estimates", Static).update(text)

    def _show_status(self, config: Config | None, problems: dict[str, str]) -> None:
        status = self.query_one("#model-status", Static)
        status.set_class(bool(problems), "-invalid")
        if problems:
            reasons = "; ".join(problems.values())
            status.update(Text(f"✗ Cannot train with these settings: {reasons}"))
            return
        preset = next((name for name in PRESETS if preset_config(name) == config), None)
        status.update(f"✓ Valid settings ({f'preset {preset}' if preset else 'custom'})")
