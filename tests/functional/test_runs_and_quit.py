"""The Runs tab's actions over prebuilt run folders, a run appearing from elsewhere, and quitting mid-training."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from textual.widgets import DataTable, Input, TabbedContent

from gptui.core.runs import RunStore
from gptui.core.workspace import Workspace
from gptui.tui.app import make_app
from gptui.tui.tabs.runs import COLUMNS
from gptui.tui.widgets.loss_plot import LossPlot
from gptui.tui.widgets.modals import ConfirmModal, TextPromptModal
from tests.functional.conftest import FAKE_RUN, TINY, started, wait_for, write_fake_run


def test_runs_mark_overlay_sort_rename_delete(home: Path) -> None:
    write_fake_run(home)
    write_fake_run(home, "20240105-000000-small-other", seed=3, created="2024-01-05T00:00:00")

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.press("f5")
            runs = app.runs_tab
            table = app.query_one("#runs-table", DataTable)
            await wait_for(pilot, lambda: table.row_count == 2, "two runs listed")
            # newest first, and the Generate tab picked the newest too
            assert table.coordinate_to_cell_key((0, 0)).row_key.value == "20240105-000000-small-other"
            assert app.generate_tab.run_id == "20240105-000000-small-other"
            plot = app.query_one("#runs-plot", LossPlot)
            await wait_for(pilot, lambda: plot.point_count("val") == 4, "the run's curves")

            # mark both: their validation curves are overlaid
            table.focus()
            await pilot.press("space", "down", "space")
            await wait_for(pilot, lambda: set(plot.series) == {FAKE_RUN[-24:], "20240105-000000-small-other"[-24:]},
                           "the overlay of two runs")
            assert "marked" in plot.title

            # "s" cycles the sort column; by val loss (ascending) the better run, FAKE_RUN, comes first
            for _ in range(12):
                if runs.sort_column == "best_val_loss":
                    break
                await pilot.press("s")
            assert runs.sort_column == "best_val_loss" and not runs.sort_reverse
            assert table.coordinate_to_cell_key((0, 0)).row_key.value == FAKE_RUN
            assert "▲" in str(table.columns["best_val_loss"].label)

            # rename through the modal
            table.move_cursor(row=0)
            await pilot.press("n")
            assert isinstance(app.screen, TextPromptModal)
            app.screen.query_one(Input).value = "my best model"
            await pilot.press("enter")
            await wait_for(pilot, lambda: "my-best-model" in table.rows, "the renamed run")
            assert (home / "models" / "my-best-model" / "config.json").is_file()

            # delete asks first; Cancel keeps it, Delete removes it
            table.move_cursor(row=table.get_row_index("my-best-model"))
            await pilot.press("d")
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("escape")
            assert (home / "models" / "my-best-model").is_dir()
            await pilot.press("d")
            await pilot.click("#yes")
            await wait_for(pilot, lambda: "my-best-model" not in table.rows, "the deleted run gone")
            assert not (home / "models" / "my-best-model").exists()

            # a completed run cannot be resumed: a notice, not a crash
            await pilot.press("r")
            await pilot.pause()
            assert any("Cannot resume" in n.message for n in app._notifications)

    asyncio.run(go())


def test_a_run_started_elsewhere_shows_up_and_is_watched(home: Path) -> None:
    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.press("f5")
            table = app.query_one("#runs-table", DataTable)
            await app.workers.wait_for_complete()
            assert table.row_count == 0
            run = write_fake_run(home, "20240106-000000-cli")
            state = json.loads((run / "state.json").read_text())
            import os
            import time

            state.update(status="running", step=100, pid=os.getpid(), heartbeat=time.time())
            (run / "state.json").write_text(json.dumps(state))
            app.runs_tab.poll()  # what the set_interval timer does every few seconds
            await wait_for(pilot, lambda: "20240106-000000-cli" in table.rows, "the CLI run listed")
            assert app.runs_tab.info("20240106-000000-cli").status == "running"
            state["step"] = 150
            (run / "state.json").write_text(json.dumps(state))
            app.runs_tab.poll()
            await wait_for(pilot, lambda: app.runs_tab.info("20240106-000000-cli").steps == 150, "progress")
            assert table.get_cell("20240106-000000-cli", "steps").strip() == "150"

    asyncio.run(go())


def test_quitting_while_training_asks_then_stops_and_saves(home: Path) -> None:
    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            app.model_tab.set_values({**TINY, "max_iters": 100_000})
            await pilot.press("ctrl+t")
            tab = app.train_tab
            await wait_for(pilot, lambda: tab.run_id is not None and tab.stats.get("loss", "—") != "—",
                           "training to run")
            await pilot.press("ctrl+q")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("escape")  # changed my mind: training goes on
            await pilot.pause()
            assert tab.running
            await pilot.press("ctrl+q")
            await pilot.pause()
            await pilot.click("#yes")
            await wait_for(pilot, lambda: not app.is_running, "the app to exit", tries=900)
            return tab.run_id

    run_id = asyncio.run(go())
    run = RunStore(Workspace(home)).resolve(run_id)
    assert run.read_state()["status"] == "stopped"
    assert run.file("checkpoint.pt").is_file()


def test_tab_keys_switch_tabs(home: Path) -> None:
    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await started(pilot)
            tabs = app.query_one("#tabs", TabbedContent)
            for key, name in zip(("f2", "f3", "f4", "f5", "f1"), ("model", "train", "generate", "runs", "corpus"),
                                 strict=True):
                await pilot.press(key)
                assert tabs.active == name

    asyncio.run(go())


def test_a_full_disk_while_training_is_reported_and_the_app_keeps_running(home: Path, monkeypatch) -> None:
    import errno

    from gptui.core import fsio, runs

    saves: list[Path] = []

    def full_after_first_checkpoint(path, write):
        if path.name == "checkpoint.pt":
            saves.append(path)
            if len(saves) > 1:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        fsio.atomic_write(path, write)

    monkeypatch.setattr(runs, "atomic_write", full_after_first_checkpoint)  # Run.write_file's writer

    async def go() -> str:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            app.model_tab.set_values(TINY)
            await pilot.press("ctrl+t")
            tab = app.train_tab
            await wait_for(pilot, lambda: any((n.title or "") == "Training failed" for n in app._notifications),
                           "the failure to be reported", tries=900)
            # the worker posts the failure just before it ends: the tab stops running a moment later
            await wait_for(pilot, lambda: not tab.running, "the training worker to end", tries=100)
            assert any("No space left on device" in n.message for n in app._notifications)
            await pilot.press("f5")  # the app still answers
            await pilot.pause()
            assert app.is_running
            return tab.run_id

    run_id = asyncio.run(go())
    run = RunStore(Workspace(home)).resolve(run_id)
    assert run.read_state()["status"] == "failed"
    assert torch_load_step(run.file("checkpoint.pt")) == 10  # the last good checkpoint is intact


def torch_load_step(path: Path) -> int:
    import torch

    return torch.load(path, weights_only=True)["step"]


def test_stop_before_the_first_evaluation_keeps_weights_the_generate_tab_offers(home: Path) -> None:
    async def go() -> str:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            app.model_tab.set_values({**TINY, "max_iters": 100_000, "eval_interval": 50_000, "sample_interval": 0})
            await pilot.press("ctrl+t")
            tab = app.train_tab
            await wait_for(pilot, lambda: tab.run_id is not None and tab.stats.get("loss", "—") != "—",
                           "training to take steps")
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: not tab.running, "the trainer to stop", tries=900)
            assert tab.stats["status"].startswith("stopped")
            assert tab.stats.get("val", "—") != "—", "the stop evaluated the model"
            await wait_for(pilot, lambda: tab.run_id in app.generate_tab.runs, "the Generate tab to offer the run")
            await pilot.press("f4")
            await pilot.pause()
            assert app.generate_tab.run_id == tab.run_id
            return tab.run_id

    run_id = asyncio.run(go())
    run = RunStore(Workspace(home)).resolve(run_id)
    state = run.read_state()
    assert state["status"] == "stopped" and 0 < state["step"] < 50_000 and state["best_val_loss"] is not None
    assert run.file("model.safetensors").is_file()


def test_the_runs_table_shows_status_and_date_at_80_columns(home: Path) -> None:
    """A dozen runs with long ids (a vertical scrollbar shows) still fit 80 columns without a sideways scroll;
    the shorter id leaves out the date-time stamp the date column shows, and the detail names the whole id."""
    long_id = "20240105-000000-tinyshakespeare-10.8M-2"
    write_fake_run(home, long_id, steps=5000, created="2024-01-05T00:00:00")
    interrupted = write_fake_run(home, "20240104-000000-interrupted-run", created="2024-01-04T00:00:00")
    state = json.loads((interrupted / "state.json").read_text())
    (interrupted / "state.json").write_text(json.dumps({**state, "status": "running", "pid": None}))
    for day in range(10, 22):
        write_fake_run(home, f"202402{day}-101010-some-corpus-name-{day}.0M", created=f"2024-02-{day}T10:10:10")

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await started(pilot)
            await pilot.press("f5")
            table = app.query_one("#runs-table", DataTable)
            await wait_for(pilot, lambda: table.row_count == 14, "every run listed")
            await pilot.pause()
            keys = [c.key.value for c in table.ordered_columns]
            assert "status" in keys and "created" in keys
            assert table.show_vertical_scrollbar, "enough runs for a vertical scrollbar"
            visible = table.scrollable_content_region.width
            widths = [c.get_render_width(table) for c in table.ordered_columns]
            assert sum(widths[: keys.index("created") + 1]) <= visible, (widths, visible)
            assert table.max_scroll_x == 0 and not table.show_horizontal_scrollbar
            assert table.get_cell("20240104-000000-interrupted-run", "status").plain.strip() == "interrupted"
            assert table.get_cell(long_id, "created").strip() == "01-05 00:00"
            shown = table.get_cell(long_id, "id").plain.strip()
            assert shown.startswith("tinyshakespeare") and not shown.startswith("2024")

            table.move_cursor(row=table.get_row_index(long_id))
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert long_id in str(app.query_one("#runs-settings").content), "the detail names the whole id"

            # wider again: the whole table, ids with their stamp
            await pilot.resize_terminal(120, 40)
            await pilot.pause()
            assert [c.key.value for c in table.ordered_columns] == [k for k, _ in COLUMNS]
            assert table.get_cell(long_id, "id").plain.strip().startswith("20240105-000000-")

    asyncio.run(go())


def test_a_model_tab_announcing_its_values_while_the_app_closes_does_not_crash_it(home: Path) -> None:
    """The lazily mounted Model tab's first values can arrive when the tabs are already gone (an app closed right
    after its first frame, as bench/run.py's tui_first_frame does): nothing is left to mirror them into."""
    from gptui.tui.tabs.corpus import CorpusTab

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await app.query_one(CorpusTab).remove()
            app.model_tab.revalidate()  # posts ConfigChanged, as its mount does
            await pilot.pause()

    asyncio.run(go())


def test_loss_plot_labels_steps_as_whole_numbers() -> None:
    import re

    from textual.app import App

    from gptui.tui.widgets.loss_plot import step_ticks

    assert step_ticks(2, 120) == [20, 40, 60, 80, 100, 120]
    assert step_ticks(0, 5000) == [0, 1000, 2000, 3000, 4000, 5000]
    assert step_ticks(0.5, 7.2) == [2, 4, 6] and step_ticks(3, 3) == [3]
    assert all(len(step_ticks(0, n)) <= 6 for n in range(1, 3000, 7))

    class One(App):
        def compose(self):
            yield LossPlot(id="plot")

    async def go() -> None:
        app = One()
        async with app.run_test(size=(80, 20)) as pilot:
            plot = app.query_one(LossPlot)
            plot.set_series("val", [2, 40, 80, 120], [5.0, 4.8, 4.6, 4.5])
            plot.flush()
            await pilot.pause()
            plot.plt.plotsize(78, 18)
            lines = re.sub(r"\x1b\[[0-9;]*m", "", plot.plt.build()).splitlines()
            axis = lines[lines.index(next(line for line in lines if line.lstrip().startswith("└"))) + 1]
            assert axis.split() == ["20", "40", "60", "80", "100", "120"]

    asyncio.run(go())
