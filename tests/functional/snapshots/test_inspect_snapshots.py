"""The views that look inside a model, at 120x40 and at 80x24, over a model with fixed random weights."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable

from gptui.tui.app import make_app
from tests.functional.conftest import wait_for
from tests.functional.snapshots.test_snapshots import settle
from tests.model_runs import write_model_run

RUN = "20240102-030405-modern"
SIZES = {"wide": (120, 40), "small": (80, 24)}


@pytest.fixture
def model_home(home: Path) -> Path:
    write_model_run(home, RUN, {"n_layer": 2, "n_head": 2, "pos_embedding": "rope", "qk_norm": True})
    return home


@pytest.mark.parametrize("size", SIZES)
def test_attention_view(model_home: Path, size: str, snap_compare) -> None:
    async def run_before(pilot) -> None:
        app = pilot.app
        await settle(pilot)
        await pilot.press("f5")
        table = app.query_one("#runs-table", DataTable)
        await wait_for(pilot, lambda: RUN in table.rows, "the run listed")
        table.focus()
        await pilot.press("a")
        await pilot.press(*"First Citizen:\nBefore we proceed any further", "enter")
        await wait_for(pilot, lambda: bool(getattr(app.screen, "weights", None)), "the weights")
        await pilot.press("down", "down", "down", "down", "right", "right", "full_stop")
        await settle(pilot)

    assert snap_compare(make_app(model_home, poll=False), terminal_size=SIZES[size], run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_probabilities_view(model_home: Path, size: str, snap_compare) -> None:
    async def run_before(pilot) -> None:
        from textual.widgets import Select

        from gptui.tui.tabs.generate import Turn

        app = pilot.app
        await settle(pilot)
        await pilot.press("f4")
        gen = app.generate_tab
        await wait_for(pilot, lambda: gen.run_id == RUN, "the run offered")
        gen.query_one("#gen-dtype", Select).value = "float32"  # the same numbers on every machine
        asked = Turn("You", "First Citizen:")
        reply = Turn(f"Model · {RUN}", "\nAll: Speak, speak.\nFirst Citizen:\nYou are all resolved", model=True)
        reply.prompt, reply.partner, reply.generated = asked.text, asked, reply.text
        gen._add_turn(asked)
        gen._add_turn(reply)
        await pilot.press("ctrl+y")
        await wait_for(pilot, lambda: reply.scored, "the turns scored")
        await pilot.press("right", "right", "right")
        await settle(pilot)

    assert snap_compare(make_app(model_home, poll=False), terminal_size=SIZES[size], run_before=run_before)
