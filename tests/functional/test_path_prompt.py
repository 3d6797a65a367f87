"""The path prompt (for the Runs tab's Export): `~` expands, an empty answer or one its check refuses keeps the
dialog open with the reason shown, Escape cancels."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.app import App
from textual.widgets import Input

from gptui.core.export import export_target_problem
from gptui.tui.widgets.modals import PathPromptModal


class Host(App[None]):
    def __init__(self, modal: PathPromptModal) -> None:
        super().__init__()
        self.modal = modal
        self.answers: list[Path | None] = []

    def on_mount(self) -> None:
        self.push_screen(self.modal, self.answers.append)


async def answer(pilot, text: str) -> None:
    pilot.app.screen.query_one("#answer", Input).value = text
    await pilot.press("enter")
    await pilot.pause()


def test_the_answer_is_a_path_with_the_home_folder_expanded():
    app = Host(PathPromptModal("Export to:", "~/exports/run-hf", ok="Export"))

    async def go() -> None:
        async with app.run_test() as pilot:
            await pilot.press("enter")
            await pilot.pause()

    asyncio.run(go())
    assert app.answers == [Path.home() / "exports" / "run-hf"]


def test_an_empty_answer_keeps_the_dialog_and_escape_cancels():
    app = Host(PathPromptModal("Export to:"))

    async def go() -> None:
        async with app.run_test() as pilot:
            await answer(pilot, "   ")
            assert isinstance(app.screen, PathPromptModal) and app.answers == []
            assert any("Type a path" in n.message for n in app._notifications)
            await pilot.press("escape")
            await pilot.pause()

    asyncio.run(go())
    assert app.answers == [None]


def test_a_folder_the_export_would_refuse_keeps_the_dialog_with_the_reason(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    app = Host(PathPromptModal("Export to:", check=export_target_problem))

    async def go() -> None:
        async with app.run_test() as pilot:
            await answer(pilot, str(taken))
            assert isinstance(app.screen, PathPromptModal) and app.answers == []
            assert any(f"{taken} is not empty" in n.message for n in app._notifications)
            await answer(pilot, str(tmp_path / "new"))

    asyncio.run(go())
    assert app.answers == [tmp_path / "new"]
    assert (taken / "notes.txt").read_text() == "mine"
