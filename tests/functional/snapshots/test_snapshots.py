"""One snapshot per tab at 120x40, over fixed content: a short corpus, a prebuilt run with fixed metrics and
dates, and, for the Train tab, a fixed sequence of engine events fed straight to the screen (no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from gptui.core import events as ev
from gptui.tui.app import GptuiApp, make_app
from gptui.tui.widgets.loss_plot import LossPlot
from tests.functional.conftest import FAKE_RUN, started, write_fake_run

SIZE = (120, 40)


@pytest.fixture
def app(home: Path) -> GptuiApp:
    write_fake_run(home)
    return make_app(home, poll=False)


async def settle(pilot) -> None:
    """Let workers (listing, cache status) finish and every plot draw its latest data."""
    app = pilot.app
    await started(pilot)
    await app.workers.wait_for_complete()
    await pilot.pause()
    for plot in app.query(LossPlot):
        plot.flush()
    for field in app.query(Input):
        field.cursor_blink = False
    await pilot.pause()


def show(tab: str):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press({"corpus": "f1", "model": "f2", "train": "f3", "generate": "f4", "runs": "f5"}[tab])
        await settle(pilot)

    return run_before


def test_corpus_tab(app: GptuiApp, snap_compare) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=show("corpus"))


def test_model_tab(app: GptuiApp, snap_compare) -> None:
    async def run_before(pilot) -> None:
        await show("model")(pilot)
        app.model_tab.set_values({"n_embd": 100, "n_head": 3})  # shows an inline reason
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_train_tab(app: GptuiApp, snap_compare) -> None:
    async def run_before(pilot) -> None:
        await show("train")(pilot)
        tab = app.train_tab
        run = str(app.workspace.models / FAKE_RUN)
        tab.show_event(ev.Log("tokenizer and tokens: served from cache in 0.01s"))
        tab.show_event(ev.Started(FAKE_RUN, run, 12_345, "cpu", "float32", 0, 400, {}))
        for step in range(10, 201, 10):
            tab.show_event(ev.Step(step, 400, step * 0.4, 4.2 - step / 100, 1e-3, 3200.0, (400 - step) * 0.4,
                                   {"kind": "process", "allocated": 300 << 20, "reserved": 300 << 20,
                                    "peak": 310 << 20}))
            if step % 50 == 0:
                tab.show_event(ev.Eval(step, step * 0.4, 4.1 - step / 100, 4.3 - step / 100, 3.1, True))
                tab.show_event(ev.Log(f"step {step:>6}  val {4.3 - step / 100:.4f}", "evaluation"))
            if step == 120:
                tab.show_event(ev.Log("warning: the tensorboard tracker failed (OSError: disk full); training goes "
                                      "on without it", "warning"))
        tab.show_event(ev.Sample(200, "ROMEO:\nWhat light through yonder window breaks?"))
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_generate_tab(app: GptuiApp, snap_compare) -> None:
    async def run_before(pilot) -> None:
        await show("generate")(pilot)
        from gptui.tui.tabs.generate import Turn

        gen = app.generate_tab
        gen._add_turn(Turn("You", "ROMEO:"))
        gen._add_turn(Turn(f"Model · {FAKE_RUN}", "\nBut soft, what light through yonder window breaks?", model=True))
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_runs_tab(app: GptuiApp, snap_compare) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=show("runs"))
