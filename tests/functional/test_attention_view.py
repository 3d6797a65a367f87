"""The attention view, opened from the Runs tab (a) and the Generate tab (ctrl+n): the heatmap shows the core's
weights, keys step through layers and heads (and the mean over heads), the cursor stays on or below the diagonal,
and bad input is a notification."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from gptui.tui.app import make_app
from gptui.tui.widgets.attention import AttentionMap, AttentionScreen
from tests.functional.conftest import started, wait_for, write_fake_run
from tests.model_runs import write_model_run

RUN = "20240102-030405-modern"
SETTINGS = {"n_layer": 2, "n_head": 2, "pos_embedding": "rope", "norm": "rmsnorm", "qk_norm": True}
TEXT = "First Citizen"


@pytest.fixture
def model_home(home: Path) -> Path:
    write_model_run(home, RUN, SETTINGS)
    return home


def expected(home: Path, text: str):
    """The core's weights for `text`: layer -> head -> rows, computed apart from the app."""
    from gptui.core import inspect
    from gptui.core.generate import load_model
    from gptui.core.runs import Run

    loaded = load_model(Run(home / "models" / RUN), "cpu", "float32")
    ids = loaded.tokenizer.encode(text)
    return [a.weights for a in inspect.attention_layers(loaded.model, loaded.tokenizer, ids)]


async def open_from_runs(pilot) -> AttentionScreen:
    app = pilot.app
    await started(pilot)
    await pilot.press("f5")
    table = app.query_one("#runs-table", DataTable)
    await wait_for(pilot, lambda: RUN in table.rows, "the run listed")
    table.focus()
    await pilot.press("a")
    await pilot.pause()
    assert isinstance(app.screen, AttentionScreen)
    return app.screen


def status(screen: AttentionScreen) -> str:
    return str(screen.query_one("#att-status").content)


def test_the_heatmap_steps_through_layers_heads_and_the_mean(model_home: Path) -> None:
    weights = expected(model_home, TEXT)

    async def go() -> None:
        app = make_app(model_home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_from_runs(pilot)
            assert screen.query_one("#att-text", Input).has_focus
            await pilot.press(*TEXT, "enter")
            await wait_for(pilot, lambda: bool(screen.weights), "the weights")
            grid = screen.query_one(AttentionMap)
            assert grid.has_focus and grid.tokens == list(TEXT)
            assert "layer 0 of 2 · head 0 of 2" in str(screen.query_one("#att-title").content)

            def shown(layer: int, head: int | None, row: int, column: int) -> None:
                assert (screen.layer_index, screen.head, grid.row, grid.column) == (layer, head, row, column)
                matrix = weights[layer].mean(0) if head is None else weights[layer][head]
                assert screen.matrix[row][column] == pytest.approx(float(matrix[row][column]), abs=1e-6)
                assert f": {float(matrix[row][column]):.4f}" in status(screen)
                assert f'query {row} "{TEXT[row]}" attends to key {column} "{TEXT[column]}"' in status(screen)

            shown(0, 0, 0, 0)
            await pilot.press("down", "down", "down", "right", "right")
            shown(0, 0, 3, 2)
            await pilot.press("right", "right", "right")  # never past the diagonal: a query sees no later key
            shown(0, 0, 3, 3)
            await pilot.press("right_square_bracket", "full_stop")
            shown(1, 1, 3, 3)
            await pilot.press("m")
            shown(1, None, 3, 3)
            assert "mean over heads" in str(screen.query_one("#att-title").content)
            await pilot.press("full_stop")
            shown(1, 0, 3, 3)
            await pilot.press("left_square_bracket", "left_square_bracket", "comma")
            shown(1, 1, 3, 3)  # both wrap around
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, AttentionScreen)

    asyncio.run(go())


def test_from_generate_it_shows_the_prompt_and_bad_text_is_a_notification(model_home: Path) -> None:
    async def go() -> None:
        app = make_app(model_home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.press("f4")
            gen = app.generate_tab
            await wait_for(pilot, lambda: gen.run_id == RUN, "the run offered")
            gen.query_one("#gen-prompt", Input).value = "All: Speak"
            await pilot.press("ctrl+n")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, AttentionScreen)
            await wait_for(pilot, lambda: bool(screen.weights), "the weights")
            assert screen.tokens == list("All: Speak")

            notes = []
            app.notify = lambda message, **kw: notes.append((message, kw.get("severity")))
            await pilot.press("ctrl+e")
            field = screen.query_one("#att-text", Input)
            assert field.has_focus
            field.value = "日本"
            await pilot.press("enter")
            await wait_for(pilot, lambda: bool(notes), "a notification")
            assert notes[0][1] == "error" and "never seen" in notes[0][0]
            assert screen.tokens == list("All: Speak")  # what was shown stays

    asyncio.run(go())


def test_a_run_without_weights_is_refused_with_a_warning(home: Path) -> None:
    run = write_fake_run(home)
    (run / "model.safetensors").unlink()
    (run / "state.json").write_text('{"status": "stopped", "step": 0}')

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.press("f5")
            table = app.query_one("#runs-table", DataTable)
            await wait_for(pilot, lambda: table.row_count == 1, "the run listed")
            table.focus()
            notes = []
            app.notify = lambda message, **kw: notes.append(message)
            await pilot.press("a")
            await pilot.pause()
            assert not isinstance(app.screen, AttentionScreen)
            assert notes and "no saved weights" in notes[0]

    asyncio.run(go())
