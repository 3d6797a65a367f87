"""The Train tab's processes setting: checked as typed; above 1, Start launches torchrun through the command line
and the tab follows the run through its folder (plot, numbers, log); Stop and quitting stop every rank and
save; the Runs tab shows how many processes trained a run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.widgets import DataTable, Input, RichLog, Static

from gptui.core.runs import RunStore
from gptui.core.workspace import Workspace
from gptui.tui.app import make_app
from gptui.tui.widgets.loss_plot import LossPlot
from gptui.tui.widgets.modals import ConfirmModal
from tests.functional.conftest import TINY, started, wait_for


async def set_processes(pilot, value: str) -> None:
    field = pilot.app.train_tab.query_one("#train-procs", Input)
    field.value = value
    await pilot.pause()


def test_the_processes_setting_is_checked_and_counts_the_global_batch(home: Path) -> None:
    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            app.model_tab.set_values(TINY)
            await pilot.press("f3")
            tab = app.train_tab
            assert tab.processes == 1 and tab.blocked_reason() is None
            for bad in ("0", "", "257", "-3"):
                await set_processes(pilot, bad)
                assert tab.processes is None
                assert "processes must be a whole number from 1 to 256" in tab.blocked_reason()
                await pilot.press("ctrl+t")
                await pilot.pause()
                assert not tab.running and tab.run_id is None, f"{bad!r} must not start a run"
            assert not (home / "models").exists() or not any((home / "models").iterdir())

            await set_processes(pilot, "2")
            assert tab.processes == 2 and tab.blocked_reason() is None
            summary = str(tab.query_one("#train-summary", Static).render())
            assert "256 tokens/step" in summary  # batch 4 x block 32 x 2 processes
            estimates = str(app.model_tab.query_one("#model-estimates", Static).render())
            assert "tokens/step 256 (2 processes)" in estimates

            # what only the processes can refuse (MPS: not on this machine, and never for several processes)
            # comes back as one notice
            app.model_tab.set_values({"device": "mps"})
            await pilot.pause()
            failures: list[str] = []
            app.notify = lambda message, **kw: failures.append(str(message))  # type: ignore[method-assign]
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: not tab.running and bool(failures), "the launcher's refusal")
            assert len(failures) == 1 and "MPS" in failures[0], failures
            assert tab.stats["status"] == f"failed: {failures[0]}"
        assert not (home / "models").exists() or not any((home / "models").iterdir()), "nothing half-written"

    asyncio.run(go())


def test_two_processes_started_from_the_tui_train_to_the_end(home: Path) -> None:
    async def go() -> str:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            app.model_tab.set_values({**TINY, "sample_interval": 15})
            await pilot.press("f3")
            await set_processes(pilot, "2")
            await pilot.press("ctrl+t")
            tab = app.train_tab
            assert tab.running and tab.processes_running
            plot = tab.query_one("#train-plot", LossPlot)
            await wait_for(pilot, lambda: not tab.running, "the two processes to finish", tries=1200)
            assert tab.stats["status"] == "completed: reached max_iters", tab.stats
            assert "2 processes" in tab.stats["device"]
            assert plot.point_count("val") == 3 and plot.point_count("train") >= 1
            assert tab.stats["val"] != "—" and "tok/s" in tab.stats["speed"]
            log = "\n".join(line.text for line in tab.query_one("#train-log", RichLog).lines)
            assert "distributed: 2 processes (gloo)" in log and "finished: completed" in log
            assert "Sample at step" in str(tab.query_one("#train-sample-scroll").border_title)

            await pilot.press("f5")
            app.runs_tab.poll()
            await wait_for(pilot, lambda: tab.run_id in app.query_one("#runs-table", DataTable).rows,
                           "the run listed")
            assert app.runs_tab.info(tab.run_id).world_size == 2
            assert app.query_one("#runs-table", DataTable).get_cell(tab.run_id, "world_size").strip() == "2"
            return tab.run_id

    run_id = asyncio.run(go())
    run = RunStore(Workspace(home)).resolve(run_id)
    assert run.read_state()["status"] == "completed" and run.read_state()["step"] == TINY["max_iters"]
    assert run.read_config()["world_size"] == 2


def test_stop_then_quit_stop_every_process_and_save(home: Path) -> None:
    async def go() -> str:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            app.model_tab.set_values({**TINY, "max_iters": 100_000, "sample_interval": 0})
            await pilot.press("f3")
            await set_processes(pilot, "2")
            tab = app.train_tab
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: tab.run_id is not None and tab.stats.get("loss", "—") != "—",
                           "the processes to train", tries=1200)
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: not tab.running, "the processes to stop and save", tries=1200)
            run_id = tab.run_id
            assert tab.stats["status"] == "stopped: stopped by user"
            assert tab.resume_run == run_id
            state = RunStore(Workspace(home)).resolve(run_id).read_state()
            assert state["status"] == "stopped"

            await pilot.press("ctrl+r")  # resume on two processes, then quit while it trains
            await wait_for(pilot, lambda: tab.stats.get("status") == "training", "the resumed run to train",
                           tries=1200)
            await pilot.press("ctrl+q")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmModal)
            assert "several processes" in str(app.screen.query_one(".dialog-text", Static).render())
            await pilot.click("#yes")
            await wait_for(pilot, lambda: not app.is_running, "the app to exit", tries=1200)
            return run_id

    run_id = asyncio.run(go())
    run = RunStore(Workspace(home)).resolve(run_id)
    assert run.read_state()["status"] == "stopped"
    assert run.file("checkpoint.pt").is_file()
    assert "resuming run" in run.read_log()
